"""What ``python train.py`` shows: a few useful lines of its own and a final summary; the rest goes to train.log."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from rich.console import Console

from tests.conftest import compose_cfg
from tests.reliability_helpers import REPO, cli_env
from wiseft.review.console import final_summary, print_final_summary, summary_table
from wiseft.runtime.terminal import TerminalFilter, TerminalFormatter, parse_level, route_lightning_logs

#: The keys of summary.json the final table reads (the summary has more; the table must not need them).
SUMMARY = {
    "zeroshot": {"alpha": 0.0, "photo_val": 45.0, "photo": 45.65, "v2": 42.0, "sketch": 62.4, "avg_shifts": 52.2},
    "finetuned": {"alpha": 1.0, "photo_val": 70.0, "photo": 70.8, "v2": 68.3, "sketch": 40.5, "avg_shifts": 54.4},
    "chosen": {"alpha": 0.5, "photo_val": 65.0, "photo": 64.45, "v2": 60.5, "sketch": 59.6, "avg_shifts": 60.05},
    "chosen_alpha": 0.5,
    "selected_on": "photo_val",
    "optimal_alpha": {"photo_val": 0.9, "photo": 1.0, "v2": 1.0, "sketch": 0.3, "avg_shifts": 0.5},
    "optimal": {"photo_val": 71.0, "photo": 70.8, "v2": 68.3, "sketch": 62.9, "avg_shifts": 60.05},
    "columns": {"val": "photo_val", "reference": "photo", "shifts": ["v2", "sketch"]},
}


def _record(name: str, level: int) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "message", None, None)


# --- the filter and format of the terminal's log lines --------------------------------------------------------------

def test_terminal_filter_shows_wiseft_progress_and_warnings_of_everyone():
    terminal = TerminalFilter("WARNING", {"wiseft": "INFO", "wiseft.sweep": "WARNING"})
    assert terminal.filter(_record("wiseft.pipeline.train", logging.INFO))
    assert not terminal.filter(_record("wiseft.pipeline.train", logging.DEBUG))
    assert not terminal.filter(_record("wiseft.sweep.callback", logging.INFO))  # the longest matching name decides
    assert not terminal.filter(_record("lightning.pytorch.utilities.rank_zero", logging.INFO))
    assert not terminal.filter(_record("root", logging.INFO))  # open_clip logs through the root logger
    assert terminal.filter(_record("root", logging.WARNING))
    assert not terminal.filter(_record("wiseftx", logging.INFO))  # a name prefix is not a child logger


def test_log_level_option_brings_other_packages_back_and_hydra_verbose_shows_everything():
    composed = compose_cfg(["log_level=INFO"])
    assert composed.log_level == "INFO"
    terminal = TerminalFilter(composed.log_level, {"wiseft": "INFO", "wiseft.sweep": "WARNING"})
    assert terminal.filter(_record("root", logging.INFO))
    assert terminal.filter(_record("wiseft.sweep.callback", logging.INFO))
    quiet = TerminalFilter("WARNING", {"wiseft": "INFO"})
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)  # what hydra.verbose=true sets
    try:
        assert quiet.filter(_record("lightning.pytorch", logging.DEBUG))
    finally:
        root.setLevel(level)


def test_logging_configs_use_the_filter_with_the_log_level_option():
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["log_level=ERROR"], return_hydra_config=True)
    for which in ("job_logging", "hydra_logging"):
        node = OmegaConf.to_container(cfg.hydra[which].filters.terminal, resolve=True)
        assert node.pop("()") == "wiseft.runtime.terminal.TerminalFilter"
        assert TerminalFilter(**node).level == logging.ERROR
        assert cfg.hydra[which].handlers.console.filters == ["terminal"]
    assert list(cfg.hydra.job_logging.root.handlers) == ["console", "file"]


def test_a_bad_log_level_is_left_to_the_preflight():
    assert TerminalFilter("LOUD").level == logging.WARNING  # Hydra configures logging before any check runs
    with pytest.raises(ValueError, match="'LOUD' is not a logging level"):
        parse_level("LOUD")


def test_terminal_format_marks_warnings_like_the_error_lines():
    fmt = TerminalFormatter("%(message)s")
    assert fmt.format(_record("wiseft", logging.INFO)) == "message"
    assert fmt.format(_record("py.warnings", logging.WARNING)) == "warning: message"
    assert fmt.format(_record("wiseft", logging.ERROR)) == "error: message"


def test_lightning_logs_go_through_the_root_handlers_only():
    route_lightning_logs()
    logger = logging.getLogger("lightning")
    assert logger.propagate
    assert not [h for h in logger.handlers if type(h) is logging.StreamHandler]


# --- the final summary -----------------------------------------------------------------------------------------------

def _render(renderable, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable, crop=False)
    return console.export_text().splitlines()


def test_summary_table_reads_only_the_summary_keys_it_needs():
    lines = _render(summary_table(SUMMARY))
    header = lines[1]
    assert header.split() == ["alpha", "photo", "v2", "sketch", "avg", "shifts"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:]}
    assert rows["zero-shot"] == ["0", "45.6", "42.0", "62.4", "52.2"]
    assert rows["fine-tuned"] == ["1", "70.8", "68.3", "40.5", "54.4"]
    assert rows["WiSE-FT"] == ["0.5", "64.5", "60.5", "59.6", "60.0"]
    assert rows["optimal"] == ["70.8", "68.3", "62.9", "60.0"]
    assert rows["at"] == ["alpha", "1", "1", "0.3", "0.5"]
    assert lines[0].strip() == "WiSE-FT top-1 accuracy (%), alpha chosen on photo_val"


def test_summary_table_shows_each_other_method_at_its_chosen_alpha():
    ensemble = {"chosen_alpha": 0.7, "chosen": {**SUMMARY["chosen"], "photo": 66.25}}
    summary = {**SUMMARY, "methods": {"wiseft": SUMMARY, "ensemble": ensemble}}
    rows = {line[:12].strip(): line[12:].split() for line in _render(summary_table(summary))[3:]}
    assert rows["output ens."][:2] == ["0.7", "66.2"]
    assert "wiseft" not in rows and rows["WiSE-FT"][:2] == ["0.5", "64.5"]


def test_summary_table_fits_an_80_column_terminal_with_five_shifts():
    shifts = ["v2", "sketch", "rendition", "objectnet", "hard"]
    row = {"alpha": 0.0, "photo": 45.65, **dict.fromkeys(shifts, 50.0), "avg_shifts": 50.0}
    summary = {**SUMMARY, "zeroshot": row, "finetuned": row, "chosen": row, "optimal": row,
               "optimal_alpha": dict.fromkeys(row, 0.5), "columns": {"val": "photo_val", "reference": "photo",
                                                                     "shifts": shifts}}
    lines = _render(summary_table(summary))
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert [line.split()[0] for line in lines[3:]] == ["zero-shot", "fine-tuned", "WiSE-FT", "optimal", "at"]
    assert any("avg shifts" in line for line in lines)  # no header folded


def test_final_summary_says_where_the_files_are_and_how_to_look_at_them(tmp_path):
    run = tmp_path / "wandb" / "offline-run-20260101_000000-abc"
    text = "\n".join(_render(final_summary(SUMMARY, tmp_path, ["results.csv", "curve.png"], run), width=200))
    assert f"run folder: {tmp_path}\n  results.csv, curve.png (plot)\n" in text
    assert f"W&B run (offline): {run}\n  wandb leet <it> to browse it in the terminal, wandb sync <it> to upload it" \
        in text
    online = "\n".join(_render(final_summary(SUMMARY, tmp_path, [], tmp_path / "wandb" / "run-1-abc"), width=200))
    assert "W&B run: " in online and "wandb sync" not in online


def test_printed_summary_lists_only_what_the_run_folder_holds(tmp_path):
    (tmp_path / "results.csv").write_text("")
    (tmp_path / "checkpoints").mkdir()
    console = Console(width=120, record=True, color_system=None, file=open("/dev/null", "w"))  # noqa: SIM115
    print_final_summary(SUMMARY, tmp_path, console)
    assert "  results.csv, checkpoints/\n" in console.export_text()


# --- a default run, as a user sees it -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """``python train.py`` on a small world, one epoch, progress bars off: what its terminal shows."""
    root = tmp_path_factory.mktemp("terminal")
    out = root / "run"
    args = [sys.executable, "train.py", "data.world.scale=0.02", "finetune.epochs=1", "wiseft.alphas=[0.0,0.5,1.0]",
            "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", f"paths.data_dir={root / 'data'}",
            f"hydra.run.dir={out}"]
    proc = subprocess.run(args, cwd=REPO, env=cli_env(WISEFT_PROGRESS="0"), capture_output=True, text=True,
                          timeout=600)
    return proc, out


def test_default_run_prints_a_few_lines_once_each_and_ends_with_the_summary(default_run):
    proc, out = default_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.rstrip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    # One of them: the toy world's generation, on first use only; one row per method beside WiSE-FT; one more, the
    # one-standard-error line under the table, only when that rule chose a smaller alpha than the best held-out one.
    moved = sum(1 for line in lines if line.startswith("alpha ") and "smallest within" in line)
    summary = json.loads((out / "summary.json").read_text())
    assert moved == (summary["chosen_alpha"] != summary["selection"]["best_alpha"]), "\n".join(lines)
    assert len(lines) - moved <= 16, "\n".join(lines)
    assert len(set(lines)) == len(lines), "\n".join(lines)
    assert lines[0].startswith("generated ") and "toy-world images" in lines[0]
    assert lines[1] == ("fine-tuning toy-clip end to end on photo for 1 epoch, then evaluating 3 alphas on 7 sets")
    assert lines[2] == f"run folder: {out} (full log: train.log)"
    table = lines.index(next(line for line in lines if "WiSE-FT top-1 accuracy (%)" in line))
    chosen = next(line for line in lines[table + 1:] if line.split()[0] == "WiSE-FT")
    assert chosen.split()[1:3] == [f"{summary['chosen_alpha']:g}", f"{summary['chosen']['photo']:.1f}"]
    assert lines[-2].startswith(f"W&B run (offline): {out}/wandb/offline-run-")
    assert lines[-1] == "  wandb leet <it> to browse it in the terminal, wandb sync <it> to upload it"


def test_third_party_info_goes_to_train_log_not_the_terminal(default_run):
    proc, out = default_run
    terminal = proc.stdout + proc.stderr
    log = (out / "train.log").read_text()
    for line in ("Parsing model identifier", "Seed set to 0", "GPU available", "`Trainer.fit` stopped"):
        assert line not in terminal and line in log, line
    assert not re.search(r"^(INFO|wandb):", terminal, re.MULTILINE)
    assert "LeafSpec" not in terminal and "Tip:" not in terminal
    assert "alpha=0.50" in log  # the sweep's rows: in the log, and in the table on the terminal
    assert "checks done before the run folder was created: reusing them" in log  # the data was scanned once


def test_model_summary_in_train_log_counts_flops(default_run):
    _, out = default_run
    log = (out / "train.log").read_text()
    total = re.search(r"^(\S+ \S?)\s+Total Flops$", log, re.MULTILINE)
    assert total is not None and total.group(1).strip() not in ("0", ""), log[-3000:]
