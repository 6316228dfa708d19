"""Speed and memory switches for the image encoder: activation checkpointing and ``torch.compile``.

Mixed precision and gradient accumulation are the Trainer's (``trainer.precision=bf16-mixed``,
``trainer.accumulate_grad_batches=K``); these two act on the model.
"""

from __future__ import annotations

import logging

import torch

from wiseft.errors import ConfigError

log = logging.getLogger(__name__)


def apply_performance_options(
    encoder: torch.nn.Module,
    grad_checkpointing: bool = False,
    compile: bool = False,
    compile_mode: str | None = None,
) -> None:
    """Switch on activation checkpointing and/or compilation of ``encoder``, in place.

    Activation checkpointing recomputes each transformer block's activations in the backward pass instead of
    storing them (open_clip's ``set_grad_checkpointing``): memory for large ViTs at ~30% more compute.
    Compilation uses ``nn.Module.compile``, which keeps the module and its state-dict keys, so checkpoints and
    the in-place WiSE-FT interpolation are unaffected (the weights stay inputs of the compiled graph).

    Raises:
        ConfigError: Activation checkpointing asked of an encoder that does not support it.
    """
    if grad_checkpointing:
        enable = getattr(encoder, "set_grad_checkpointing", None)
        if enable is None:
            raise ConfigError(f"model.grad_checkpointing: the image encoder ({type(encoder).__name__}) does not "
                              "support activation checkpointing")
        enable(True)
        log.info("activation checkpointing on for %s", type(encoder).__name__)
    if compile:
        encoder.compile(mode=compile_mode)
        log.info("image encoder compiled (mode=%s)", compile_mode)
