"""The post-fit WiSE-FT sweep as a Lightning callback."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.func import functional_call

from wiseft.data.datamodule import EvalSet, WiSEFTDataModule
from wiseft.data.features import FeatureDataModule
from wiseft.io.checkpoints import load_weights, save_weights
from wiseft.methods.text_head import weight_mix
from wiseft.review.results import CURVE_PNG, PRIMARY, plot_curve, write_rows, write_summary
from wiseft.review.robustness import LinearFit, add_effective_robustness
from wiseft.review.wandb import log_sweep
from wiseft.runtime.progress_bars import step
from wiseft.sweep.engine import DEFAULT_CACHE_BYTES, WeightPath, method_names, sweep_stats
from wiseft.sweep.logits import mixed_logit_stats
from wiseft.sweep.progress import SweepProgress, fingerprint, progress_path
from wiseft.sweep.stats import DEFAULT_BINS, TOTAL, width
from wiseft.sweep.summary import Columns, Row, rows_from_stats, summarize_methods, sweep_alphas

log = logging.getLogger(__name__)

#: Builds a further weight-space method after fitting: ``(trainer, module, theta_0, theta_1) -> WeightPath``.
PathFactory = Callable[[L.Trainer, L.LightningModule, dict[str, torch.Tensor], dict[str, torch.Tensor]], WeightPath]

ZEROSHOT_CKPT = "zeroshot.safetensors"
FINETUNED_CKPT = "finetuned.safetensors"
CHOSEN_CKPT = "wiseft_chosen.safetensors"


def _cpu_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class WiSEFTSweep(L.Callback):
    """Snapshots the zero-shot weights when fitting is set up; after fitting, sweeps alpha and writes the results.

    Outputs (in ``output_dir``): ``results.csv``, ``results.jsonl``, ``summary.json``, ``curve.png`` and, with
    ``save_checkpoints``, ``checkpoints/{zeroshot,finetuned,wiseft_chosen}.safetensors``. The zero-shot snapshot
    is taken before Lightning restores a checkpoint, so a resumed run interpolates from the true zero-shot weights;
    each evaluation set finished by the sweep is recorded in ``sweep_progress.jsonl``, so a relaunched sweep skips
    it (:mod:`wiseft.sweep.progress`). The models of the WiSE-FT path, in the sweep and in the checkpoints, are
    written by the classifier's :func:`~wiseft.methods.text_head.weight_mix` (FLYP's head follows its text tower).
    """

    def __init__(
        self,
        output_dir: str,
        alphas: Sequence[float],
        select_on: str = "val",
        save_checkpoints: bool = True,
        baselines: Mapping[str, LinearFit] | None = None,
        upload_checkpoint: bool = False,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        ensemble: bool = True,
        calibration_bins: int = DEFAULT_BINS,
        extra_paths: Sequence[PathFactory] = (),
        zeroshot: Mapping[str, torch.Tensor] | None = None,
        finetune: str | None = None,
        within_se: float = 0.0,
    ) -> None:
        """Args:
        output_dir: Run folder.
        alphas: Mixing coefficients.
        select_on: ``val`` (held-out reference data) or ``reference``.
        save_checkpoints: Write the three safetensors checkpoints.
        baselines: Effective-robustness fits by result column (see :func:`wiseft.review.robustness.resolve_baselines`);
            each adds an ``er_<column>`` column to the results.
        upload_checkpoint: Also log the chosen-alpha checkpoint to W&B as a model artifact.
        cache_bytes: Bound on the decoded evaluation images held at once during the sweep.
        ensemble: Also evaluate the output-space ensemble of the zero-shot and fine-tuned models (rows of method
            ``ensemble``; no extra forward pass).
        calibration_bins: Bins of the ECE columns (0: top-1 only, no ``ece_*``/``nll_*`` columns).
        extra_paths: Further weight-space methods, each built after fitting from ``(trainer, module, theta_0,
            theta_1)`` (for example a Fisher-weighted merge); evaluated on the same decoded images.
        zeroshot: The zero-shot weights, when the module handed to ``fit`` no longer holds them (LP-FT's second
            stage starts from the probe's head); by default they are snapshotted from the module at setup.
        finetune: How the model was fine-tuned (``e2e``, ``lpft``, ...), recorded as the summary's ``finetune``.
        within_se: Choose the smallest alpha within this many standard errors of the best held-out accuracy
            (0: the best; see :func:`wiseft.sweep.summary.summarize`).
        """
        self.output_dir = Path(output_dir)
        self.alphas = list(alphas)
        self.select_on = select_on
        self.save_checkpoints = save_checkpoints
        self.baselines = dict(baselines or {})
        self.upload_checkpoint = upload_checkpoint
        self.cache_bytes = cache_bytes
        self.ensemble = ensemble
        self.calibration_bins = calibration_bins
        self.extra_paths = list(extra_paths)
        self.zeroshot = None if zeroshot is None else {k: v.detach().to("cpu") for k, v in zeroshot.items()}
        self.finetune = finetune
        self.within_se = within_se
        self.theta_0: dict[str, torch.Tensor] | None = None
        self.curves: dict[str, list[Row]] | None = None
        self.summary: dict[str, Any] | None = None

    @property
    def checkpoint_dir(self) -> Path:
        """Where the safetensors checkpoints go."""
        return self.output_dir / "checkpoints"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Before Lightning restores a checkpoint (on_fit_start comes after): a run resumed with ckpt_path into a
        # new folder must still snapshot the zero-shot weights, not the restored fine-tuned ones.
        if stage != "fit" or self.theta_0 is not None:
            return
        path = self.checkpoint_dir / ZEROSHOT_CKPT
        if path.is_file():
            self.theta_0, _ = load_weights(path)
            log.info("zero-shot weights read from %s", path)
            return
        self.theta_0 = self.zeroshot if self.zeroshot is not None else _cpu_copy(pl_module.model)
        if trainer.is_global_zero:
            save_weights(self.theta_0, path, self._metadata(pl_module, alpha=0.0))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.theta_0 is None:
            raise RuntimeError("the zero-shot snapshot is missing: setup did not run")
        datamodule = trainer.datamodule
        if not isinstance(datamodule, WiSEFTDataModule):
            raise TypeError("WiSEFTSweep needs the run's WiSEFTDataModule")
        eval_sets = datamodule.eval_sets
        columns = Columns(
            val=next(s.name for s in eval_sets if s.role == "val"),
            reference=next(s.name for s in eval_sets if s.role == "reference"),
            shifts=tuple(s.name for s in eval_sets if s.role == "shift"),
        )
        model = pl_module.model
        theta_1 = _cpu_copy(model)
        grid = sweep_alphas(self.alphas)
        # Lightning's teardown has moved the module to the CPU by now; the sweep runs on the training device.
        device = trainer.strategy.root_device
        # Every process evaluates its own unpadded shard; the integer statistics are summed over processes.
        shard = (trainer.global_rank, trainer.world_size)
        bins = self.calibration_bins
        paths = [WeightPath(PRIMARY, self.theta_0, theta_1, weight_mix(model))]
        paths += [factory(trainer, pl_module, self.theta_0, theta_1) for factory in self.extra_paths]
        if (isinstance(datamodule, FeatureDataModule) and len(paths) == 1
                and _only_head_differs(self.theta_0, theta_1)):
            one = _logit_stats(datamodule, eval_sets, copy.deepcopy(model.head).to(device), self.theta_0, theta_1,
                               grid, shard, device, bins)
            # With only the head fine-tuned, the logits are linear in alpha: weight space = output space.
            methods = method_names(paths, self.ensemble)
            stats = one[None].expand(len(methods), *one.shape).clone()
            log.info("linear sweep: logits interpolated from the cached features (%d alphas)", len(grid))
        else:
            methods = method_names(paths, self.ensemble)
            loaders = [datamodule.eval_loader(s, shard) for s in eval_sets]
            sets = {s.name: [s.role, len(loader.sampler)] for s, loader in zip(eval_sets, loaders, strict=True)}
            progress = SweepProgress(progress_path(self.output_dir, *shard),
                                     fingerprint(self.theta_0, theta_1, grid, sets, {"methods": methods, "bins": bins}))
            done = {j: progress.done[s.name] for j, s in enumerate(eval_sets) if s.name in progress.done}
            model.to(device)
            total = sum(len(loader.sampler) for j, loader in enumerate(loaders) if j not in done)

            def advance_or_stop(advance: Callable[[int], None], n: int) -> None:
                advance(n)
                if trainer.received_sigterm:  # pre-empted: stop now; the finished sets are on disk
                    raise SIGTERMException

            try:
                title = f"sweep: {', '.join(methods)} ({len(grid)} alphas per decoded image)"
                with step(title, total=total) as advance:
                    stats = sweep_stats(model, paths, grid, loaders, device, ensemble=self.ensemble, bins=bins,
                                        cache_bytes=self.cache_bytes,
                                        forward_context=trainer.precision_plugin.forward_context,
                                        on_batch=lambda n: advance_or_stop(advance, n), done=done,
                                        on_dataset=lambda j, c: progress.record(eval_sets[j].name, c))
            finally:
                model.load_state_dict(theta_1)  # leave the module fine-tuned, where Lightning left it
                model.to("cpu")
        stats = trainer.strategy.reduce(stats.to(device), reduce_op="sum").cpu()
        curves = rows_from_stats(grid, stats, columns, methods)
        curves = {name: [add_effective_robustness(row, columns.reference, self.baselines) for row in rows]
                  for name, rows in curves.items()}
        for row in curves[PRIMARY] if trainer.is_global_zero else ():
            log.info("alpha=%.2f  %s", row["alpha"],
                     "  ".join(f"{k}={v:.2f}" for k, v in row.items() if k != "alpha" and not k.startswith("nll_")))
        num_examples = {name: int(stats[0, 0, j, TOTAL]) for j, name in enumerate(columns.all)}
        summary = summarize_methods(curves, columns, self.select_on, PRIMARY, self.within_se, num_examples)
        summary["calibration_bins"] = bins
        summary["baselines"] = {col: fit.to_dict() for col, fit in self.baselines.items()}
        if self.finetune is not None:
            summary["finetune"] = self.finetune
        self.curves, self.summary = curves, summary
        if trainer.is_global_zero:  # the files it reads are rank 0's; other ranks hold no logger run
            states = (_checkpoint_states(model, paths[0], summary["chosen_alpha"], device)
                      if self.save_checkpoints else {})
            self._write(curves, summary, pl_module, states)
            chosen_ckpt = self.checkpoint_dir / CHOSEN_CKPT
            try:
                log_sweep(trainer.loggers, curves, summary, self.output_dir / CURVE_PNG,
                          chosen_ckpt if self.upload_checkpoint and self.save_checkpoints else None)
            except Exception as err:  # the results are on disk already; a logging service must not fail the run
                log.warning("could not send the sweep to the loggers (%s); results are in %s", err, self.output_dir)

    @property
    def rows(self) -> list[Row] | None:
        """The headline method's rows (WiSE-FT), once the sweep has run."""
        return None if self.curves is None else self.curves[PRIMARY]

    def _metadata(self, pl_module: L.LightningModule, alpha: float) -> dict[str, Any]:
        return {**getattr(pl_module, "checkpoint_metadata", {}), "alpha": alpha}

    def _write(self, curves: dict[str, list[Row]], summary: dict[str, Any], pl_module: L.LightningModule,
               states: Mapping[float, dict[str, torch.Tensor]]) -> None:
        write_rows(curves, self.output_dir)
        if summary["columns"]["shifts"]:
            plot_curve(curves, summary, self.output_dir / CURVE_PNG)
        if self.save_checkpoints:
            alpha = summary["chosen_alpha"]
            save_weights(states[1.0], self.checkpoint_dir / FINETUNED_CKPT, self._metadata(pl_module, 1.0))
            save_weights(states[alpha], self.checkpoint_dir / CHOSEN_CKPT, self._metadata(pl_module, alpha))
        # The summary is written last: its presence marks a finished sweep.
        write_summary(summary, self.output_dir)


def _checkpoint_states(model: torch.nn.Module, path: WeightPath, alpha: float,
                       device: torch.device) -> dict[float, dict[str, torch.Tensor]]:
    """The fine-tuned and chosen-alpha weights as ``path`` writes them (CPU copies), on the sweep's device.

    Through the path's ``mix`` rather than :func:`~wiseft.methods.interpolate.interpolate`: a FLYP model's head at
    alpha is rebuilt from the interpolated text tower (already computed, and remembered, by the sweep).
    """
    model.to(device)
    try:
        states = {}
        for a in dict.fromkeys((1.0, float(alpha))):
            path.mix(model, path.theta_0, path.theta_1, a)
            states[a] = _cpu_copy(model)
    finally:
        model.load_state_dict(path.theta_1)
        model.to("cpu")
    return states


def _only_head_differs(theta_0: dict[str, torch.Tensor], theta_1: dict[str, torch.Tensor]) -> bool:
    return all(key.startswith("head.") or torch.equal(t0, theta_1[key]) for key, t0 in theta_0.items())


def _logit_stats(datamodule: FeatureDataModule, eval_sets: list[EvalSet], head: torch.nn.Module,
                 theta_0: dict[str, torch.Tensor], theta_1: dict[str, torch.Tensor], grid: list[float],
                 shard: tuple[int, int], device: torch.device, bins: int) -> torch.Tensor:
    """Statistics of the LC sweep, ``(len(grid), sets, width)``: two head evaluations per set, whatever the grid."""
    heads = [{k.removeprefix("head."): v.to(device) for k, v in theta.items() if k.startswith("head.")}
             for theta in (theta_0, theta_1)]
    rank, world_size = shard
    stats = torch.zeros(len(grid), len(eval_sets), width(bins), dtype=torch.long)
    with torch.no_grad():
        for j, eval_set in enumerate(eval_sets):
            stored = datamodule.features[eval_set.name]
            features = stored.features[rank::world_size].to(device)
            logits_0, logits_1 = (functional_call(head, weights, (features,)) for weights in heads)
            stats[:, j] = mixed_logit_stats(logits_0, logits_1, stored.labels[rank::world_size], grid,
                                            eval_set.dataset.projection, bins)
    return stats
