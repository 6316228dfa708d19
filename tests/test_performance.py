"""Speed/memory switches: activation checkpointing, torch.compile, and that the sweep still sees the weights."""

import pytest
import torch

from tests.conftest import compose_cfg
from wiseft.config.schema import to_settings
from wiseft.errors import ConfigError
from wiseft.methods.interpolate import interpolate_into
from wiseft.models.factory import build_clip
from wiseft.models.performance import apply_performance_options


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    return build_clip("tiny-vit").model.visual


def test_switches_compose_from_the_command_line():
    cfg = compose_cfg(["model=tiny_random", "data=imagefolder", "~experiment", "model.grad_checkpointing=true",
                       "model.compile=true", "model.compile_mode=max-autotune", "trainer.precision=bf16-mixed",
                       "trainer.accumulate_grad_batches=4"])
    model = to_settings(cfg).model
    assert (model.grad_checkpointing, model.compile, model.compile_mode) == (True, True, "max-autotune")
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accumulate_grad_batches == 4


def test_grad_checkpointing_recomputes_blocks_with_the_same_gradients(encoder):
    x = torch.randn(2, 3, 32, 32)
    encoder.train()
    encoder(x).square().sum().backward()
    reference = [p.grad.clone() for p in encoder.parameters()]
    encoder.zero_grad()
    apply_performance_options(encoder, grad_checkpointing=True)
    assert encoder.transformer.grad_checkpointing
    encoder(x).square().sum().backward()
    for p, g in zip(encoder.parameters(), reference, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_compile_keeps_module_and_state_dict_keys(encoder):
    keys = list(encoder.state_dict())
    apply_performance_options(encoder, compile=True)
    assert encoder._compiled_call_impl is not None  # nn.Module.compile: calls now go through torch.compile
    assert list(encoder.state_dict()) == keys  # checkpoints and interpolation see the same names
    theta = {k: v + 1 for k, v in encoder.state_dict().items()}
    interpolate_into(encoder, encoder.state_dict(), theta, 1.0)
    assert all(torch.equal(v, theta[k]) for k, v in encoder.state_dict().items())


def test_grad_checkpointing_on_an_encoder_without_it_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"model\.grad_checkpointing"):
        apply_performance_options(torch.nn.Linear(2, 2), grad_checkpointing=True)
