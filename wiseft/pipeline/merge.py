"""Model soups and Model Stock over the fine-tuned runs of a multirun, evaluated by the sweep engine.

``python -m wiseft.pipeline.merge <multirun folder> [--methods uniform_soup,greedy_soup,model_stock]
[--vary seed] [--out FOLDER]``

Every method is a family of models indexed by alpha, from the zero-shot weights (alpha 0) to the merged weights
(alpha 1), evaluated over the jobs' alpha grid on every evaluation set, each image decoded once for all methods
(:func:`wiseft.sweep.engine.sweep_stats`):

- ``uniform_soup``: the average of the runs' fine-tuned weights (:func:`wiseft.methods.soups.uniform_soup`);
- ``greedy_soup``: runs added best first while the held-out accuracy strictly rises
  (:func:`wiseft.methods.soups.greedy_soup`);
- ``model_stock``: the runs' average pulled towards the zero-shot weights by Model Stock's per-layer ratio
  (:func:`wiseft.methods.model_stock.model_stock`). It needs no alpha search: its chosen model is alpha 1; the
  rest of its curve is WiSE-FT between the zero-shot model and it, shown for comparison.

Model and data are rebuilt from the jobs' ``config.yaml`` and checkpoint metadata (as ``evaluate.py`` does);
greedy decisions and every method's chosen alpha use held-out reference data only: the validation set, or, when
the jobs held out a fraction of the training set with different seeds, the images every job held out (no job
trained on them). Runs are grouped as :mod:`wiseft.pipeline.merge_runs` describes. The output folder (default
``<multirun>_merge``; one sub-folder per group when there are several) holds what a training run writes:
``config.yaml`` (the first job's, plus a ``merge`` section), ``results.{csv,jsonl}`` with one row per method and
alpha, ``summary.json`` (every method under ``methods``; the ingredients, greedy trace and Model Stock ratios under
``merge``), ``curve.png``, ``checkpoints/<method>.safetensors`` (the merged weights) and the loggers' files: one
W&B run per method, in the sweep's W&B group.

Bad input (one run in a group, runs of different architectures or classes, different zero-shot weights, a
missing checkpoint, an unknown method) fails with one line and exit status 2 before anything is evaluated or
written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from wiseft.config.preflight import report_and_exit
from wiseft.config.schema import DataConfig, DatasetSpec, WiseftConfig, _typed
from wiseft.data.datamodule import EvalSet, WiSEFTDataModule, held_out_split
from wiseft.data.registry import build_dataset
from wiseft.errors import CheckpointError, ConfigError, DataError, WiseftError
from wiseft.io.atomic import atomic_write_text, check_creatable, check_writable
from wiseft.io.checkpoints import check_matches, load_weights, save_weights
from wiseft.methods.interpolate import StateDict, check_compatible
from wiseft.methods.model_stock import model_stock
from wiseft.methods.soups import greedy_soup, uniform_soup
from wiseft.methods.text_head import weight_mix
from wiseft.models.classifier import ClassificationHead, ImageClassifier
from wiseft.models.factory import build_clip
from wiseft.models.text_head import TextHeadClassifier, has_text_tower
from wiseft.models.zeroshot import resolve_templates
from wiseft.pipeline.evaluate import _device
from wiseft.pipeline.merge_runs import Group, Run, check_group, check_same_zeroshot, find_runs, group_runs
from wiseft.review.results import CURVE_PNG, plot_curve, write_rows, write_summary
from wiseft.review.robustness import LinearFit, add_effective_robustness, resolve_baselines
from wiseft.review.wandb import ResilientWandbLogger, log_sweep
from wiseft.runtime.progress_bars import step
from wiseft.runtime.terminal import TerminalFilter, TerminalFormatter
from wiseft.sweep.engine import WeightPath, sweep_stats
from wiseft.sweep.stats import TOTAL, top1
from wiseft.sweep.summary import Columns, Row, rows_from_stats, summarize_methods, sweep_alphas

log = logging.getLogger(__name__)

METHODS = ("uniform_soup", "greedy_soup", "model_stock")
ALIASES = {"uniform": "uniform_soup", "greedy": "greedy_soup", "stock": "model_stock"}
LOGGERS = ("auto", "wandb", "csv", "none")
#: Methods whose model is fixed (no alpha is chosen for them): their chosen row is alpha 1.
NO_SEARCH = ("model_stock",)


def parse_methods(text: str) -> list[str]:
    """``uniform,greedy,model_stock`` -> the methods' result names, in canonical order.

    Raises:
        ConfigError: An unknown or missing method.
    """
    names = [ALIASES.get(m.strip(), m.strip()) for m in text.split(",") if m.strip()]
    for name in names:
        if name not in METHODS:
            raise ConfigError(f"--methods: unknown method '{name}' (choose from {', '.join(METHODS)})")
    if not names:
        raise ConfigError(f"--methods: give at least one of {', '.join(METHODS)}")
    return [m for m in METHODS if m in names]


def parse_vary(text: str) -> list[str] | None:
    """``seed,finetune.lr`` -> the keys runs may differ in and still be merged; ``all`` -> ``None`` (any)."""
    if text.strip() == "all":
        return None
    return [k.strip() for k in text.split(",") if k.strip()]


@dataclass
class Prepared:
    """One group, checked and ready to evaluate (nothing written yet).

    Attributes:
        group: Its runs.
        config: The first run's config (the others differ only in the grouping keys).
        datamodule: Data checked and listed (transforms not set yet).
        wiseft: The jobs' sweep settings (alphas, selection, calibration bins, checkpoints).
        held_out: The samples every run held out from training, when that is not the datamodule's val set.
        held_out_source: Where the held-out data comes from, in words.
        baselines: Effective-robustness fits of the result columns.
    """

    group: Group
    config: dict[str, Any]
    datamodule: WiSEFTDataModule
    wiseft: WiseftConfig
    held_out: list[tuple[str, int]] | None
    held_out_source: str
    baselines: dict[str, LinearFit] = field(default_factory=dict)


def _data_config(config: dict[str, Any]) -> DataConfig:
    data = _typed("data", DataConfig, config["data"])
    data.shifts = {name: _typed(f"data.shifts.{name}", DatasetSpec, node) for name, node in data.shifts.items()}
    return data


def _common_held_out(datamodule: WiSEFTDataModule, runs: Sequence[Run]) -> tuple[list[tuple[str, int]] | None, str]:
    """The reference images no run trained on: ``(samples or None for the datamodule's own val set, source)``."""
    ref = datamodule.config.reference
    if ref.val is not None:
        return None, "data.reference.val"
    seeds = sorted({run.seed for run in runs})
    source = f"data.reference.val_fraction={ref.val_fraction} of the training images"
    if len(seeds) == 1:
        return None, f"{source} (seed {seeds[0]})"
    samples = datamodule.reference_samples()
    held = [held_out_split(samples, ref.val_fraction, seed)[1] for seed in seeds]
    common = set(held[0]).intersection(*held[1:])
    kept = [s for s in held[0] if s in common]
    seeds_text = ", ".join(map(str, seeds))
    if not kept:
        raise DataError(f"data.reference.val: the runs (seeds {seeds_text}) held out disjoint parts of the training "
                        "set, so no reference image is unseen by all of them; give a validation set")
    log.warning("held-out data: the %d training images every run held out (seeds %s), of %d each", len(kept),
                seeds_text, len(held[0]))
    return kept, f"{source} held out by every run (seeds {seeds_text}): {len(kept)} images"


def prepare_group(group: Group, methods: Sequence[str], vary: Sequence[str] | None) -> Prepared:
    """Every check of one group: runs, architectures, classes, zero-shot weights, data layout, held-out data.

    Raises:
        WiseftError: One line naming the problem.
    """
    check_group(group, methods, vary)
    check_same_zeroshot(group)
    first = group.runs[0]
    config = first.job.config
    if not config:
        raise DataError(f"job '{first.name}' has no config.yaml to rebuild its data from")
    data = _data_config(config)
    wiseft = _typed("wiseft", WiseftConfig, config.get("wiseft") or {})
    datamodule = WiSEFTDataModule(data, seed=first.seed)
    datamodule.prepare_data()
    classnames = datamodule.check()
    if classnames != first.meta["classnames"]:
        raise CheckpointError(f"job '{first.name}': its checkpoint's classes are not its data's reference classes "
                              f"(data changed since the run?)")
    held_out, source = _common_held_out(datamodule, group.runs)
    shifts = [name for name, spec in data.shifts.items() if spec.enabled]
    baselines = resolve_baselines(config.get("robustness"), data.reference.name, shifts)
    return Prepared(group, config, datamodule, wiseft, held_out, source, baselines)


def _held_out_accuracy(model: torch.nn.Module, loader: Any, device: torch.device,
                       cache_bytes: int) -> Callable[[StateDict], float]:
    """``state -> top-1 (%)`` on the held-out loader, its images decoded once if they fit in ``cache_bytes``."""
    batches: list[tuple[torch.Tensor, torch.Tensor]] | None = []
    size = 0
    for images, labels in loader:
        size += images.numel() * images.element_size()
        if size > cache_bytes:
            batches = None  # too large to hold: decode it again for every candidate soup
            break
        batches.append((images.to(device), labels.to(device)))
    source = loader if batches is None else batches

    def accuracy(state: StateDict) -> float:
        stats = sweep_stats(model, [WeightPath("held_out", state, state, weight_mix(model))], [1.0], [source],
                            device, bins=0,
                            cache_bytes=cache_bytes)
        return float(top1(stats[0, 0, 0]))

    return accuracy


def _no_search(summary: dict[str, Any], method: str) -> None:
    """A method whose model is fixed: its chosen row is alpha 1, whatever the held-out data says."""
    fixed = {"chosen": summary["methods"][method]["finetuned"], "chosen_alpha": 1.0,
             "selected_on": "none (fixed model, alpha 1)", "selection": None}
    summary["methods"][method].update(fixed)
    if summary["method"] == method:
        summary.update(fixed)


def _merged_models(prep: Prepared, methods: Sequence[str], model: torch.nn.Module, theta_0: StateDict,
                   finetuned: list[StateDict], held_out_loader: Any,
                   device: torch.device) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    names = [run.name for run in prep.group.runs]
    merged: dict[str, dict[str, torch.Tensor]] = {}
    details: dict[str, Any] = {}
    if "uniform_soup" in methods:
        merged["uniform_soup"] = uniform_soup(finetuned, names)
        details["uniform_soup"] = {"ingredients": names}
    if "greedy_soup" in methods:
        score = _held_out_accuracy(model, held_out_loader, device, prep.wiseft.batch_cache_mb << 20)
        with step(f"greedy soup over {len(names)} runs", total=None):
            soup = greedy_soup(finetuned, score, names=names)
        merged["greedy_soup"] = soup.state
        details["greedy_soup"] = {
            "ingredients": [names[i] for i in soup.ingredients], "order": [names[i] for i in soup.order],
            "held_out": {names[i]: soup.held_out[i] for i in range(len(names))}, "accuracy": soup.accuracy,
            "steps": [{**s, "ingredient": names[s["ingredient"]]} for s in soup.steps]}
        log.info("greedy soup: kept %s of %s (held-out %.2f)", details["greedy_soup"]["ingredients"], names,
                 soup.accuracy)
    if "model_stock" in methods:
        merged["model_stock"], ratios = model_stock(theta_0, finetuned)
        values = sorted(ratios.values())
        details["model_stock"] = {"runs": names, "ratio_mean": sum(values) / len(values), "ratio_min": values[0],
                                  "ratio_max": values[-1], "ratios": ratios}
        log.info("Model Stock: per-layer ratio t in [%.3f, %.3f], mean %.3f over %d tensors", values[0], values[-1],
                 details["model_stock"]["ratio_mean"], len(values))
    return merged, details


def merge_group(prep: Prepared, methods: Sequence[str], out_dir: Path, device: torch.device, logger: str,
                run_name: str, source: Path) -> dict[str, Any]:
    """Merge one group's runs, evaluate every method over the alpha grid, and write the run-like output folder.

    Returns:
        The written summary.
    """
    group, datamodule, wiseft = prep.group, prep.datamodule, prep.wiseft
    first = group.runs[0]
    m = first.meta["model"]
    bundle = build_clip(m["name"], m.get("pretrained"), config_file=m.get("config_file"),
                        force_quick_gelu=bool(m.get("force_quick_gelu")), tokenizer_kwargs=m.get("tokenizer_kwargs"),
                        cache_dir=m.get("cache_dir"), precision=m.get("precision", "fp32"))
    theta_0, _ = load_weights(first.zeroshot)
    head = ClassificationHead(torch.zeros_like(theta_0["head.weight"]))
    if has_text_tower(theta_0):  # FLYP's runs: both towers, the head rebuilt from the (merged) text tower
        templates = resolve_templates((prep.config.get("data") or {}).get("templates", "openai_imagenet"))
        classifier = TextHeadClassifier.from_clip(bundle.model, bundle.tokenizer, datamodule.classnames, templates,
                                                  head)
    else:
        classifier = ImageClassifier(bundle.model.visual, head)
    check_matches(classifier, theta_0, str(first.zeroshot))
    classifier.to(device).eval()
    datamodule.set_transforms(bundle.train_transform, bundle.eval_transform)
    eval_sets = datamodule.eval_sets
    if prep.held_out is not None:
        ref = datamodule.config.reference
        val = build_dataset(ref.train, bundle.eval_transform, datamodule.classnames, prep.held_out,
                            "data.reference.val")
        eval_sets = [EvalSet(eval_sets[0].name, "val", val), *eval_sets[1:]]
    columns = Columns(val=eval_sets[0].name, reference=eval_sets[1].name,
                      shifts=tuple(s.name for s in eval_sets if s.role == "shift"))

    finetuned = []
    for run in group.runs:
        state, _ = load_weights(run.finetuned)
        check_compatible(theta_0, state, names=(f"job '{first.name}' zero-shot", f"job '{run.name}' fine-tuned"))
        finetuned.append(state)
    merged, details = _merged_models(prep, methods, classifier, theta_0, finetuned,
                                     datamodule.eval_loader(eval_sets[0]), device)
    del finetuned
    if isinstance(classifier, TextHeadClassifier):
        # A merged FLYP model's head is the one its merged text tower gives, not the merge of the runs' heads.
        for name in methods:
            weight_mix(classifier)(classifier, merged[name], merged[name], 1.0)
            merged[name] = {k: v.detach().to("cpu", copy=True) for k, v in classifier.state_dict().items()}

    grid = sweep_alphas(wiseft.alphas)
    paths = [WeightPath(name, theta_0, merged[name], weight_mix(classifier)) for name in methods]
    loaders = [datamodule.eval_loader(s) for s in eval_sets]
    total = sum(len(s.dataset) for s in eval_sets)
    with step(f"sweep: {', '.join(methods)} ({len(grid)} alphas per decoded image)", total=total) as advance:
        stats = sweep_stats(classifier, paths, grid, loaders, device, bins=wiseft.calibration_bins,
                            cache_bytes=wiseft.batch_cache_mb << 20, on_batch=advance)
    curves = rows_from_stats(grid, stats, columns, methods)
    curves = {name: [add_effective_robustness(row, columns.reference, prep.baselines) for row in rows]
              for name, rows in curves.items()}
    num_examples = {name: int(stats[0, 0, j, TOTAL]) for j, name in enumerate(columns.all)}
    summary = summarize_methods(curves, columns, wiseft.select_on, methods[0], wiseft.select_within_se, num_examples)
    for name in methods:
        if name in NO_SEARCH:
            _no_search(summary, name)
    summary["calibration_bins"] = wiseft.calibration_bins
    summary["baselines"] = {col: fit.to_dict() for col, fit in prep.baselines.items()}
    summary["merge"] = {"source": str(source), "jobs": [r.name for r in group.runs], "group": group.key,
                        "held_out": {"column": columns.val, "examples": summary["num_examples"][columns.val],
                                     "source": prep.held_out_source}, **details}

    check_writable(out_dir)
    config = {**prep.config, "merge": {"source": str(source), "methods": list(methods),
                                       "jobs": [r.name for r in group.runs], "group": group.key}}
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))
    write_rows(curves, out_dir)
    if columns.shifts:
        plot_curve(curves, summary, out_dir / CURVE_PNG)
    if wiseft.save_checkpoints:
        for name in methods:
            save_weights(merged[name], out_dir / "checkpoints" / f"{name}.safetensors",
                         {"model": m, "classnames": first.meta["classnames"], "alpha": 1.0, "method": name,
                          "jobs": [r.name for r in group.runs]})
    write_summary(summary, out_dir)  # last: its presence marks a finished merge
    _log(prep.config, logger, out_dir, run_name, source, curves, summary, config)
    return summary


def _loggers(config: dict[str, Any], choice: str, out_dir: Path, run_name: str, source: Path) -> list[Any]:
    """The loggers of the merge: those the jobs used (``auto``), W&B, CSV or none; W&B in the sweep's group."""
    from lightning.pytorch.loggers import CSVLogger

    node = config.get("logger") or {}
    kinds = [k for k in ("wandb", "csv") if isinstance(node.get(k), dict)] if choice == "auto" else [choice]
    loggers: list[Any] = []
    for kind in kinds:
        spec = node.get(kind) or {}
        if kind == "wandb":
            loggers.append(ResilientWandbLogger(
                project=spec.get("project", "wiseft"), entity=spec.get("entity"), name=run_name,
                group=spec.get("group") or source.name, job_type="merge", save_dir=str(out_dir),
                offline=bool(spec.get("offline", True)), log_model=False,
                settings=spec.get("settings") or {"quiet": True, "silent": bool(spec.get("offline", True))}))
        elif kind == "csv":
            loggers.append(CSVLogger(save_dir=str(out_dir), name="csv"))
    return loggers


def _log(job_config: dict[str, Any], choice: str, out_dir: Path, run_name: str, source: Path,
         curves: dict[str, list[Row]], summary: dict[str, Any], config: dict[str, Any]) -> None:
    loggers = _loggers(job_config, choice, out_dir, run_name, source)
    try:
        for logger in loggers:
            logger.log_hyperparams(config)
        log_sweep(loggers, curves, summary, out_dir / CURVE_PNG)
    except Exception as err:  # the results are on disk already; a logging service must not fail the merge
        log.warning("could not send the merge to the loggers (%s); results are in %s", err, out_dir)
    finally:
        for logger in loggers:
            if isinstance(logger, ResilientWandbLogger):
                logger.finish()


def merge_multirun(root: str | Path, methods: Sequence[str] = METHODS, vary: Sequence[str] | None = ("seed",),
                   out: str | Path | None = None, device: str = "auto", logger: str = "auto") -> list[Path]:
    """Check every group of the multirun, then merge and evaluate each; return the output folders.

    Args:
        root: A Hydra multirun folder of finished training jobs.
        methods: Among :data:`METHODS`.
        vary: Keys runs may differ in and still be merged (``None``: any).
        out: Output folder (default ``<root>_merge``); one sub-folder per group when there are several.
        device: ``auto`` (CUDA when available), or a torch device.
        logger: ``auto`` (the jobs' loggers), ``wandb``, ``csv`` or ``none``.

    Raises:
        WiseftError: Bad input, before anything is evaluated or written.
    """
    root = Path(root).expanduser()
    methods = parse_methods(",".join(methods))
    if logger not in LOGGERS:
        raise ConfigError(f"--logger: must be one of {', '.join(LOGGERS)}, got '{logger}'")
    resolved = root.resolve()
    out_dir = Path(out).expanduser() if out is not None else resolved.with_name(f"{resolved.name}_merge")
    if out_dir.resolve().is_relative_to(resolved):
        raise ConfigError(f"--out: '{out_dir}' is inside the multirun folder, whose review would read it as a job; "
                          "choose a folder outside it")
    check_creatable(out_dir)
    torch_device = _device(device)
    groups = group_runs(find_runs(root), vary)
    prepared = [prepare_group(group, methods, vary) for group in groups]
    base = resolved.name
    folders = []
    for i, prep in enumerate(prepared):
        folder = out_dir if len(prepared) == 1 else out_dir / str(i)
        name = f"{base}/merge" if len(prepared) == 1 else f"{base}/merge{i}"
        log.info("merging %s: jobs %s", prep.group.label, ", ".join(r.name for r in prep.group.runs))
        merge_group(prep, methods, folder, torch_device, logger, name, resolved)
        folders.append(folder)
    return folders


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m wiseft.pipeline.merge`` command."""
    parser = argparse.ArgumentParser(prog="python -m wiseft.pipeline.merge",
                                     description="Model soups and Model Stock over the fine-tuned runs of a multirun.")
    parser.add_argument("multirun", help="a Hydra multirun folder of finished training jobs (with checkpoints)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, among {', '.join(METHODS)} (aliases: uniform, greedy, stock)")
    parser.add_argument("--vary", default="seed",
                        help="keys runs may differ in and still be merged (default: seed); 'all' merges every run")
    parser.add_argument("--out", default=None, help="output folder (default: <multirun>_merge)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda:1, ...")
    parser.add_argument("--logger", default="auto", choices=LOGGERS,
                        help="auto: the loggers the jobs used (W&B runs go to the sweep's group)")
    args = parser.parse_args(argv)
    # As train.py's terminal: wiseft's own progress lines and every warning, not the other packages' INFO lines.
    console = logging.StreamHandler()
    console.addFilter(TerminalFilter("WARNING", {"wiseft": "INFO", "__main__": "INFO"}))
    console.setFormatter(TerminalFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[console])
    try:
        folders = merge_multirun(args.multirun, parse_methods(args.methods), parse_vary(args.vary), args.out,
                                 args.device, args.logger)
    except (WiseftError, PermissionError) as err:
        report_and_exit(err)
    for folder in folders:
        print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
