"""The default job (``python train.py``: toy world, shipped tiny CLIP, toy recipe) end to end through ``train(cfg)``.

The fast test runs the whole pipeline on a small world. The slow tests run the default itself for three fine-tuning
seeds and assert the pattern the benchmark exists to show (the paper's, in miniature): fine-tuning gains on the
reference, WiSE-FT at alpha 0.5 keeps most of that gain and beats both ends on the shifts, and the alpha chosen
on held-out reference data lies inside (0, 1): a model nearly as accurate as the fine-tuned one on the reference and
clearly more robust.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_cfg
from wiseft.pipeline.train import train
from wiseft.review.results import read_rows
from wiseft.review.robustness import load_baselines
from wiseft.toy.world import LABELLED_DOMAINS, SHIFT_DOMAINS, world_id

CHANCE = 10.0  # ten classes, balanced in every domain
REFERENCE = "photo"  # data.reference.name of conf/data/toy.yaml
SETS = (f"{REFERENCE}_val", REFERENCE, *SHIFT_DOMAINS)


def _run_default(data_dir: Path, out: Path, overrides: list[str]) -> list[dict[str, float]]:
    cfg = compose_cfg(
        [
            f"paths.data_dir={data_dir}",
            "logger=csv",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            *overrides,
        ],
        out,
    )
    train(cfg)
    return read_rows(out)  # WiSE-FT's rows


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, float]]]:
    root = tmp_path_factory.mktemp("toy-default-small")
    rows = _run_default(root / "data", root / "out", ["data.world.scale=0.02", "wiseft.alphas=[0.0,0.5,1.0]"])
    return root, rows


def test_default_job_runs_end_to_end_on_a_small_world(small_run: tuple[Path, list[dict[str, float]]]) -> None:
    root, rows = small_run
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    assert set(SETS) | {"avg_shifts"} <= set(rows[0])
    # The shipped zero-shot model is a real one: well above chance on the shifts even on 20 images per domain.
    assert rows[0]["avg_shifts"] > 2 * CHANCE
    assert rows[0] != rows[-1]  # fine-tuning moved the weights
    summary = json.loads((root / "out" / "summary.json").read_text())
    assert summary["zeroshot"] == rows[0] and summary["finetuned"] == rows[-1]
    assert (root / "out" / "curve.png").is_file()
    # One resumable checkpoint of the final state (ModelCheckpoint and ResumeCheckpoint share the file).
    lightning = root / "out" / "checkpoints" / "lightning"
    assert [p.name for p in lightning.iterdir()] == ["last.ckpt"]
    ckpt = torch.load(lightning / "last.ckpt", weights_only=True, map_location="cpu")
    epochs = OmegaConf.load(root / "out" / "config.yaml").finetune.epochs  # the toy recipe's (8 when written)
    assert ckpt["global_step"] > 0 and ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == epochs


def test_default_job_reports_effective_robustness(small_run: tuple[Path, list[dict[str, float]]]) -> None:
    # conf/experiment/toy.yaml selects the toy world's own baselines (wiseft.toy.testbed): every shift gets a column.
    root, rows = small_run
    fits = load_baselines("toy").fits
    columns = (*SHIFT_DOMAINS, "avg_shifts")
    for row in rows:
        for col in columns:
            assert row[f"er_{col}"] == pytest.approx(fits[col].effective_robustness(row[REFERENCE], row[col]))
    header = (root / "out" / "results.csv").read_text().splitlines()[0].split(",")
    assert {f"er_{col}" for col in columns} <= set(header)
    summary = json.loads((root / "out" / "summary.json").read_text())
    assert summary["baselines"] == {col: fits[col].to_dict() for col in columns}  # what curve.png draws


def test_fine_tuning_generates_only_the_labelled_domains(small_run: tuple[Path, list[dict[str, float]]]) -> None:
    root, _ = small_run
    world = root / "data" / "toy" / world_id(0, 0.02)
    assert sorted(p.name for p in world.iterdir()) == sorted([*LABELLED_DOMAINS, "world.json"])


SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def default_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[dict[float, dict[str, float]], dict]]:
    """The default job for three fine-tuning seeds (one world, generated once): seed -> (rows by alpha, summary)."""
    root = tmp_path_factory.mktemp("toy-default")
    runs = {}
    for seed in SEEDS:
        out = root / f"seed{seed}"
        rows = {r["alpha"]: r for r in _run_default(root / "data", out, [f"seed={seed}"])}
        summary = json.loads((out / "summary.json").read_text())
        zeroshot, mid, finetuned, chosen = rows[0.0], rows[0.5], rows[1.0], summary["chosen"]
        print(f"\nseed {seed}: chosen alpha {summary['chosen_alpha']}; " + "; ".join(
            f"alpha {a}: " + ", ".join(f"{k} {r[k]:.2f}" for k in (*SETS, "avg_shifts"))
            for a, r in ((0.0, zeroshot), (0.5, mid), (summary["chosen_alpha"], chosen), (1.0, finetuned))))
        runs[seed] = rows, summary
    return runs


# Issue 12's aims; docs/toy_fidelity.md has every measurement. The suite runs on one thread (tests/conftest.py), and
# the digits depend on the thread count and the CPU, so the numbers quoted below are this test's on the development
# machine (seeds 0 / 1 / 2), with the shipped 20,000-step toy CLIP and the 8-epoch recipe.


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_default_job_shows_the_wiseft_pattern(seed: int, default_runs: dict) -> None:
    rows, summary = default_runs[seed]
    zeroshot, mid, finetuned, chosen = rows[0.0], rows[0.5], rows[1.0], summary["chosen"]
    for name in SETS:
        assert zeroshot[name] >= 2 * CHANCE, name
    assert zeroshot[REFERENCE] < 90.0
    # Fine-tuning pays on the reference (aim +15; measured +16.55 / +16.70 / +16.60).
    assert finetuned[REFERENCE] >= zeroshot[REFERENCE] + 15.0
    # WiSE-FT at alpha 0.5 keeps most of that gain: 1.15 / 0.05 / 2.05 under fine-tuned here (2.10 / 0.30 / 2.35 with
    # `python train.py` on two threads). The seed-to-seed spread of this gap is about as wide as the aim, so the aim
    # (within 2 points) is asserted on the three-seed mean below; one seed is held to 3, above every measured run.
    assert mid[REFERENCE] >= finetuned[REFERENCE] - 3.0
    # ...while beating both ends on the shifts (aim +3; measured +8.92 / +8.06 / +8.54).
    assert mid["avg_shifts"] >= max(zeroshot["avg_shifts"], finetuned["avg_shifts"]) + 3.0
    # Alpha is chosen on held-out reference data (never on the shifts): the smallest alpha within one standard error
    # of the best photo_val accuracy (wiseft.select_within_se). It lands strictly inside (0, 1): the chosen model is a
    # WiSE-FT model, about as accurate as the fine-tuned one on the reference and clearly more robust (aim: +3 on the
    # shifts; measured alpha 0.6 / 0.5 / 0.7, -0.20 / -0.05 / +0.60 on the reference, +12.38 / +8.06 / +6.76 on the
    # shifts).
    assert summary["selected_on"] == f"{REFERENCE}_val"
    assert summary["selection"]["within_se"] == 1.0
    assert 0.0 < summary["chosen_alpha"] < 1.0
    # On the reference it is held to the per-seed gap bound above: when 0.5 is chosen the two are the same number
    # (two threads, seed 2: 2.35 under).
    assert chosen[REFERENCE] >= finetuned[REFERENCE] - 3.0
    assert chosen["avg_shifts"] >= finetuned["avg_shifts"] + 3.0


@pytest.mark.slow
def test_wiseft_at_half_is_within_two_points_of_fine_tuned_on_the_reference_over_three_seeds(
    default_runs: dict,
) -> None:
    # Issue 12's reference aim on the three-seed mean, as the README table reports it (measured 1.08 here).
    gaps = [rows[1.0][REFERENCE] - rows[0.5][REFERENCE] for rows, _ in default_runs.values()]
    assert sum(gaps) / len(gaps) <= 2.0, gaps
