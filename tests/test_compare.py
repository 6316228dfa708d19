"""The method comparison: runs grouped by method, seeds averaged, one table and one figure."""

import csv
import statistics

import pytest
import yaml

from wiseft.errors import DataError
from wiseft.review.compare import COMPARISON_CSV, COMPARISON_MD, COMPARISON_PNG, load_groups, main, write_comparison
from wiseft.review.results import write_rows, write_summary
from wiseft.sweep.summary import Columns, add_averages, summarize_methods

COLUMNS = Columns("ref_val", "ref", ("s1", "s2"))


def _rows(shift: float, gain: float, ensemble_drop: float = 0.0) -> dict[str, list[dict[str, float]]]:
    """A curve whose reference rises with alpha and whose shifts peak in the middle."""
    def row(a: float, drop: float) -> dict[str, float]:
        ref = 40 + gain * a - drop
        s = 50 + shift + 20 * a * (1 - a) - 10 * a
        return add_averages({"alpha": a, "ref_val": ref + 1, "ref": ref, "s1": s, "s2": s - 4,
                             "ece_ref": 10 - 5 * a, "ece_s1": 12.0, "ece_s2": 14.0}, COLUMNS)

    grid = [0.0, 0.5, 1.0]
    return {"wiseft": [row(a, 0.0) for a in grid], "ensemble": [row(a, ensemble_drop * a * (1 - a)) for a in grid]}


def _run(folder, finetune: str, seed: int, gain: float):
    curves = _rows(shift=seed, gain=gain, ensemble_drop=4.0)
    folder.mkdir(parents=True)
    write_rows(curves, folder)
    summary = summarize_methods(curves, COLUMNS)
    summary["finetune"] = finetune
    (folder / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "finetune": {"mode": finetune}}))
    write_summary(summary, folder)
    return curves, summary


@pytest.fixture
def sweep(tmp_path):
    runs = {}
    for i, (finetune, seed, gain) in enumerate([("e2e", 0, 30), ("e2e", 1, 34), ("lpft", 0, 28), ("lpft", 1, 28)]):
        runs[finetune, seed] = _run(tmp_path / "multirun" / str(i), finetune, seed, gain)
    (tmp_path / "multirun" / "9").mkdir()  # an unfinished job: no summary.json
    return tmp_path / "multirun", runs


def test_seeds_are_averaged_per_method(sweep):
    root, runs = sweep
    groups = {g.label: g for g in load_groups([root])}
    assert set(groups) == {"E2E / WiSE-FT (weight space)", "E2E / output-space ensemble",
                           "LP-FT / WiSE-FT (weight space)", "LP-FT / output-space ensemble"}
    assert all(len(g.runs) == 2 for g in groups.values())
    table = write_comparison([root])
    by = {(r["method"], r["model"]): r for r in table}
    e2e = "E2E / WiSE-FT (weight space)"
    finetuned = [runs["e2e", s][1]["finetuned"]["ref"] for s in (0, 1)]
    assert by[e2e, "alpha = 1 (fine-tuned)"]["ref"] == pytest.approx(statistics.fmean(finetuned))
    assert by[e2e, "alpha = 1 (fine-tuned)"]["ref_sd"] == pytest.approx(statistics.stdev(finetuned))
    chosen = [runs["e2e", s][1]["chosen_alpha"] for s in (0, 1)]
    assert by[e2e, "chosen alpha"]["alpha"] == pytest.approx(statistics.fmean(chosen))
    assert by[e2e, "alpha = 0.5"]["avg_shifts"] == pytest.approx(
        statistics.fmean(runs["e2e", s][0]["wiseft"][1]["avg_shifts"] for s in (0, 1)))
    # The ensemble's alpha = 1 model is the fine-tuned one: only its alpha = 0.5 and chosen alpha are new rows.
    assert ("E2E / output-space ensemble", "alpha = 1") not in by
    assert by["E2E / output-space ensemble", "alpha = 0.5"]["ref"] == pytest.approx(
        statistics.fmean(runs["e2e", s][0]["ensemble"][1]["ref"] for s in (0, 1)))
    assert by["E2E / output-space ensemble", "chosen alpha"]["ref"] == pytest.approx(statistics.fmean(
        runs["e2e", s][1]["methods"]["ensemble"]["chosen"]["ref"] for s in (0, 1)))
    assert by["zero-shot", "alpha = 0"]["runs"] == 4 and by["zero-shot", "alpha = 0"]["ece_ref"] == 10.0
    for name in (COMPARISON_CSV, COMPARISON_MD, COMPARISON_PNG):
        assert (root / name).is_file()
    assert "| E2E / WiSE-FT (weight space) | chosen alpha | 2 |" in (root / COMPARISON_MD).read_text()


def test_other_varying_keys_label_the_methods(tmp_path):
    for i, lr in enumerate((1e-5, 3e-5)):
        _run(tmp_path / "m" / str(i), "e2e", 0, 30 + i)
        (tmp_path / "m" / str(i) / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "lr": lr}))
    labels = sorted(g.label for g in load_groups([tmp_path / "m"]))
    assert labels[0] == "E2E / WiSE-FT (weight space), lr=1e-05"


def test_a_merge_folder_is_labelled_by_its_group_and_each_folder_by_its_own_differences(sweep, tmp_path):
    root, _ = sweep
    # Jobs whose configs differ in what their training method implies (paths, its own defaults) are still seeds.
    for i, finetune in enumerate(("e2e", "e2e", "lpft", "lpft")):
        config = {"seed": i % 2, "finetune": {"mode": finetune, "grad_clip": 1.0 if finetune == "e2e" else None},
                  "callbacks": {"dirpath": f"/runs/{i}"}}
        (root / str(i) / "config.yaml").write_text(yaml.safe_dump(config))
        (root / str(i) / ".hydra").mkdir()  # a Hydra multirun: its sweep overrides tell the jobs apart
        (root / str(i) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"finetune={finetune}",
                                                                                 f"seed={i % 2}"]))
    merge = tmp_path / "merge"
    for i, finetune in enumerate(("e2e", "lpft")):
        _run(merge / str(i), finetune, 0, 30)
        config = {"seed": 0, "finetune": {"mode": finetune}, "merge": {"group": {"finetune": finetune},
                                                                       "jobs": [str(2 * i), str(2 * i + 1)]}}
        (merge / str(i) / "config.yaml").write_text(yaml.safe_dump(config))
    groups = {g.label: len(g.runs) for g in load_groups([root, merge])}
    assert groups["E2E / WiSE-FT (weight space)"] == 3 and groups["LP-FT / output-space ensemble"] == 3
    assert all("=" not in label for label in groups), groups  # no path or mode-implied key in any label


def test_cli_reports_bad_folders_in_one_line(tmp_path, capsys, sweep):
    assert main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"error: '{tmp_path / 'missing'}' does not exist"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no finished run"):
        load_groups([tmp_path / "empty"])
    root, _ = sweep
    assert main([str(root), "--out", str(tmp_path)]) == 0
    assert "chosen alpha" in capsys.readouterr().out
    with (tmp_path / COMPARISON_CSV).open() as f:
        assert len(list(csv.DictReader(f))) == 1 + 2 * 3 + 2 * 2  # zero-shot; WiSE-FT 3 rows, ensemble 2, per training
