"""Fisher-weighted merging (Matena and Raffel, NeurIPS 2022), as the WiSE-FT paper's appendix applies it.

Each model's diagonal Fisher information ``F`` weighs its parameters in the merge, elementwise:

    theta_alpha = ((1 - alpha) F_0 theta_0 + alpha F_1 theta_1) / ((1 - alpha) F_0 + alpha F_1)

with both Fishers floored at ``floor``. With equal Fishers this is WiSE-FT's interpolation; alpha = 0 and 1 give
the endpoints exactly. Written as a lerp with an elementwise weight, ``lerp(theta_0, theta_1, w)`` with
``w = alpha F_1 / ((1 - alpha) F_0 + alpha F_1)``, it is evaluated in place like
:func:`~wiseft.methods.interpolate.interpolate_into`.

Facts taken from the WiSE-FT reference code (``mlfoundations/wise-ft``: ``src/models/fisher.py``,
``src/wise_ft.py``, ``src/args.py``): the Fisher is the *sampled* one, one label per example drawn from the
model's own predictive distribution (``torch.multinomial(softmax(logits))``), not the empirical Fisher of the true
labels; examples go one at a time (batch size 1) through the evaluation preprocessing of the reference training
set; the Fisher is the mean over examples of the squared gradient of the cross-entropy; each model (zero-shot and
fine-tuned) gets its own Fisher; ``--fisher_floor`` defaults to 1e-8 (``torch.maximum(F, floor)``); a parameter
without a Fisher on both sides is interpolated plainly. Matena and Raffel's own code computes the expectation over
all labels exactly and floors at 1e-6; the WiSE-FT code is followed here. Differences: the estimate is bounded to
``max_examples`` examples (the reference goes through the whole training set), the per-example gradients come from
``torch.func`` (vmapped, not a batch-size-1 loop; the same numbers), and the model is in evaluation mode (the
reference leaves it in training mode, which changes nothing for CLIP's ViTs, which have no dropout, and keeps
any dropout or batch statistics out of the estimate).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.func import functional_call, grad, vmap

from wiseft.errors import CheckpointError
from wiseft.io.atomic import atomic_write
from wiseft.methods.interpolate import StateDict, check_alpha, check_compatible

#: WiSE-FT's ``--fisher_floor`` default.
FLOOR = 1e-8
#: ``sampled``: labels drawn from the model's predictions (WiSE-FT's); ``true``: the data's labels (empirical).
LABELS = ("sampled", "true")
FORMAT = "wiseft-fisher-v1"


def _floored(fisher: torch.Tensor | None, like: torch.Tensor, floor: float) -> torch.Tensor:
    if fisher is None:
        return torch.ones_like(like, dtype=torch.float32)
    return fisher.to(like.device, torch.float32).clamp(min=floor)


def _check_fishers(theta: StateDict, fishers: Sequence[Mapping[str, torch.Tensor]]) -> None:
    for i, fisher in enumerate(fishers):
        for key, value in fisher.items():
            if key not in theta:
                raise CheckpointError(f"Fisher {i} has key '{key}', which the weights do not have")
            if value.shape != theta[key].shape:
                raise CheckpointError(f"Fisher {i}: key '{key}' has shape {tuple(value.shape)}, the weights "
                                      f"{tuple(theta[key].shape)}")
    for key in theta:
        present = [key in f for f in fishers]
        if any(present) and not all(present):
            # As the reference asserts: a Fisher on one side only would weigh that side by the floor alone.
            raise CheckpointError(f"key '{key}' has a Fisher for some models but not for others")


def fisher_merge(
    thetas: Sequence[StateDict],
    fishers: Sequence[Mapping[str, torch.Tensor]],
    coefficients: Sequence[float] | None = None,
    floor: float = FLOOR,
) -> dict[str, torch.Tensor]:
    """Fisher-weighted average of several models: ``sum_i c_i F_i theta_i / sum_i c_i F_i``, elementwise.

    Args:
        thetas: State dicts with the same keys and shapes.
        fishers: One diagonal Fisher per model (key -> tensor of the parameter's shape); a key missing from every
            Fisher is averaged with weights ``c_i`` alone.
        coefficients: ``c_i`` (default: uniform).
        floor: Lower bound on every Fisher value.

    Returns:
        A new state dict; integer tensors are the first model's.
    """
    if not thetas or len(fishers) != len(thetas):
        raise ValueError(f"need one Fisher per model: {len(thetas)} models, {len(fishers)} Fishers")
    coefficients = [1.0 / len(thetas)] * len(thetas) if coefficients is None else [float(c) for c in coefficients]
    for i in range(1, len(thetas)):
        check_compatible(thetas[0], thetas[i], names=("model 0", f"model {i}"))
    _check_fishers(thetas[0], fishers)
    out: dict[str, torch.Tensor] = {}
    for key, t0 in thetas[0].items():
        if not t0.is_floating_point():
            out[key] = t0.clone()
            continue
        weights = [c * _floored(f.get(key), t0, floor) for c, f in zip(coefficients, fishers, strict=True)]
        numerator = sum(w * theta[key].float() for w, theta in zip(weights, thetas, strict=True))
        out[key] = (numerator / sum(weights)).to(t0.dtype)
    return out


def fisher_interpolate(
    theta_0: StateDict,
    theta_1: StateDict,
    fisher_0: Mapping[str, torch.Tensor],
    fisher_1: Mapping[str, torch.Tensor],
    alpha: float,
    floor: float = FLOOR,
) -> dict[str, torch.Tensor]:
    """The Fisher-weighted counterpart of :func:`~wiseft.methods.interpolate.interpolate`, as a new state dict."""
    check_alpha(alpha)
    check_compatible(theta_0, theta_1)
    _check_fishers(theta_0, (fisher_0, fisher_1))
    out: dict[str, torch.Tensor] = {}
    for key, t0 in theta_0.items():
        t1 = theta_1[key]
        if not t0.is_floating_point() or alpha == 1.0:
            out[key] = t1.clone()
        elif alpha == 0.0:
            out[key] = t0.clone()
        else:
            w = _lerp_weight(fisher_0.get(key), fisher_1.get(key), t0, alpha, floor)
            out[key] = torch.lerp(t0.float(), t1.float(), w).to(t0.dtype)
    return out


def _lerp_weight(f_0: torch.Tensor | None, f_1: torch.Tensor | None, like: torch.Tensor, alpha: float,
                 floor: float) -> torch.Tensor | float:
    """``alpha F_1 / ((1 - alpha) F_0 + alpha F_1)``: the elementwise lerp weight (``alpha`` without Fishers)."""
    if f_0 is None and f_1 is None:
        return alpha
    c_0 = (1.0 - alpha) * _floored(f_0, like, floor)
    c_1 = alpha * _floored(f_1, like, floor)
    return c_1 / (c_0 + c_1)


class FisherMix:
    """A sweep path's ``mix``: writes the Fisher-weighted interpolation into a module in place.

    The Fishers are floored and moved to the module's device once, on first use.
    """

    def __init__(self, fisher_0: Mapping[str, torch.Tensor], fisher_1: Mapping[str, torch.Tensor],
                 floor: float = FLOOR) -> None:
        """Args:
        fisher_0: The zero-shot model's diagonal Fisher.
        fisher_1: The fine-tuned model's.
        floor: Lower bound on every Fisher value.
        """
        self.fishers = (dict(fisher_0), dict(fisher_1))
        self.floor = floor
        self._device: torch.device | None = None

    @torch.no_grad()
    def __call__(self, module: torch.nn.Module, theta_0: StateDict, theta_1: StateDict, alpha: float) -> None:
        check_alpha(alpha)
        target = module.state_dict(keep_vars=True)
        check_compatible(theta_0, theta_1)
        check_compatible(theta_0, target, names=("zero-shot", "model's"))
        device = next(iter(target.values())).device
        if self._device != device:
            _check_fishers(theta_0, self.fishers)
            self.fishers = tuple({k: v.to(device, torch.float32).clamp(min=self.floor) for k, v in f.items()}
                                 for f in self.fishers)
            self._device = device
        f_0, f_1 = self.fishers
        alpha = float(alpha)
        for key, dst in target.items():
            dst, t0, t1 = dst.data, theta_0[key], theta_1[key]
            if not dst.is_floating_point() or alpha == 1.0:
                dst.copy_(t1)
            elif alpha == 0.0:
                dst.copy_(t0)
            elif key not in f_0:
                dst.copy_(torch.lerp(t0.to(dst.device, dst.dtype), t1.to(dst.device, dst.dtype), alpha))
            else:
                c_0, c_1 = (1.0 - alpha) * f_0[key], alpha * f_1[key]
                w = c_1 / (c_0 + c_1)
                dst.copy_(torch.lerp(t0.to(dst.device, torch.float32), t1.to(dst.device, torch.float32), w))


@torch.no_grad()
def _sample_labels(model: torch.nn.Module, state: dict[str, torch.Tensor], images: torch.Tensor,
                   uniforms: torch.Tensor) -> torch.Tensor:
    """One label per image drawn from the model's predictive distribution by inverting its CDF at ``uniforms``.

    Drawing from given uniforms (rather than a generator's stream) makes example ``i``'s label depend only on
    ``i``, so the estimate does not depend on how the examples are split over processes.
    """
    logits = functional_call(model, state, (images,))
    cdf = F.softmax(logits.double(), dim=-1).cumsum(dim=-1)
    labels = torch.searchsorted(cdf, uniforms.to(cdf)[:, None]).view(-1)
    return labels.clamp(max=logits.shape[-1] - 1)


def fisher_sums(
    model: torch.nn.Module,
    theta: StateDict,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    max_examples: int,
    *,
    labels: str = "sampled",
    seed: int = 0,
    first_index: int = 0,
    device: torch.device | str = "cpu",
    chunk: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[dict[str, torch.Tensor], int]:
    """Sum over examples of the squared per-example gradient of ``-log p(y | x)``, for the weights ``theta``.

    Args:
        model: Maps images to logits; only its structure is used (``theta`` is passed in functionally, so the
            module's own weights are never changed). Its trainable parameters are the ones estimated.
        theta: The weights to estimate the Fisher at (the module's state-dict keys).
        batches: ``(images, labels)`` batches; read until ``max_examples`` examples.
        max_examples: Bound on the examples used.
        labels: ``sampled`` (one label per example drawn from the model's predictions, as WiSE-FT) or ``true``.
        seed: Seeds the sampled labels: example ``i`` of the whole estimate draws its label from the ``i``-th
            number of ``torch.rand`` under ``manual_seed(seed)``.
        first_index: Index of the first example of ``batches`` in the whole estimate (a process's shard).
        device: Where to compute.
        chunk: Examples whose gradients are held at once (memory: ``chunk`` copies of the parameters).
        on_batch: Called with the number of examples of each batch done (progress reporting).

    Returns:
        ``(sums, count)``: float32 sums on the CPU by parameter name, and the number of examples summed.
    """
    if labels not in LABELS:
        raise ValueError(f"labels must be one of {LABELS}, got '{labels}'")
    device = torch.device(device)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    state = {k: (v.to(device, torch.float32) if v.is_floating_point() else v.to(device)) for k, v in theta.items()}
    params = {k: state[k] for k in trainable}
    rest = {k: v for k, v in state.items() if k not in params}
    uniforms = torch.rand(first_index + max_examples, generator=torch.Generator().manual_seed(seed),
                          dtype=torch.float64)[first_index:]

    def nll(p: dict[str, torch.Tensor], image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, {**p, **rest}, (image[None],))
        return F.cross_entropy(logits.float(), label[None])

    per_example = vmap(grad(nll), in_dims=(None, 0, 0))
    sums = {k: torch.zeros_like(v) for k, v in params.items()}
    count = 0
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            # torch.func has no batching rule for some attention kernels and loops over the examples instead:
            # what the reference's batch size of 1 does anyway, so the warning says nothing useful here.
            warnings.filterwarnings("ignore", message="There is a performance drop")
            for images, targets in batches:
                if count >= max_examples:
                    break
                images = images[: max_examples - count].to(device, torch.float32)
                targets = targets[: len(images)].to(device)
                if labels == "sampled":
                    targets = _sample_labels(model, state, images, uniforms[count:count + len(images)])
                for start in range(0, len(images), chunk):
                    grads = per_example(params, images[start:start + chunk], targets[start:start + chunk])
                    for k, g in grads.items():
                        sums[k] += g.square().sum(dim=0)
                count += len(images)
                if on_batch is not None:
                    on_batch(len(images))
    finally:
        model.train(was_training)
    return {k: v.cpu() for k, v in sums.items()}, count


def estimate_fisher(model: torch.nn.Module, theta: StateDict, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    max_examples: int, **kwargs: Any) -> dict[str, torch.Tensor]:
    """The diagonal Fisher of ``theta``: the mean of :func:`fisher_sums` over the examples read."""
    sums, count = fisher_sums(model, theta, batches, max_examples, **kwargs)
    if count == 0:
        raise ValueError("no example to estimate the Fisher on")
    return {k: v / count for k, v in sums.items()}


def save_fisher(fisher: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, Any]) -> None:
    """Write a Fisher as safetensors, atomically; ``metadata`` values are stored JSON-encoded."""
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in fisher.items()}
    meta = {"format": FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_fisher(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a Fisher written by :func:`save_fisher`.

    Raises:
        CheckpointError: Missing, unreadable, or not a Fisher (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Fisher file '{path}' does not exist")
    try:
        fisher = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"Fisher file '{path}' is not a readable safetensors file ({err})") from err
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a Fisher written by wiseft (format '{raw.get('format')}')")
    return fisher, {k: (v if k == "format" else json.loads(v)) for k, v in raw.items()}
