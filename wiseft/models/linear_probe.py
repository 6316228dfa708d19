"""The LightningModule of ``finetune=linear`` when features are precomputed: the head trains on features."""

from __future__ import annotations

import torch

from wiseft.models.module import WiSEFTModule


class LinearProbeModule(WiSEFTModule):
    """:class:`WiSEFTModule` whose batches are ``(features, label)`` from the frozen encoder.

    The full classifier (encoder included) stays inside, so checkpoints and the WiSE-FT interpolation see the
    same weights as end-to-end fine-tuning; only the head receives gradients.
    """

    def example_input(self) -> torch.Tensor:
        """A batch of one zero feature vector (the input of the head)."""
        return torch.zeros(1, self.model.head.in_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.head(features)
