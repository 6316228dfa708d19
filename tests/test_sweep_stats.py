"""Additive evaluation statistics: top-1, NLL and ECE equal the direct computations, whatever the sharding."""

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from wiseft.sweep.stats import DEFAULT_BINS, bins_of, ece, logit_stats, nll, top1, width


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(500, 7, generator=gen)
    labels = torch.randint(0, 7, (500,), generator=gen)
    return logits, labels


def test_ece_equals_torchmetrics(batch):
    logits, labels = batch
    for bins in (1, 5, DEFAULT_BINS, 40):
        expected = multiclass_calibration_error(logits, labels, num_classes=7, n_bins=bins, norm="l1")
        # torchmetrics sums in float32: agreement to its rounding (1e-6 of a fraction, 1e-4 of a percent).
        assert float(ece(logit_stats(logits, labels, bins))) == pytest.approx(100 * float(expected), abs=1e-4)


def test_ece_counts_a_confidence_of_exactly_one_in_a_bin_of_its_own():
    logits = torch.tensor([[100.0, -100.0], [0.0, 0.0]])  # confidences 1.0 (right) and 0.5 (wrong)
    labels = torch.tensor([0, 1])
    stats = logit_stats(logits, labels, bins=2)
    expected = multiclass_calibration_error(logits, labels, num_classes=2, n_bins=2, norm="l1")
    assert float(ece(stats)) == pytest.approx(100 * float(expected), abs=1e-4)
    assert float(ece(stats)) == pytest.approx(25.0)


def test_nll_and_top1_equal_the_direct_computation(batch):
    logits, labels = batch
    stats = logit_stats(logits, labels)
    assert float(nll(stats)) == pytest.approx(float(F.cross_entropy(logits, labels)), abs=1e-6)
    assert float(top1(stats)) == 100 * float((logits.argmax(-1) == labels).double().mean())


def test_shards_add_up_to_the_whole_exactly(batch):
    logits, labels = batch
    whole = logit_stats(logits, labels)
    parts = sum(logit_stats(logits[i::3], labels[i::3]) for i in range(3))
    assert torch.equal(parts, whole)  # integers: the order of the sum cannot matter


def test_top1_only_has_no_calibration(batch):
    logits, labels = batch
    stats = logit_stats(logits, labels, bins=0)
    assert stats.shape == (width(0),) == (2,) and bins_of(stats) == 0
    assert torch.isnan(ece(stats)) and torch.isnan(nll(stats))
    assert bins_of(logit_stats(logits, labels, 15)) == 15
