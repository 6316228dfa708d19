import pytest
import torch

from wiseft.data.projection import ClassProjection, project_logits
from wiseft.data.registry import projection_by_name
from wiseft.errors import ConfigError


def test_identity_returns_logits():
    logits = torch.randn(2, 5)
    assert project_logits(logits, None) is logits


def test_subset_keeps_selected_columns_in_order():
    logits = torch.arange(10.0).reshape(2, 5)
    proj = ClassProjection.subset([4, 1], 5)
    assert torch.equal(project_logits(logits, proj), torch.tensor([[4.0, 1.0], [9.0, 6.0]]))


def test_subset_prediction_ignores_masked_classes():
    # Reference class 0 has the top logit but is not in the subset: the prediction is the best kept class.
    logits = torch.tensor([[9.0, 1.0, 3.0, 2.0]])
    proj = ClassProjection.subset([1, 2, 3], 4)
    assert project_logits(logits, proj).argmax(-1).item() == 1  # reference class 2 -> target 1


def test_many_to_one_max_pools_each_group():
    logits = torch.tensor([[1.0, 5.0, 2.0, 7.0, 0.0]])
    proj = ClassProjection.many_to_one([[0, 1], [2, 3, 4]], 5)
    assert torch.equal(project_logits(logits, proj), torch.tensor([[5.0, 7.0]]))
    logits = torch.tensor([[1.0, 8.0, 2.0, 7.0, 0.0]])
    assert project_logits(logits, proj).argmax(-1).item() == 0


def test_projection_validates_indices():
    with pytest.raises(ValueError, match="outside"):
        ClassProjection.subset([5], 5)
    with pytest.raises(ValueError, match="maps to no reference class"):
        ClassProjection.many_to_one([[0], []], 3)


def test_projection_by_name():
    ref = ["cat", "dog", "fox"]
    assert projection_by_name(ref, ref) is None
    assert projection_by_name(["fox", "cat"], ref).groups == ((2,), (0,))
    proj = projection_by_name(["canine", "feline"], ref, {"canine": ["dog", "fox"], "feline": ["cat"]})
    assert proj.groups == ((1, 2), (0,))
    with pytest.raises(ConfigError, match="'wolf'"):
        projection_by_name(["wolf"], ref)
