"""WiSE-FT over both towers when the head is derived from the text tower (FLYP).

``theta_alpha = (1 - alpha) * theta_zeroshot + alpha * theta_flyp`` applies to the image and the text tower; the
head of ``theta_alpha`` is then not the interpolation of the two heads but the zero-shot head of the interpolated
text tower (the head is a nonlinear function of the tower: normalised, template-averaged embeddings). The sweep
engine writes each alpha's weights into the evaluated module in place through a path's ``mix``; :class:`HeadFromText`
is that ``mix`` for a :class:`~wiseft.models.text_head.TextHeadClassifier`, and :func:`weight_mix` picks the right
one for any classifier.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from wiseft.methods.interpolate import StateDict, interpolate_into
from wiseft.models.text_head import TextHeadClassifier

Mix = Callable[[torch.nn.Module, StateDict, StateDict, float], None]


class HeadFromText:
    """``mix(module, theta_0, theta_1, alpha)``: interpolate every tensor in place, then rebuild the head from the
    interpolated text tower.

    The head of each alpha is computed once (a pass of every class x template prompt through the text tower) and
    remembered, so a sweep that revisits an alpha for every block of decoded images pays for the text tower once
    per alpha. One instance belongs to one pair of endpoints: heads are remembered by alpha alone.
    """

    def __init__(self) -> None:
        self.heads: dict[float, dict[str, torch.Tensor]] = {}

    @torch.no_grad()
    def __call__(self, module: torch.nn.Module, theta_0: StateDict, theta_1: StateDict, alpha: float) -> None:
        if not isinstance(module, TextHeadClassifier):
            raise TypeError(f"HeadFromText mixes a TextHeadClassifier, got {type(module).__name__}")
        interpolate_into(module, theta_0, theta_1, alpha)
        alpha = float(alpha)
        if alpha not in self.heads:
            module.rebuild_head()
            self.heads[alpha] = {k: v.detach().clone() for k, v in module.head.state_dict().items()}
        else:
            for key, value in module.head.state_dict().items():
                value.copy_(self.heads[alpha][key])


def weight_mix(model: torch.nn.Module) -> Mix:
    """The WiSE-FT ``mix`` of a classifier: plain in-place interpolation, or :class:`HeadFromText` when the model
    derives its head from a text tower. Make a new one per pair of endpoints."""
    return HeadFromText() if isinstance(model, TextHeadClassifier) else interpolate_into
