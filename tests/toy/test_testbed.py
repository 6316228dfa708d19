"""The toy world's testbed of standard models and its shipped effective-robustness baseline (``wiseft.toy.testbed``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import compose_cfg
from wiseft.errors import ConfigError
from wiseft.review.robustness import SHIPPED_TABLES, load_baselines, logit, resolve_baselines, sigmoid
from wiseft.review.robustness import main as robustness_main
from wiseft.toy import testbed
from wiseft.toy.testbed import (
    REFERENCE,
    SHIPPED_MODELS,
    SMOKE_TESTBED,
    StandardModel,
    fit_testbed,
    run_testbed,
    ship,
    training_subset,
)
from wiseft.toy.world import SHIFT_DOMAINS, world_id

COLUMNS = [REFERENCE, *SHIFT_DOMAINS]


def test_rebuilding_a_small_testbed_gives_the_same_table(tmp_path: Path, tiny_world: Path, tiny_scale: float) -> None:
    kwargs = {"world_root": tiny_world.parent, "world_scale": tiny_scale}
    first = run_testbed(SMOKE_TESTBED, tmp_path / "a", seed=0, **kwargs)
    second = run_testbed(SMOKE_TESTBED, tmp_path / "b", seed=0, **kwargs)
    assert first.read_bytes() == second.read_bytes()
    lines = first.read_text().splitlines()
    assert lines[0].split(",")[-7:] == [*COLUMNS, "avg_shifts"]
    assert [line.split(",")[0] for line in lines[1:]] == [s.name for s in SMOKE_TESTBED]
    # A rerun into the same folder reads the cached rows instead of training.
    (tmp_path / "a" / "testbed.csv").unlink()
    assert run_testbed(SMOKE_TESTBED, tmp_path / "a", seed=0, **kwargs).read_bytes() == second.read_bytes()


def test_command_writes_table_fits_and_figure(tmp_path: Path, tiny_world: Path, tiny_scale: float) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"alpha": a, REFERENCE: 40.0 + 30 * a, **{d: 50.0 - 10 * a for d in (*SHIFT_DOMAINS, "avg_shifts")}}
            for a in (0.0, 0.5, 1.0)]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    argv = ["--preset", "smoke", "--world-root", str(tiny_world.parent), "--world-scale", str(tiny_scale),
            "--out", str(out), "--run", str(run)]
    assert testbed.main(argv) == 0
    fits = json.loads((out / "fits.json").read_text())
    assert set(fits["fits"]) == {*SHIFT_DOMAINS, "avg_shifts"} and fits["provenance"]["models"] == len(SMOKE_TESTBED)
    assert fits["provenance"]["command"] == f"python -m wiseft.toy.testbed --preset smoke --seed 0 --threads 1 " \
        f"--world-seed 0 --world-scale {tiny_scale:g}"
    assert (out / "testbed.png").stat().st_size > 10_000


def test_training_subsets_are_class_balanced_and_nested() -> None:
    import torch

    labels = torch.arange(200) % 10
    half, fifth = training_subset(labels, 0.5, seed=3), training_subset(labels, 0.2, seed=3)
    assert len(half) == 100 and torch.bincount(labels[half]).tolist() == [10] * 10
    assert set(fifth.tolist()) <= set(half.tolist())
    assert len(training_subset(labels, 0.001, seed=3)) == 10  # at least one image per class


def _synthetic_table(path: Path, w: float, b: float, refs: list[float]) -> Path:
    header = ["model", *COLUMNS, "avg_shifts"]
    rows = []
    for i, r in enumerate(refs):
        shifts = [100 * sigmoid(w * logit(r / 100) + b + 0.1 * k) for k in range(len(SHIFT_DOMAINS))]
        rows.append([f"m{i}", f"{r}", *(f"{s!r}" for s in shifts), f"{sum(shifts) / len(shifts)!r}"])
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return path


def test_fit_recovers_a_known_line_with_a_perfect_quality(tmp_path: Path) -> None:
    table = _synthetic_table(tmp_path / "t.csv", w=0.8, b=-0.6, refs=[20.0, 35.0, 50.0, 62.0, 71.0])
    entry = fit_testbed(table, provenance={"seed": 0})
    v2 = entry["fits"]["v2"]
    assert (v2["w"], v2["b"]) == (0.8, -0.6)
    assert entry["fits"]["sketch"]["b"] == pytest.approx(-0.5, abs=1e-4)
    assert v2["r2"] == pytest.approx(1.0) and v2["er_max"] == pytest.approx(0.0, abs=1e-2)
    assert entry["fits"]["avg_shifts"]["over"] == list(SHIFT_DOMAINS)
    assert entry["provenance"]["models"] == 5 and entry["provenance"][f"{REFERENCE}_range"] == [20.0, 71.0]


def test_fit_moves_zero_accuracies_half_an_image_inside(tmp_path: Path) -> None:
    table = _synthetic_table(tmp_path / "t.csv", w=1.0, b=-3.0, refs=[20.0, 40.0, 60.0])
    text = table.read_text().splitlines()
    cells = text[3].split(",")
    cells[-2] = "0.00"  # m2 scores nothing on 'hard'
    table.write_text("\n".join([*text[:3], ",".join(cells)]) + "\n")
    entry = fit_testbed(table, sizes={c: 1000 for c in COLUMNS})
    assert entry["provenance"]["zero_or_full_corrected"] == ["m2:hard"]


def test_ship_adds_the_toy_table_and_keeps_the_others(tmp_path: Path) -> None:
    tables, models = tmp_path / "effective_robustness.json", tmp_path / "toy_testbed.csv"
    tables.write_text(SHIPPED_TABLES.read_text())
    table = _synthetic_table(tmp_path / "t.csv", w=0.8, b=-0.6, refs=[20.0, 50.0, 70.0])
    ship(fit_testbed(table, provenance={"command": "x"}), table, tables, models)
    shipped = json.loads(tables.read_text())
    assert shipped["imagenet"] == json.loads(SHIPPED_TABLES.read_text())["imagenet"]
    assert shipped["toy"]["fits"]["v2"]["w"] == 0.8 and models.read_bytes() == table.read_bytes()


def test_shipped_toy_table_is_the_fit_of_the_shipped_testbed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shipped = json.loads(SHIPPED_TABLES.read_text())["toy"]
    prov = shipped["provenance"]
    refit = fit_testbed(SHIPPED_MODELS, prov["set_sizes"])
    assert refit["fits"] == shipped["fits"]
    assert prov["models"] >= 20 and prov["seed"] == 0 and prov["threads"] == 1
    # Without 0/100 % accuracies, the generic CLI fits the same constants from the same CSV.
    if not prov["zero_or_full_corrected"]:
        robustness_main(["fit", str(SHIPPED_MODELS), "--reference", REFERENCE, "--shifts", ",".join(SHIFT_DOMAINS),
                         "--out", str(tmp_path / "fits.json")])
        fits = load_baselines(str(tmp_path / "fits.json")).fits
        assert {k: (round(f.w, 4), round(f.b, 4)) for k, f in fits.items()} == \
            {k: (f["w"], f["b"]) for k, f in shipped["fits"].items()}



def test_shipped_tables_keep_their_layout() -> None:
    # --ship rewrites the whole file: it must lay out the tables it did not change exactly as they were.
    text = SHIPPED_TABLES.read_text()
    assert testbed._format_tables(json.loads(text)) == text

def test_shipped_toy_table_was_fitted_on_the_current_world() -> None:
    fitted_on = json.loads(SHIPPED_TABLES.read_text())["toy"]["provenance"]["world"]
    assert fitted_on == world_id(0, 1.0), (
        f"the toy world's generator changed since the baseline was fitted ({fitted_on}, now {world_id(0, 1.0)}): "
        "rerun `python -m wiseft.toy.testbed --ship` (see README, effective robustness on the toy)")


def test_default_job_uses_the_toy_baselines(tmp_path: Path) -> None:
    cfg = compose_cfg([], tmp_path)
    assert cfg.robustness.fits == "toy"
    fits = resolve_baselines(cfg.robustness, cfg.data.reference.name, list(cfg.data.shifts))
    assert set(fits) == {*SHIFT_DOMAINS, "avg_shifts"}
    # Leaving the toy recipe (the ImageNet recipes) keeps the published ImageNet fits.
    assert compose_cfg(["experiment=vit_b32_e2e"], tmp_path).robustness.fits == "imagenet"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threads", "0"], "--threads must be at least 1"),
        (["--models", "nope"], "--models: 'nope' is not in the default preset"),
        (["--preset", "smoke", "--ship"], "--ship ships the full default testbed on the default world"),
        (["--world-scale", "-1"], "--world-scale must be positive"),
    ],
)
def test_bad_arguments_get_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert testbed.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_a_spec_names_its_bad_field() -> None:
    with pytest.raises(ConfigError, match="unknown architecture 'resnet9000'"):
        StandardModel("resnet9000", 1).check()
    with pytest.raises(ConfigError, match=r"test_vit-e1-f1.5-none: fraction must lie in \(0, 1\]"):
        StandardModel("test_vit", 1, fraction=1.5, augment="none").check()
