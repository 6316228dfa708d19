import pytest
import torch

from wiseft.errors import CheckpointError
from wiseft.methods.interpolate import interpolate, interpolate_into


def _pair():
    torch.manual_seed(0)
    a = {"w": torch.randn(4, 3), "b": torch.randn(3), "steps": torch.tensor(3)}
    b = {"w": torch.randn(4, 3), "b": torch.randn(3), "steps": torch.tensor(7)}
    return a, b


def test_endpoints_are_exact():
    a, b = _pair()
    assert all(torch.equal(interpolate(a, b, 0.0)[k], a[k]) for k in ("w", "b"))
    assert all(torch.equal(interpolate(a, b, 1.0)[k], b[k]) for k in ("w", "b"))


def test_midpoint_is_linear_and_non_float_comes_from_finetuned():
    a, b = _pair()
    mid = interpolate(a, b, 0.5)
    torch.testing.assert_close(mid["w"], (a["w"] + b["w"]) / 2)
    quarter = interpolate(a, b, 0.25)
    torch.testing.assert_close(quarter["b"], 0.75 * a["b"] + 0.25 * b["b"])
    assert mid["steps"].item() == 7


def test_inputs_are_not_modified():
    a, b = _pair()
    a_copy = {k: v.clone() for k, v in a.items()}
    interpolate(a, b, 0.3)
    assert all(torch.equal(a[k], a_copy[k]) for k in a)


def test_mismatched_keys_and_shapes_name_the_key():
    a, b = _pair()
    with pytest.raises(CheckpointError, match="key 'extra' is in the fine-tuned weights"):
        interpolate(a, {**b, "extra": torch.zeros(1)}, 0.5)
    with pytest.raises(CheckpointError, match=r"key 'w' has shape \(4, 3\) in the zero-shot weights but \(3, 4\)"):
        interpolate(a, {**b, "w": torch.zeros(3, 4)}, 0.5)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_outside_unit_interval(alpha):
    a, b = _pair()
    with pytest.raises(ValueError, match="alpha must lie in"):
        interpolate(a, b, alpha)


def test_interpolate_into_module_matches_pure_function():
    torch.manual_seed(1)
    m0, m1, target = torch.nn.Linear(5, 2), torch.nn.Linear(5, 2), torch.nn.Linear(5, 2)
    for alpha in (0.0, 0.3, 1.0):
        interpolate_into(target, m0.state_dict(), m1.state_dict(), alpha)
        expected = interpolate(m0.state_dict(), m1.state_dict(), alpha)
        for k, v in target.state_dict().items():
            assert torch.equal(v, expected[k]), (alpha, k)


def test_interpolate_into_rejects_other_architecture_before_writing():
    m0, m1, other = torch.nn.Linear(5, 2), torch.nn.Linear(5, 2), torch.nn.Linear(5, 3)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError, match="key 'weight' has shape"):
        interpolate_into(other, m0.state_dict(), m1.state_dict(), 0.5)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
