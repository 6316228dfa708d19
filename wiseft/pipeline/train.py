"""``train(cfg)``: the whole WiSE-FT job for one composed config (``train.py`` is its Hydra entry point)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from wiseft.config.preflight import preflight
from wiseft.config.schema import Settings
from wiseft.config.secrets import redacted_config
from wiseft.data.datamodule import WiSEFTDataModule
from wiseft.data.features import FeatureDataModule
from wiseft.errors import RunInterrupted
from wiseft.io.atomic import atomic_write_text, check_writable
from wiseft.io.checkpoint_io import SafeCheckpointIO
from wiseft.io.safeload import load_torch_file
from wiseft.models.factory import build_clip, check_model_args
from wiseft.models.linear_probe import LinearProbeModule
from wiseft.models.module import WiSEFTModule
from wiseft.models.performance import apply_performance_options
from wiseft.models.zeroshot import resolve_templates, zero_shot_classifier
from wiseft.review.robustness import LinearFit, resolve_baselines
from wiseft.review.wandb import ResilientWandbLogger
from wiseft.runtime.exact_resume import ReloadTrainData, StepSeed
from wiseft.runtime.guards import FiniteLossGuard
from wiseft.runtime.launch import distributed_job
from wiseft.runtime.preemption import ResumeCheckpoint
from wiseft.runtime.resume import check_same_run, select_resume_checkpoint
from wiseft.sweep.callback import WiSEFTSweep

log = logging.getLogger(__name__)

SKIPPED_IMAGES = "skipped_images.txt"


def _instantiate_dict(node: DictConfig | None) -> list[Any]:
    if not node:
        return []
    return [hydra.utils.instantiate(v) for v in node.values() if v is not None and "_target_" in v]


def run_baselines(cfg: DictConfig, settings: Settings) -> dict[str, LinearFit]:
    """The effective-robustness fits (``cfg.robustness``) that apply to this run's result columns."""
    node = cfg.get("robustness")
    config = OmegaConf.to_container(node, resolve=True) if node is not None else None
    shifts = [name for name, spec in settings.data.shifts.items() if spec.enabled]
    return resolve_baselines(config, settings.data.reference.name, shifts)


def prepare(cfg: DictConfig) -> tuple[Settings, WiSEFTDataModule]:
    """Every check that is cheap, before any model is built: config values and targets, output folder, weight
    files, data layout and sample lists."""
    settings = preflight(cfg, cfg.paths.output_dir)
    resolve_templates(settings.data.templates)
    m = settings.model
    model_args = {"config_file": m.config_file, "cache_dir": m.cache_dir, "force_quick_gelu": m.force_quick_gelu,
                  "allow_download": m.allow_download}
    check_model_args(m.name, m.pretrained, **model_args, fetch=False)
    datamodule = WiSEFTDataModule(settings.data, seed=settings.seed)
    datamodule.prepare_data()
    datamodule.check()
    check_model_args(m.name, m.pretrained, **model_args)  # downloads a missing tag, once the data is known good
    check_writable(cfg.paths.output_dir)  # creates the folder: last, so bad input leaves nothing behind
    return settings, datamodule


def _trainer_plugins(cfg: DictConfig) -> list[Any]:
    """The configured ``trainer.plugins`` plus :class:`SafeCheckpointIO`, unless a checkpoint I/O is configured."""
    from lightning.fabric.plugins import CheckpointIO

    configured = cfg.trainer.get("plugins")
    if configured is None:
        configured = []
    elif not OmegaConf.is_list(configured):
        configured = [configured]
    plugins = [hydra.utils.instantiate(p) if OmegaConf.is_dict(p) else p for p in configured]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(SafeCheckpointIO())
    return plugins


def _checkpoint_dirs(callbacks: list[Any], out_dir: Path) -> list[Path]:
    from lightning.pytorch.callbacks import ModelCheckpoint

    dirs = [out_dir / "checkpoints" / "lightning"]
    dirs += [Path(cb.dirpath) for cb in callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    return dirs


def train(cfg: DictConfig) -> float:
    """Fine-tune, sweep alpha and write the results for one config.

    Args:
        cfg: A composed ``train`` config (``conf/train.yaml``).

    Returns:
        ``avg_ref_shifts`` at the chosen alpha (the objective a Hydra sweeper maximises), or the chosen row's
        reference accuracy when there are no shift sets.
    """
    settings, datamodule = prepare(cfg)
    baselines = run_baselines(cfg, settings)
    out_dir = Path(cfg.paths.output_dir)
    # Secrets pulled in from the environment are redacted from everything written or logged.
    resolved = redacted_config(cfg)
    check_same_run(out_dir, resolved)
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    if not cfg.trainer.get("enable_progress_bar", True):
        # Lightning refuses a progress-bar callback with the bar disabled; the switch is the user's last word.
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    ckpt_dir = out_dir / "checkpoints" / "lightning"
    ckpt_path = select_resume_checkpoint(cfg.get("ckpt_path"), bool(cfg.get("auto_resume", True)), out_dir,
                                         _checkpoint_dirs(callbacks, out_dir))
    if ckpt_path is not None:
        load_torch_file(ckpt_path, "ckpt_path", mmap=True)  # truncated or unsafe: fail now, not after the build
    L.seed_everything(settings.seed, workers=True)

    m = settings.model
    bundle = build_clip(m.name, m.pretrained, config_file=m.config_file, force_quick_gelu=m.force_quick_gelu,
                        tokenizer_kwargs=m.tokenizer_kwargs, cache_dir=m.cache_dir, precision=m.precision,
                        aug_cfg=m.aug_cfg, allow_download=m.allow_download)
    templates = resolve_templates(settings.data.templates)
    classifier = zero_shot_classifier(bundle.model, bundle.tokenizer, datamodule.classnames, templates)
    apply_performance_options(classifier.image_encoder, m.grad_checkpointing, m.compile, m.compile_mode)
    datamodule.set_transforms(bundle.training_transform(settings.finetune.augment), bundle.eval_transform)

    if settings.finetune.mode == "linear":
        # The frozen encoder's features are computed once (cached on disk) and the head trains on them.
        datamodule = FeatureDataModule.from_images(datamodule, classifier.image_encoder,
                                                   settings.finetune.feature_cache)
        module = LinearProbeModule(classifier, settings.finetune)
    else:
        module = WiSEFTModule(classifier, settings.finetune)
    module.checkpoint_metadata = {"model": dataclasses.asdict(m), "classnames": datamodule.classnames}

    sweep = WiSEFTSweep(str(out_dir), settings.wiseft.alphas, settings.wiseft.select_on,
                        settings.wiseft.save_checkpoints, baselines=baselines,
                        upload_checkpoint=settings.wiseft.upload_checkpoint,
                        cache_bytes=settings.wiseft.batch_cache_mb << 20, ensemble=settings.wiseft.ensemble,
                        calibration_bins=settings.wiseft.calibration_bins)
    resume_ckpt = ResumeCheckpoint(ckpt_dir)
    callbacks += [sweep, resume_ckpt, StepSeed(settings.seed), ReloadTrainData(),
                  FiniteLossGuard(resume_ckpt.ckpt_path)]
    loggers = _instantiate_dict(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                                 default_root_dir=str(out_dir), plugins=_trainer_plugins(cfg))
    if trainer.is_global_zero:  # under DDP every rank runs this function; rank 0 writes
        # The exact, resolved config next to the results it produced.
        atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
        if datamodule.skipped:
            log.warning("left out %d unreadable image(s), listed in %s", len(datamodule.skipped),
                        out_dir / SKIPPED_IMAGES)
            atomic_write_text(out_dir / SKIPPED_IMAGES, "".join(f"{p}\t{why}\n" for p, why in datamodule.skipped))
    for logger in loggers:
        logger.log_hyperparams(resolved)
    try:
        with distributed_job(trainer, cfg, out_dir):
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None,
                        weights_only=True)
    except SIGTERMException as err:
        raise RunInterrupted(f"stopped by SIGTERM, checkpoint saved to '{resume_ckpt.ckpt_path}'; relaunch with "
                             f"hydra.run.dir={out_dir} to resume") from err
    finally:
        _finish_loggers(loggers)
    summary = sweep.summary
    if summary is None:  # not rank 0 of a run whose sweep was skipped, or fit interrupted
        return float("nan")
    chosen = summary["chosen"]
    return float(chosen.get("avg_ref_shifts", chosen[summary["columns"]["reference"]]))


def _finish_loggers(loggers: list[Any]) -> None:
    # Each job of a multirun must close its W&B run, or the next job's metrics land in the same run.
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, ResilientWandbLogger):
            logger.finish()
        elif isinstance(logger, WandbLogger) and logger._experiment is not None:
            try:
                logger.experiment.finish()
            except Exception as err:  # results are on disk; W&B trouble must not fail the run
                log.warning("could not close the W&B run: %s", err)
