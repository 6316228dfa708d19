"""``train(cfg)``: the whole WiSE-FT job for one composed config (``train.py`` is its Hydra entry point)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from wiseft.config.schema import FisherConfig, Settings
from wiseft.config.secrets import redacted_config
from wiseft.data.features import FeatureDataModule
from wiseft.errors import RunInterrupted
from wiseft.io.atomic import atomic_write_text, check_writable
from wiseft.models.factory import build_clip
from wiseft.models.flyp import FLYPModule
from wiseft.models.linear_probe import LinearProbeModule
from wiseft.models.module import WiSEFTModule
from wiseft.models.performance import apply_performance_options
from wiseft.models.text_head import TextHeadClassifier
from wiseft.models.zeroshot import resolve_templates, zero_shot_classifier
from wiseft.pipeline.checks import (
    build_trainer,
    checked_job,
    configured_callbacks,
    instantiate_group,
    trainer_plugins,
)
from wiseft.pipeline.lpft import ProbeStage, zeroshot_state
from wiseft.review.console import print_final_summary, shown_path
from wiseft.review.wandb import ResilientWandbLogger
from wiseft.runtime.exact_resume import ReloadTrainData, StepSeed
from wiseft.runtime.guards import FiniteLossGuard
from wiseft.runtime.launch import distributed_job
from wiseft.runtime.preemption import ResumeCheckpoint
from wiseft.runtime.terminal import route_lightning_logs
from wiseft.sweep.callback import WiSEFTSweep
from wiseft.sweep.fisher_path import FisherPath
from wiseft.sweep.summary import sweep_alphas

log = logging.getLogger(__name__)

SKIPPED_IMAGES = "skipped_images.txt"


MODE_WORDS = {"e2e": "end to end", "linear": "head only (linear classifier)",
              "lpft": "by LP-FT (linear probe, then end to end)", "flyp": "by FLYP (contrastive, both towers)"}


def _describe(settings: Settings) -> str:
    """One line on what the run is about to do (the first line it prints)."""
    how = MODE_WORDS[settings.finetune.mode]
    epochs = settings.finetune.epochs
    num_sets = 2 + sum(spec.enabled for spec in settings.data.shifts.values())  # reference val and test, shifts
    return (f"fine-tuning {settings.model.name} {how} on {settings.data.reference.name} for {epochs} "
            f"epoch{'s' if epochs > 1 else ''}, then evaluating {len(sweep_alphas(settings.wiseft.alphas))} alphas "
            f"on {num_sets} sets")


def fisher_config(settings: Settings) -> FisherConfig:
    """``wiseft.fisher``, switched off (with a warning) for FLYP, whose models the Fisher path cannot mix.

    FLYP's models carry the text tower and rebuild the head from it at every alpha; the Fisher path mixes the image
    classifier's weights only. Skipping rather than failing keeps a multirun over finetune modes going.
    """
    fisher = settings.wiseft.fisher
    if fisher.examples and settings.finetune.mode == "flyp":
        log.warning("wiseft.fisher.examples=%d: the Fisher merge is not implemented for finetune=flyp; skipped",
                    fisher.examples)
        return dataclasses.replace(fisher, examples=0)
    return fisher


def train(cfg: DictConfig) -> float:
    """Fine-tune, sweep alpha and write the results for one config.

    Args:
        cfg: A composed ``train`` config (``conf/train.yaml``).

    Returns:
        ``avg_ref_shifts`` at the chosen alpha (the objective a Hydra sweeper maximises), or the chosen row's
        reference accuracy when there are no shift sets.
    """
    route_lightning_logs()
    job = checked_job(cfg)
    settings, datamodule, ckpt_path = job.settings, job.datamodule, job.ckpt_path
    out_dir = check_writable(cfg.paths.output_dir)  # creates the folder: after the checks, so bad input leaves none
    # Secrets pulled in from the environment are redacted from everything written or logged.
    resolved = redacted_config(cfg)
    callbacks = configured_callbacks(cfg)
    ckpt_dir = out_dir / "checkpoints" / "lightning"
    if rank_zero_only.rank == 0:  # under DDP every rank runs this function
        log.info(_describe(settings))
        log.info("run folder: %s (full log: train.log)", shown_path(out_dir))
    L.seed_everything(settings.seed, workers=True)

    m = settings.model
    bundle = build_clip(m.name, m.pretrained, config_file=m.config_file, force_quick_gelu=m.force_quick_gelu,
                        tokenizer_kwargs=m.tokenizer_kwargs, cache_dir=m.cache_dir, precision=m.precision,
                        aug_cfg=m.aug_cfg, allow_download=m.allow_download)
    templates = resolve_templates(settings.data.templates)
    mode = settings.finetune.mode
    # FLYP trains the text tower too: its classifier keeps it and derives the head from it.
    build = TextHeadClassifier.from_clip if mode == "flyp" else zero_shot_classifier
    classifier = build(bundle.model, bundle.tokenizer, datamodule.classnames, templates)
    apply_performance_options(classifier.image_encoder, m.grad_checkpointing, m.compile, m.compile_mode)
    datamodule.set_transforms(bundle.training_transform(settings.finetune.augment), bundle.eval_transform)
    metadata = {"model": dataclasses.asdict(m), "classnames": datamodule.classnames, "finetune": mode}

    zeroshot, probe = None, None
    if mode == "linear":
        # The frozen encoder's features are computed once (cached on disk) and the head trains on them.
        datamodule = FeatureDataModule.from_images(datamodule, classifier.image_encoder,
                                                   settings.finetune.feature_cache)
        module = LinearProbeModule(classifier, settings.finetune)
    elif mode == "flyp":
        module = FLYPModule(classifier, settings.finetune)
    else:
        module = WiSEFTModule(classifier, settings.finetune)
        if mode == "lpft":
            # The probe replaces the head before the end-to-end fit: WiSE-FT's alpha = 0 is taken now.
            zeroshot = zeroshot_state(classifier)
            # Resuming the second stage restores every weight, the head included: no probe to train or read.
            if ckpt_path is None:
                probe = ProbeStage(cfg, settings.finetune, datamodule, classifier, out_dir, metadata)
    module.checkpoint_metadata = metadata

    fisher = fisher_config(settings)
    sweep = WiSEFTSweep(str(out_dir), settings.wiseft.alphas, settings.wiseft.select_on,
                        settings.wiseft.save_checkpoints, baselines=job.baselines,
                        upload_checkpoint=settings.wiseft.upload_checkpoint,
                        cache_bytes=settings.wiseft.batch_cache_mb << 20, ensemble=settings.wiseft.ensemble,
                        calibration_bins=settings.wiseft.calibration_bins,
                        extra_paths=[FisherPath(fisher, settings.seed, out_dir)] if fisher.examples else [],
                        zeroshot=zeroshot, finetune=mode, within_se=settings.wiseft.select_within_se)
    resume_ckpt = ResumeCheckpoint(ckpt_dir)
    callbacks += [sweep, resume_ckpt, StepSeed(settings.seed), ReloadTrainData(),
                  FiniteLossGuard(resume_ckpt.ckpt_path)]
    loggers = instantiate_group(cfg, "logger")
    trainer = build_trainer(cfg, callbacks, loggers, out_dir)
    if trainer.is_global_zero:  # under DDP every rank runs this function; rank 0 writes
        # The exact, resolved config next to the results it produced.
        atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
        if datamodule.skipped:
            log.warning("left out %d unreadable image(s), listed in %s", len(datamodule.skipped),
                        out_dir / SKIPPED_IMAGES)
            atomic_write_text(out_dir / SKIPPED_IMAGES, "".join(f"{p}\t{why}\n" for p, why in datamodule.skipped))
    for logger in loggers:
        logger.log_hyperparams(resolved)
    # LP-FT's probe, unless an earlier launch kept it: its Trainer is the job's first (under DDP, the one whose
    # launch starts the other processes, which then run both stages).
    probe_trainer = probe.trainer(trainer_plugins(cfg)) if probe is not None and not probe.done else None
    try:
        with distributed_job(probe_trainer or trainer, cfg, out_dir):
            if probe is not None:
                probe.run(probe_trainer)
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
    if trainer.is_global_zero:
        print_final_summary(summary, out_dir)
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
