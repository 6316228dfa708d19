"""The sweep decodes each image once and gives the same numbers as the per-alpha reference loop."""

import pytest
import torch

import wiseft.sweep.engine as engine
from wiseft.data.datasets import LabeledImageDataset
from wiseft.methods.interpolate import interpolate
from wiseft.sweep.engine import run_sweep
from wiseft.sweep.evaluate import correct_counts
from wiseft.sweep.summary import Columns, rows_from_counts


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tests.sweep_helpers import tiny_eval_setup

    return tiny_eval_setup(tmp_path_factory.mktemp("sweep"), eval_batch_size=4)


@pytest.fixture
def decode_counter(monkeypatch):
    """Counts image decodes per file."""
    counts: dict[str, int] = {}
    original = LabeledImageDataset.load_image

    def counting(self, index):
        path = self.samples[index][0]
        counts[path] = counts.get(path, 0) + 1
        return original(self, index)

    monkeypatch.setattr(LabeledImageDataset, "load_image", counting)
    return counts


def _naive(model, theta_0, theta_1, grid, loaders):
    """The reference implementation's loop: build each alpha's model, then evaluate everything again."""
    counts = torch.zeros(len(grid), len(loaders), 2, dtype=torch.long)
    for i, alpha in enumerate(grid):
        model.load_state_dict(interpolate(theta_0, theta_1, alpha))
        for j, loader in enumerate(loaders):
            counts[i, j] = torch.tensor(correct_counts(model, loader))
    return counts


@pytest.mark.parametrize("cache_bytes", [1, 1 << 30], ids=["block-per-batch", "one-block"])
def test_each_image_decoded_once_and_counts_equal_the_per_alpha_loop(setup, decode_counter, cache_bytes):
    model, theta_0, theta_1, dm = setup
    grid = [0.0, 0.5, 1.0]
    loaders = [dm.eval_loader(s) for s in dm.eval_sets]
    counts = engine.weight_sweep_counts(model, theta_0, theta_1, grid, loaders, cache_bytes=cache_bytes)
    every_file = [p for s in dm.eval_sets for p, _ in s.dataset.samples]
    assert len(decode_counter) == len(set(every_file))
    assert all(n == every_file.count(p) for p, n in decode_counter.items())  # once per appearance, whatever alphas

    decode_counter.clear()
    expected = _naive(model, theta_0, theta_1, grid, loaders)
    assert all(n == len(grid) * every_file.count(p) for p, n in decode_counter.items())  # the naive loop: N times
    assert torch.equal(counts, expected)
    assert len({tuple(c) for c in counts[:, :, 0].tolist()}) > 1  # alpha changes the predictions


def test_interpolations_per_block_and_serpentine_order(setup, monkeypatch):
    model, theta_0, theta_1, dm = setup
    calls = []
    original = engine.interpolate_into
    monkeypatch.setattr(engine, "interpolate_into",
                        lambda m, a, b, alpha: (calls.append(alpha), original(m, a, b, alpha)))
    grid = [0.0, 0.5, 1.0]
    loaders = [dm.eval_loader(s) for s in dm.eval_sets]
    num_batches = sum(len(ld) for ld in loaders)
    engine.weight_sweep_counts(model, theta_0, theta_1, grid, loaders, cache_bytes=1)  # one batch per block
    # Consecutive blocks traverse the grid in opposite directions, so each block after the first saves one.
    assert len(calls) == num_batches * len(grid) - (num_batches - 1)
    assert calls[:6] == [0.0, 0.5, 1.0, 0.5, 0.0, 0.5]
    calls.clear()
    engine.weight_sweep_counts(model, theta_0, theta_1, grid, loaders)  # everything fits: one block
    assert calls == grid


def test_run_sweep_rows_and_reduce(setup):
    model, theta_0, theta_1, dm = setup
    sets = dm.eval_sets
    columns = Columns(sets[0].name, sets[1].name, tuple(s.name for s in sets[2:]))
    loaders = {s.name: dm.eval_loader(s) for s in sets}
    rows = run_sweep(model, theta_0, theta_1, [0.5], loaders, columns)
    doubled = run_sweep(model, theta_0, theta_1, [0.5], loaders, columns, reduce=lambda t: 2 * t)
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    assert rows == doubled  # summing counts over identical "processes" leaves accuracies unchanged
    assert set(rows[0]) == {"alpha", *columns.all, "avg_shifts", "avg_ref_shifts"}


def test_empty_dataset_is_named():
    columns = Columns("val", "ref", ())
    counts = torch.zeros(1, 2, 2, dtype=torch.long)
    counts[0, 0] = torch.tensor([1, 2])
    with pytest.raises(ValueError, match="empty dataset \\('ref'\\)"):
        rows_from_counts([0.0], counts, columns)


def test_averages_carry_no_float_noise_into_the_results_files():
    from wiseft.sweep.summary import add_averages

    # The default toy run's alpha=0.5 row: a plain mean prints 51.739999999999995.
    row = {"val": 65.6, "ref": 64.45, "v2": 60.5, "sketch": 59.6, "rendition": 60.3, "objectnet": 43.1, "hard": 35.2}
    out = add_averages(row, Columns("val", "ref", ("v2", "sketch", "rendition", "objectnet", "hard")))
    assert repr(out["avg_shifts"]) == "51.74" and repr(out["avg_ref_shifts"]) == "58.095"
    assert {k: out[k] for k in row} == row
