"""Evaluate and interpolate given checkpoints without training (``python evaluate.py finetuned=... [zeroshot=...]``).

Zero-shot and fine-tuned classifier checkpoints in, the full WiSE-FT sweep out: the same files as a training
run (``config.yaml``, ``results.{csv,jsonl}``, ``summary.json``, ``curve.png``, the chosen-alpha checkpoint) and,
with ``export.enabled``, the chosen model as a plain open_clip model folder (see :mod:`wiseft.models.export`).
Without ``zeroshot``, the zero-shot head is rebuilt from the checkpoint's model config and the data's prompts.
A FLYP checkpoint (it holds the text tower) is swept over both towers, the head at each alpha rebuilt from the
interpolated text tower with the data's prompts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from wiseft.config.schema import DataConfig, DatasetSpec, EvaluateJobConfig, WiseftConfig, _typed, typed_top_level
from wiseft.config.secrets import redacted_config
from wiseft.config.targets import check_targets
from wiseft.data.datamodule import WiSEFTDataModule
from wiseft.errors import CheckpointError, ConfigError
from wiseft.io.atomic import atomic_write_text, check_writable
from wiseft.io.checkpoints import check_matches, load_weights, save_weights
from wiseft.methods.interpolate import check_compatible
from wiseft.methods.text_head import weight_mix
from wiseft.models.classifier import ClassificationHead, ImageClassifier
from wiseft.models.export import export_state
from wiseft.models.factory import build_clip
from wiseft.models.text_head import TextHeadClassifier, has_text_tower
from wiseft.models.zeroshot import resolve_templates, zero_shot_classifier
from wiseft.review.console import print_final_summary
from wiseft.review.results import CURVE_PNG, PRIMARY, plot_curve, write_rows, write_summary
from wiseft.review.robustness import add_effective_robustness, resolve_baselines
from wiseft.review.wandb import log_sweep
from wiseft.runtime.progress_bars import step
from wiseft.sweep.callback import CHOSEN_CKPT
from wiseft.sweep.engine import run_sweep
from wiseft.sweep.summary import Columns, Row, summarize_methods, sweep_alphas

log = logging.getLogger(__name__)

#: Model-config keys that must agree between the two checkpoints (the architecture and where it started).
_SAME_MODEL_KEYS = ("name", "pretrained", "config_file", "force_quick_gelu")


def _device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(spec)
    except RuntimeError as err:
        raise ConfigError(f"device: '{spec}' is not a torch device") from err


def _read(path: Any, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path:
        raise ConfigError(f"{key}: give a classifier checkpoint (.safetensors), e.g. "
                          f"{key}=<run>/checkpoints/{'finetuned' if key == 'finetuned' else 'zeroshot'}.safetensors")
    if not Path(str(path)).expanduser().is_file():
        raise CheckpointError(f"{key}: checkpoint '{path}' does not exist")
    state, meta = load_weights(Path(str(path)).expanduser())
    for needed in ("model", "classnames"):
        if needed not in meta:
            raise CheckpointError(f"{key}: checkpoint '{path}' has no '{needed}' metadata (not written by wiseft?)")
    return state, meta


def evaluate_checkpoints(cfg: DictConfig) -> float:
    """Sweep alpha between two checkpoints and write the results for one ``evaluate`` config.

    Returns:
        ``avg_ref_shifts`` at the chosen alpha (the reference accuracy when there are no shifts), like ``train``.
    """
    check_targets(cfg)
    typed_top_level(cfg, EvaluateJobConfig)
    data = _typed("data", DataConfig, cfg.data)
    data.shifts = {name: _typed(f"data.shifts.{name}", DatasetSpec, node) for name, node in data.shifts.items()}
    wiseft = _typed("wiseft", WiseftConfig, cfg.wiseft)
    device = _device(str(cfg.get("device", "auto")))
    theta_1, meta_1 = _read(cfg.get("finetuned"), "finetuned")
    theta_0, meta_0 = _read(cfg.zeroshot, "zeroshot") if cfg.get("zeroshot") else (None, None)
    if meta_0 is not None:
        for key in _SAME_MODEL_KEYS:
            if meta_0["model"].get(key) != meta_1["model"].get(key):
                raise CheckpointError(f"the checkpoints differ in model.{key}: zeroshot has "
                                      f"'{meta_0['model'].get(key)}', finetuned '{meta_1['model'].get(key)}'")
        if meta_0["classnames"] != meta_1["classnames"]:
            raise CheckpointError("the zeroshot and finetuned checkpoints have different classes")
        check_compatible(theta_0, theta_1)
    shifts = [name for name, spec in data.shifts.items() if spec.enabled]
    robustness = cfg.get("robustness")
    baselines = resolve_baselines(OmegaConf.to_container(robustness, resolve=True) if robustness else None,
                                  data.reference.name, shifts)
    templates = resolve_templates(data.templates)
    out_dir = check_writable(cfg.paths.output_dir)
    datamodule = WiSEFTDataModule(data, seed=int(cfg.seed))
    datamodule.prepare_data()
    classnames = datamodule.check()
    if classnames != meta_1["classnames"]:
        raise CheckpointError(f"finetuned: the checkpoint's classes {meta_1['classnames'][:5]}... are not the data's "
                              f"reference classes {classnames[:5]}... (same names, same order needed)")
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(redacted_config(cfg))))

    m = meta_1["model"]
    bundle = build_clip(m["name"], m.get("pretrained"), config_file=m.get("config_file"),
                        force_quick_gelu=bool(m.get("force_quick_gelu")), tokenizer_kwargs=m.get("tokenizer_kwargs"),
                        cache_dir=m.get("cache_dir"), precision=m.get("precision", "fp32"))
    with_text = has_text_tower(theta_1)  # FLYP: both towers, the head derived from the text tower
    if theta_0 is None:
        build = TextHeadClassifier.from_clip if with_text else zero_shot_classifier
        classifier = build(bundle.model, bundle.tokenizer, classnames, templates)
        theta_0 = {k: v.detach().clone() for k, v in classifier.state_dict().items()}
        check_compatible(theta_0, theta_1)
    else:
        head = ClassificationHead(torch.zeros_like(theta_1["head.weight"]))
        classifier = (TextHeadClassifier.from_clip(bundle.model, bundle.tokenizer, classnames, templates, head)
                      if with_text else ImageClassifier(bundle.model.visual, head))
    check_matches(classifier, theta_1, str(cfg.finetuned))
    classifier.to(device).eval()
    mix = weight_mix(classifier)

    def weights_at(alpha: float) -> dict[str, torch.Tensor]:
        mix(classifier, theta_0, theta_1, alpha)
        return {k: v.detach().to("cpu", copy=True) for k, v in classifier.state_dict().items()}

    datamodule.set_transforms(bundle.train_transform, bundle.eval_transform)

    eval_sets = datamodule.eval_sets
    columns = Columns(val=next(s.name for s in eval_sets if s.role == "val"),
                      reference=next(s.name for s in eval_sets if s.role == "reference"),
                      shifts=tuple(s.name for s in eval_sets if s.role == "shift"))
    loaders = {s.name: datamodule.eval_loader(s) for s in eval_sets}
    with step("WiSE-FT sweep (alphas)", total=len(sweep_alphas(wiseft.alphas))) as advance:

        def report(row: Row) -> None:
            advance(1)
            # Into the log file: the terminal gets the table the run ends with.
            log.debug("alpha=%.2f  %s", row["alpha"], "  ".join(f"{k}={v:.2f}" for k, v in row.items() if k != "alpha"))

        curves = run_sweep(classifier, theta_0, theta_1, wiseft.alphas, loaders, columns, device, report,
                           ensemble=wiseft.ensemble, bins=wiseft.calibration_bins, mix=mix)
    curves = {name: [add_effective_robustness(row, columns.reference, baselines) for row in rows]
              for name, rows in curves.items()}
    num_examples = {s.name: len(s.dataset) for s in eval_sets}
    summary = summarize_methods(curves, columns, wiseft.select_on, PRIMARY, wiseft.select_within_se, num_examples)
    summary["calibration_bins"] = wiseft.calibration_bins
    summary["baselines"] = {col: fit.to_dict() for col, fit in baselines.items()}
    summary["checkpoints"] = {"zeroshot": str(cfg.zeroshot) if cfg.get("zeroshot") else None,
                              "finetuned": str(cfg.finetuned)}
    if meta_1.get("finetune"):  # how the checkpoint was trained, as a training run records it
        summary["finetune"] = meta_1["finetune"]

    write_rows(curves, out_dir)
    if columns.shifts:
        plot_curve(curves, summary, out_dir / CURVE_PNG)
    alpha = summary["chosen_alpha"]
    chosen_meta = {"model": m, "classnames": classnames, "alpha": alpha}
    chosen_path = out_dir / "checkpoints" / CHOSEN_CKPT
    if wiseft.save_checkpoints or cfg.export.enabled:
        chosen = weights_at(alpha)
        if wiseft.save_checkpoints:
            save_weights(chosen, chosen_path, chosen_meta)
        if cfg.export.enabled:
            export_alpha = alpha if cfg.export.alpha is None else float(cfg.export.alpha)
            state = chosen if export_alpha == alpha else weights_at(export_alpha)
            paths = export_state(state, {**chosen_meta, "alpha": export_alpha}, out_dir / "export",
                                 cfg.export.get("pretrained"))
            summary["export"] = {"alpha": export_alpha, **{k: str(v) for k, v in paths.items()}}
    write_summary(summary, out_dir)  # last: its presence marks a finished sweep
    _log(cfg, curves, summary, out_dir / CURVE_PNG,
         chosen_path if wiseft.upload_checkpoint and wiseft.save_checkpoints else None)
    print_final_summary(summary, out_dir)
    chosen_row = summary["chosen"]
    return float(chosen_row.get("avg_ref_shifts", chosen_row[columns.reference]))


def _log(cfg: DictConfig, curves: dict[str, list[Row]], summary: dict[str, Any], figure: Path,
         checkpoint: Path | None) -> None:
    import hydra
    from lightning.pytorch.loggers import WandbLogger

    node = cfg.get("logger")
    loggers = [hydra.utils.instantiate(v) for v in node.values() if v is not None and "_target_" in v] if node else []
    try:
        for logger in loggers:
            logger.log_hyperparams(redacted_config(cfg))
        log_sweep(loggers, curves, summary, figure, checkpoint)
    except Exception as err:  # the results are on disk already; a logging service must not fail the run
        log.warning("could not send the sweep to the loggers (%s); results are in %s", err, figure.parent)
    finally:
        for logger in loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                try:
                    logger.experiment.finish()
                except Exception as err:
                    log.warning("could not close the W&B run: %s", err)
