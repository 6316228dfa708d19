"""The sweep decodes each image once and gives the same numbers as the per-alpha reference loop."""

import pytest
import torch

import wiseft.sweep.engine as engine
from wiseft.data.datasets import LabeledImageDataset
from wiseft.data.projection import projector
from wiseft.methods.interpolate import interpolate
from wiseft.sweep.engine import run_sweep
from wiseft.sweep.evaluate import correct_counts
from wiseft.sweep.summary import Columns, rows_from_stats


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


def _recording_path(name, theta_0, theta_1, calls):
    def mix(module, a, b, alpha):
        calls.append((name, alpha))
        engine.interpolate_into(module, a, b, alpha)

    return engine.WeightPath(name, theta_0, theta_1, mix)


def test_interpolations_per_block_and_serpentine_order(setup):
    model, theta_0, theta_1, dm = setup
    calls = []
    paths = [_recording_path("wiseft", theta_0, theta_1, calls)]
    grid = [0.0, 0.5, 1.0]
    loaders = [dm.eval_loader(s) for s in dm.eval_sets]
    num_batches = sum(len(ld) for ld in loaders)
    engine.sweep_stats(model, paths, grid, loaders, cache_bytes=1)  # one batch per block
    # Consecutive blocks traverse the grid in opposite directions, so each block after the first saves one.
    assert len(calls) == num_batches * len(grid) - (num_batches - 1)
    assert [a for _, a in calls[:6]] == [0.0, 0.5, 1.0, 0.5, 0.0, 0.5]
    calls.clear()
    engine.sweep_stats(model, paths, grid, loaders)  # everything fits: one block
    assert [a for _, a in calls] == grid


def test_several_paths_share_each_decoded_block(setup, decode_counter):
    model, theta_0, theta_1, dm = setup
    calls = []
    # A second path: the same interpolation with the endpoints swapped, so its alpha runs the other way.
    paths = [_recording_path("a", theta_0, theta_1, calls), _recording_path("b", theta_1, theta_0, calls)]
    grid = [0.0, 0.5, 1.0]
    loaders = [dm.eval_loader(s) for s in dm.eval_sets]
    stats = engine.sweep_stats(model, paths, grid, loaders, bins=0, cache_bytes=1)
    every_file = [p for s in dm.eval_sets for p, _ in s.dataset.samples]
    assert all(n == every_file.count(p) for p, n in decode_counter.items())  # still one decode per image
    assert torch.equal(stats[0], stats[1].flip(0))  # path b at alpha is path a at 1 - alpha
    # Blocks alternate the order of (path, alpha), each one starting where the last one ended.
    assert calls[:7] == [("a", 0.0), ("a", 0.5), ("a", 1.0), ("b", 0.0), ("b", 0.5), ("b", 1.0), ("b", 0.5)]


def test_output_ensemble_mixes_the_endpoint_logits_without_a_forward_pass(setup, monkeypatch):
    model, theta_0, theta_1, dm = setup
    grid = [0.0, 0.25, 0.5, 1.0]
    loaders = [dm.eval_loader(s) for s in dm.eval_sets]
    forwards = []
    hook = model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        plain = engine.sweep_stats(model, [engine.WeightPath("wiseft", theta_0, theta_1)], grid, loaders)
        n_plain = len(forwards)
        stats = engine.sweep_stats(model, [engine.WeightPath("wiseft", theta_0, theta_1)], grid, loaders,
                                   ensemble=True)
    finally:
        hook.remove()
    assert len(forwards) == 2 * n_plain  # the ensemble rows cost no forward pass
    assert torch.equal(stats[0], plain[0])
    # At alpha 0 and 1 the ensemble is exactly the zero-shot and the fine-tuned model.
    assert torch.equal(stats[1, 0], stats[0, 0]) and torch.equal(stats[1, -1], stats[0, -1])
    # In between: the statistics of the mixed logits, computed directly.
    from wiseft.sweep.stats import logit_stats

    logits = {}
    with torch.no_grad():
        for k, theta in enumerate((theta_0, theta_1)):
            model.load_state_dict(theta)
            model.eval()
            logits[k] = [[(model(x), y) for x, y in loader] for loader in loaders]
    for j, loader in enumerate(loaders):
        project = projector(getattr(loader.dataset, "projection", None), "cpu")
        expected = sum(logit_stats(project(torch.lerp(l0, l1, 0.25)), y)
                       for (l0, y), (l1, _) in zip(logits[0][j], logits[1][j], strict=True))
        assert torch.equal(stats[1, 1, j], expected)


def test_run_sweep_rows_and_reduce(setup):
    model, theta_0, theta_1, dm = setup
    sets = dm.eval_sets
    columns = Columns(sets[0].name, sets[1].name, tuple(s.name for s in sets[2:]))
    loaders = {s.name: dm.eval_loader(s) for s in sets}
    curves = run_sweep(model, theta_0, theta_1, [0.5], loaders, columns)
    doubled = run_sweep(model, theta_0, theta_1, [0.5], loaders, columns, reduce=lambda t: 2 * t)
    assert list(curves) == ["wiseft", "ensemble"]
    rows = curves["wiseft"]
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    assert curves == doubled  # summing statistics over identical "processes" leaves every metric unchanged
    calibration = {f"{m}_{c}" for m in ("ece", "nll") for c in (*columns.all, "avg_shifts")}
    assert set(rows[0]) == {"alpha", *columns.all, "avg_shifts", "avg_ref_shifts", *calibration}
    top1_only = run_sweep(model, theta_0, theta_1, [0.5], loaders, columns, ensemble=False, bins=0)
    assert list(top1_only) == ["wiseft"]
    assert [{k: r[k] for k in top1_only["wiseft"][0]} for r in rows] == top1_only["wiseft"]


def test_empty_dataset_is_named():
    columns = Columns("val", "ref", ())
    counts = torch.zeros(1, 2, 2, dtype=torch.long)
    counts[0, 0] = torch.tensor([1, 2])
    with pytest.raises(ValueError, match="empty dataset \\('ref'\\)"):
        rows_from_stats([0.0], counts, columns)


def test_averages_carry_no_float_noise_into_the_results_files():
    from wiseft.sweep.summary import add_averages

    # The default toy run's alpha=0.5 row: a plain mean prints 51.739999999999995.
    row = {"val": 65.6, "ref": 64.45, "v2": 60.5, "sketch": 59.6, "rendition": 60.3, "objectnet": 43.1, "hard": 35.2}
    out = add_averages(row, Columns("val", "ref", ("v2", "sketch", "rendition", "objectnet", "hard")))
    assert repr(out["avg_shifts"]) == "51.74" and repr(out["avg_ref_shifts"]) == "58.095"
    assert {k: out[k] for k in row} == row


def test_the_ensemble_alone_costs_two_forward_passes_per_image_whatever_the_grid(setup):
    model, theta_0, theta_1, dm = setup
    loaders = [dm.eval_loader(s) for s in dm.eval_sets]
    paths = [engine.WeightPath("wiseft", theta_0, theta_1)]
    grid = [i / 10 for i in range(11)]
    forwards = []
    hook = model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        alone = engine.sweep_stats(model, paths, grid, loaders, ensemble=True, weight_space=False)
    finally:
        hook.remove()
    assert len(forwards) == 2 * sum(len(ld) for ld in loaders)  # one batch, two endpoints
    both = engine.sweep_stats(model, paths, grid, loaders, ensemble=True)
    assert alone.shape[0] == 1 and torch.equal(alone[0], both[-1])
    with pytest.raises(ValueError, match="nothing to evaluate"):
        engine.sweep_stats(model, paths, grid, loaders, weight_space=False)
