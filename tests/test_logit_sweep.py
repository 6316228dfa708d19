"""The LC sweep from two head evaluations equals evaluating every alpha directly."""

import pytest
import torch
import torch.nn.functional as F

from wiseft.data.projection import ClassProjection, project_logits
from wiseft.sweep.logits import candidates, logit_sweep_counts

GRID = [round(0.05 * i, 2) for i in range(21)]


def _direct(l0, l1, labels, grid, projection):
    """Every alpha's logits in full, projected, argmax: the definition."""
    out = torch.zeros(len(grid), 2, dtype=torch.long)
    for i, a in enumerate(grid):
        predicted = project_logits(torch.lerp(l0, l1, a), projection).argmax(dim=-1)
        out[i] = torch.tensor([int((predicted == labels).sum()), len(labels)])
    return out


def _logits(n=500, c=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    l0 = 3 * torch.randn(n, c, generator=g)
    l1 = l0 + 4 * torch.randn(n, c, generator=g)  # fine-tuning moves the logits a lot: many crossings
    return l0, l1, g


@pytest.mark.parametrize("kind", ["identity", "subset", "many_to_one"])
def test_counts_equal_direct_evaluation(kind):
    l0, l1, g = _logits()
    projection = {
        "identity": None,
        "subset": ClassProjection.subset([3, 7, 11, 20, 39], 40),
        "many_to_one": ClassProjection.many_to_one([[0, 1, 2], [5], [9, 30, 31, 32], [2, 17]], 40),
    }[kind]
    num_targets = 40 if projection is None else projection.num_classes
    labels = torch.randint(0, num_targets, (len(l0),), generator=g)
    # Make accuracy non-trivial: half the labels are what the fine-tuned head predicts.
    predicted_1 = project_logits(l1, projection).argmax(dim=-1)
    labels[::2] = predicted_1[::2]
    got = logit_sweep_counts(l0, l1, labels, GRID, projection)
    assert torch.equal(got, _direct(l0, l1, labels, GRID, projection))
    assert len(set(got[:, 0].tolist())) > 3  # accuracy really varies along the grid


def test_exact_ties_go_to_the_lowest_class_like_argmax():
    l0, l1, _ = _logits(n=200, c=10, seed=1)
    # Duplicate class rows (ImageNet has two "crane" classes): identical lines, tied at every alpha, and the
    # winners at alpha=0.
    l0[:, 2] = l0.max(dim=-1).values + 1.0
    l0[:, 4] = l0[:, 2]
    l1[:, 4] = l1[:, 2]
    labels = torch.full((200,), 4)
    labels[::3] = 2
    assert torch.equal(logit_sweep_counts(l0, l1, labels, GRID), _direct(l0, l1, labels, GRID, None))


def test_equals_interpolating_the_head_weights():
    """Logits are linear in the head's weights: the LC sweep is the weight-space sweep of the head."""
    g = torch.Generator().manual_seed(2)
    feats = F.normalize(torch.randn(300, 16, generator=g), dim=-1)
    w0, w1 = torch.randn(12, 16, generator=g), torch.randn(12, 16, generator=g)
    b0, b1 = torch.zeros(12), 0.3 * torch.randn(12, generator=g)
    labels = torch.randint(0, 12, (300,), generator=g)
    got = logit_sweep_counts(feats @ w0.T + b0, feats @ w1.T + b1, labels, GRID)
    for i, a in enumerate(GRID):
        logits = feats @ torch.lerp(w0, w1, a).T + torch.lerp(b0, b1, a)
        assert int(got[i, 0]) == int((logits.argmax(-1) == labels).sum()), a


def test_candidates_are_few_and_contain_every_winner():
    l0, l1, _ = _logits(n=400, c=200, seed=3)
    rows, cols = candidates(l0, l1)
    per_row = torch.bincount(rows, minlength=len(l0))
    assert per_row.min() >= 1 and per_row.float().mean() < 10  # vs 200 classes evaluated per alpha directly
    chosen = torch.zeros_like(l0, dtype=torch.bool)
    chosen[rows, cols] = True
    everywhere = torch.arange(len(l0))
    for a in torch.linspace(0, 1, 101).tolist():
        assert chosen[everywhere, torch.lerp(l0, l1, a).argmax(-1)].all(), a


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="do not match"):
        logit_sweep_counts(torch.zeros(3, 4), torch.zeros(3, 5), torch.zeros(3, dtype=torch.long), [0.0])
