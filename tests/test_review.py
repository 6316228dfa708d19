"""Reviewing results: a 2-job sweep aggregated into one report, its offline W&B runs read back, standalone
evaluation of the checkpoints, and the review notebook executed on it."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from safetensors.torch import save_file

from tests.conftest import CONF_DIR, make_image_data, make_tree, tiny_cfg
from wiseft.errors import CheckpointError, ConfigError, DataError
from wiseft.models.factory import build_clip
from wiseft.pipeline.evaluate import evaluate_checkpoints
from wiseft.pipeline.train import train
from wiseft.review.multirun import load_sweep
from wiseft.review.report import (
    SWEEP_CURVES_PNG,
    SWEEP_RECIPES_CSV,
    SWEEP_RESULTS_CSV,
    SWEEP_ROWS_CSV,
    SWEEP_SUMMARY_JSON,
    best_job,
    best_recipe,
    write_report,
)
from wiseft.review.report import main as report_main
from wiseft.review.results import read_rows
from wiseft.review.robustness import load_baselines
from wiseft.review.wandb_offline import read_records, read_summary, read_table, run_files

REPO = Path(__file__).resolve().parents[1]
LRS = ("1e-3", "3e-2")
GROUP = "review-sweep"


def _data(root: Path) -> Path:
    return make_image_data(root / "data")


def _pretrained(root: Path) -> Path:
    """Seeded random tiny-vit weights saved as a file: the 'pretrained' CLIP the runs start from."""
    torch.manual_seed(0)
    path = root / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in build_clip("tiny-vit").model.state_dict().items()}, str(path))
    return path


# The generated reference/shift_full columns stand in for ImageNet/ImageNet-V2, so the shipped IN-V2 fit applies.
ER_MAPPING = ["+robustness.columns.reference=imagenet", "+robustness.columns.shift_full=imagenet_v2"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two jobs (two learning rates) in sibling folders of one sweep folder, logged to offline W&B, plus an
    unfinished third job."""
    root = tmp_path_factory.mktemp("review")
    data, pretrained = _data(root), _pretrained(root)
    sweep_dir = root / "sweep"
    objectives = []
    for i, lr in enumerate(LRS):
        cfg = tiny_cfg(data, sweep_dir / str(i), [
            f"finetune.lr={lr}", "logger=wandb", f"logger.wandb.group={GROUP}", f"model.pretrained={pretrained}",
            "wiseft.alphas=[0.0,0.5,1.0]", "wiseft.upload_checkpoint=true", *ER_MAPPING])
        objectives.append(train(cfg))
    (sweep_dir / "2").mkdir()
    (sweep_dir / "2" / "config.yaml").write_text("finetune: {lr: 0.1}\n")  # crashed before its summary
    return {"root": root, "data": data, "dir": sweep_dir, "objectives": objectives, "pretrained": pretrained}


def test_sweep_aggregates_every_finished_job(sweep):
    loaded = load_sweep(sweep["dir"])
    assert [job.name for job in loaded.jobs] == ["0", "1"] and loaded.unfinished == ["2"]
    # The jobs differ only in the learning rate: that is the one hyperparameter the report shows.
    assert [job.params for job in loaded.jobs] == [{"finetune.lr": float(lr)} for lr in LRS]

    summary = write_report(sweep["dir"])
    for name in (SWEEP_RESULTS_CSV, SWEEP_ROWS_CSV, SWEEP_SUMMARY_JSON, SWEEP_CURVES_PNG):
        assert (sweep["dir"] / name).is_file(), name
    job_summaries = [json.loads((sweep["dir"] / str(i) / "summary.json").read_text()) for i in range(2)]
    # Best job: the highest held-out reference accuracy at the job's chosen alpha (first one on ties).
    vals = [s["chosen"]["reference_val"] for s in job_summaries]
    assert summary["select_by"] == "reference_val"
    assert summary["best_job"] == str(vals.index(max(vals)))
    assert summary["unfinished"] == ["2"]

    with (sweep["dir"] / SWEEP_RESULTS_CSV).open() as f:
        table = list(csv.DictReader(f))
    assert [r["job"] for r in table] == ["0", "1"]
    for row, job_summary, objective in zip(table, job_summaries, sweep["objectives"], strict=True):
        assert float(row["chosen_alpha"]) == job_summary["chosen_alpha"]
        for col, value in job_summary["chosen"].items():
            if col != "alpha":
                assert float(row[col]) == pytest.approx(value), col
        assert float(row["avg_ref_shifts"]) == pytest.approx(objective)
        assert float(row["finetuned/reference"]) == pytest.approx(job_summary["finetuned"]["reference"])
    assert [r["best"] for r in table].count("True") == 1
    with (sweep["dir"] / SWEEP_ROWS_CSV).open() as f:
        long_rows = list(csv.DictReader(f))
    assert len(long_rows) == 2 * 3  # two jobs x three alphas
    assert sum(r["chosen"] == "True" for r in long_rows) == 2


def _seeded_copy(sweep, root: Path, vals: dict[tuple[str, int], float]) -> Path:
    """A sweep folder of copies of one finished job, one per (lr, seed), with Hydra's overrides file and the given
    held-out score at the chosen alpha."""
    for i, ((lr, seed), val) in enumerate(vals.items()):
        job = root / str(i)
        shutil.copytree(sweep["dir"] / "0", job)
        (job / ".hydra").mkdir(exist_ok=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- finetune.lr={lr}\n- seed={seed}\n")
        summary = json.loads((job / "summary.json").read_text())
        summary["chosen"]["reference_val"] = val
        (job / "summary.json").write_text(json.dumps(summary))
    return root


def test_seeds_of_one_recipe_are_averaged_before_choosing(sweep, tmp_path, capsys):
    # Recipe 1e-3 has the single best job (a lucky seed, 90) but the lower mean (80); 3e-2 is steadier (84.5).
    vals = {("1e-3", 0): 90.0, ("1e-3", 1): 70.0, ("3e-2", 0): 85.0, ("3e-2", 1): 84.0}
    root = _seeded_copy(sweep, tmp_path / "seeded", vals)
    loaded = load_sweep(root)
    recipe = best_recipe(loaded)
    assert recipe.params == {"finetune.lr": 3e-2} and [job.name for job in recipe.jobs] == ["2", "3"]
    assert best_job(loaded).name == "2"  # the best seed of the best recipe, not the lucky job 0
    with pytest.raises(ConfigError, match="never on shift data"):
        best_recipe(loaded, "avg_shifts")

    summary = write_report(root)
    assert summary["best_recipe"]["params"] == {"finetune.lr": 3e-2}
    assert summary["best_recipe"]["reference_val"] == pytest.approx({"mean": 84.5, "sd": 0.5 ** 0.5})
    assert summary["best_job"] == "2"
    with (root / SWEEP_RECIPES_CSV).open() as f:
        table = list(csv.DictReader(f))
    assert [(r["finetune.lr"], r["seeds"], r["jobs"], r["best"]) for r in table] == [
        ("0.001", "2", "0 1", "False"), ("0.03", "2", "2 3", "True")]
    assert float(table[0]["reference_val"]) == pytest.approx(80.0)
    assert float(table[0]["reference_val_sd"]) == pytest.approx(200 ** 0.5)
    assert "seed" not in table[0]

    assert report_main([str(root)]) == 0
    out = capsys.readouterr().out
    assert "best recipe by reference_val (mean of 2 seeds): finetune.lr=0.03 (84.50" in out
    assert "80.00±14.1" in out  # the other recipe's mean and spread are shown too


def test_best_job_is_never_chosen_on_shift_data(sweep):
    loaded = load_sweep(sweep["dir"])
    for col in ("shift_full", "avg_shifts", "avg_ref_shifts", "er_shift_full"):
        with pytest.raises(ConfigError, match="never on shift data"):
            best_job(loaded, col)
    by_ref = best_job(loaded, "reference")
    assert by_ref.summary["chosen"]["reference"] == max(j.summary["chosen"]["reference"] for j in loaded.jobs)


def test_report_cli(sweep, capsys, tmp_path):
    assert report_main([str(sweep["dir"])]) == 0
    out = capsys.readouterr().out
    assert "best job by reference_val" in out and "unfinished" in out
    assert report_main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(DataError, match="no finished job"):
        load_sweep(tmp_path)


def test_rows_report_effective_robustness(sweep):
    v2 = load_baselines("imagenet").fits["imagenet_v2"]
    for i in range(2):
        rows = read_rows(sweep["dir"] / str(i))
        for row in rows:
            assert row["er_shift_full"] == pytest.approx(v2.effective_robustness(row["reference"], row["shift_full"]))
            assert "er_shift_sub" not in row  # no fit for it
        summary = json.loads((sweep["dir"] / str(i) / "summary.json").read_text())
        assert summary["baselines"] == {"shift_full": {"w": 0.9233, "b": -0.4982}}


def test_offline_wandb_runs_hold_the_sweep_table_in_one_group(sweep):
    for i in range(2):
        job = sweep["dir"] / str(i)
        logs = {}
        for log_file in run_files(job):
            state = read_summary(log_file)
            [run] = [r["run"] for r in read_records(log_file) if r["type"] == "run"]
            logs[state["config"]["method"]] = (log_file, state, run)
        assert set(logs) == {"wiseft", "ensemble"}  # one W&B run per method
        assert {run.get("run_group") for _, _, run in logs.values()} == {GROUP}
        summary = json.loads((job / "summary.json").read_text())
        for method, (log_file, state, _) in logs.items():
            columns, data = read_table(log_file, "wiseft/sweep", state)
            rows = read_rows(job, method)
            assert columns == list(rows[0])
            assert [[pytest.approx(v, nan_ok=True) for v in r.values()] for r in rows] == data
            assert state["state"] == "finished"
            # The same keys in every method's run, so the dashboard compares them without editing.
            entry = summary["methods"][method]
            assert state["summary"]["wiseft/chosen_alpha"] == entry["chosen_alpha"]
            assert state["summary"]["wiseft/zeroshot/reference"] == pytest.approx(entry["zeroshot"]["reference"])
            assert state["summary"]["wiseft/optimal_alpha/avg_shifts"] == entry["optimal_alpha"]["avg_shifts"]
            assert "wiseft/curve/shift_full_table" in state["summary"]  # the per-shift chart's data
        main_log = logs["wiseft"][0]
        records = read_records(main_log)
        artifacts = [r["artifact"] for r in records if r["type"] == "artifact" and r["artifact"]["type"] == "model"]
        assert [c["path"] for a in artifacts for c in a["manifest"]["contents"]] == ["wiseft_chosen.safetensors"]
        assert logs["ensemble"][2]["display_name"].endswith("/ensemble")


def _evaluate_cfg(overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


def test_standalone_evaluation_reproduces_the_run_and_exports(sweep):
    import open_clip

    job, data, out = sweep["dir"] / "0", sweep["data"], sweep["root"] / "evaluate"
    cfg = _evaluate_cfg([
        "data=imagefolder", f"paths.data_dir={data}", "data.batch_size=8", "device=cpu",
        f"+data.shifts.shift_full={{root:{data}/shift_full}}", f"+data.shifts.shift_sub={{root:{data}/shift_sub}}",
        f"finetuned={job}/checkpoints/finetuned.safetensors", "wiseft.alphas=[0.0,0.5,1.0]", "export.enabled=true",
        *ER_MAPPING])  # zeroshot=null: the zero-shot head is rebuilt from the checkpoint's model and the prompts
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    objective = evaluate_checkpoints(cfg)
    for name in ("config.yaml", "results.csv", "results.jsonl", "summary.json", "curve.png",
                 "checkpoints/wiseft_chosen.safetensors"):
        assert (out / name).is_file(), name
    for got, expected in zip(read_rows(out), read_rows(job), strict=True):
        assert got == pytest.approx(expected)
    assert objective == pytest.approx(sweep["objectives"][0])
    summary = json.loads((out / "summary.json").read_text())
    model = open_clip.create_model("tiny-vit", pretrained=summary["export"]["model"])
    assert model.logit_scale.item() == pytest.approx(build_clip("tiny-vit", str(sweep["pretrained"])).model
                                                     .logit_scale.item())


def test_standalone_rejects_checkpoints_of_other_classes(sweep, tmp_path):
    data = tmp_path / "other"
    make_tree(data / "reference" / "train", classes=("cyan", "magenta"), per_class=2)
    make_tree(data / "reference" / "val", classes=("cyan", "magenta"), per_class=2)
    make_tree(data / "reference" / "test", classes=("cyan", "magenta"), per_class=2)
    cfg = _evaluate_cfg(["data=imagefolder", f"paths.data_dir={data}",
                         f"finetuned={sweep['dir']}/0/checkpoints/finetuned.safetensors"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
    with pytest.raises(CheckpointError, match="not the data's reference classes"):
        evaluate_checkpoints(cfg)


def test_notebook_is_stored_without_outputs():
    nb = json.loads((REPO / "notebooks" / "review.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_review_notebook_executes_on_the_sweep(sweep, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("WISEFT_REVIEW_DIR", str(sweep["dir"]))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(REPO / "notebooks" / "review.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") + "".join(str(v) for v in o.get("data", {}).values()) for o in outputs)
    best = load_sweep(sweep["dir"])
    label = best_job(best).label
    assert f"best job (on reference_val): {label}" in text
    assert text.count("chosen alpha") >= 2 and "2 finished job(s); unfinished: 2" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.slow
def test_hydra_multirun_shares_a_wandb_group_and_reports(tmp_path):
    """A real ``python train.py -m`` over two learning rates."""
    data, sweep_dir = _data(tmp_path), tmp_path / "multirun"
    cmd = [sys.executable, "train.py", "-m", "model=tiny_random", "data=imagefolder", f"paths.data_dir={data}",
           "~experiment", "logger=wandb", "callbacks=none", "finetune.epochs=1", "finetune.warmup_steps=1",
           "data.batch_size=8", "trainer.accelerator=cpu", "wiseft.alphas=[0.0,0.5,1.0]",
           f"+data.shifts.shift_full={{root:{data}/shift_full}}", "finetune.lr=1e-3,3e-2",
           f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = write_report(sweep_dir)
    assert [j["params"] for j in summary["jobs"]] == [{"finetune.lr": 1e-3}, {"finetune.lr": 3e-2}]
    groups, names = set(), set()
    for i in range(2):
        for log_file in run_files(sweep_dir / str(i)):  # one W&B run per method
            [run] = [r["run"] for r in read_records(log_file) if r["type"] == "run"]
            groups.add(run.get("run_group"))
            names.add(run.get("display_name"))
    assert groups == {sweep_dir.name}
    assert names == {f"{sweep_dir.name}/{i}{method}" for i in range(2) for method in ("", "/ensemble")}


def test_optuna_search_config_composes():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) >= {"finetune.lr", "finetune.weight_decay", "finetune.epochs"}
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"


def test_wandb_group_and_name_come_from_the_hydra_sweep():
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra.mode=MULTIRUN", "hydra.sweep.dir=/x/multiruns/lr_search",
                                                      "hydra.job.num=3"], return_hydra_config=True)
        single = compose(config_name="train", return_hydra_config=True)
    try:
        HydraConfig.instance().set_config(cfg)
        assert OmegaConf.to_container(cfg.logger.wandb, resolve=True)["group"] == "lr_search"
        assert cfg.logger.wandb.name == "lr_search/3"
        HydraConfig.instance().set_config(single)  # a plain run: no group, W&B picks a name
        assert single.logger.wandb.group is None and single.logger.wandb.name is None
    finally:
        HydraConfig.instance().cfg = None
