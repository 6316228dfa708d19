"""A W&B logger whose failures never fail the run: results are always written to the run folder first.

No API key, no network, a service outage, or an error while logging: the logger warns once, switches to offline
mode if it was online, and if W&B cannot run at all it turns into a no-op for the rest of the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from lightning.fabric.loggers.logger import _DummyExperiment
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)

T = TypeVar("T")


class ResilientWandbLogger(WandbLogger):
    """:class:`~lightning.pytorch.loggers.WandbLogger` that degrades instead of raising.

    Starting the W&B run is tried online (when configured so), then offline; if both fail, the logger becomes a
    no-op. Any later W&B error (a dropped connection, a failed upload) is logged once and disables the logger.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._disabled_reason: str | None = None
        if self._offline:
            # Lightning only sets WANDB_MODE, which W&B ignores once it has set up in this process (a multirun's
            # second job, after an online one, would try the network).
            self._wandb_init["mode"] = "offline"

    @property
    def disabled(self) -> bool:
        """Whether W&B failed and this logger has become a no-op."""
        return self._disabled_reason is not None

    def _disable(self, err: BaseException, doing: str) -> None:
        if self._disabled_reason is None:
            self._disabled_reason = f"{type(err).__name__}: {err}"
            log.warning("W&B failed while %s (%s); continuing without W&B, results are still written to the run "
                        "folder", doing, " ".join(str(err).split())[:300])
        self._experiment = _DummyExperiment()

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        try:
            return super().experiment
        except Exception as err:
            if self._offline:
                self._disable(err, "starting the run")
                return self._experiment
            log.warning("W&B could not start online (%s); retrying offline (upload later with `wandb sync`)",
                        " ".join(str(err).split())[:300])
        self._offline = True
        self._wandb_init["mode"] = "offline"  # explicit: W&B keeps the settings it read at its first init
        self._experiment = None
        try:
            return super().experiment
        except Exception as err:
            self._disable(err, "starting the run offline")
            return self._experiment

    @property
    def version(self) -> str | None:
        if isinstance(self._experiment, _DummyExperiment):
            return self._id
        return super().version

    def _guard(self, doing: str, fn: Callable[[], T]) -> T | None:
        if self.disabled:
            return None
        try:
            return fn()
        except Exception as err:
            self._disable(err, doing)
            return None

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        self._guard("logging hyperparameters", lambda: super(ResilientWandbLogger, self).log_hyperparams(params))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._guard("logging metrics", lambda: super(ResilientWandbLogger, self).log_metrics(metrics, step))

    @rank_zero_only
    def log_table(self, *args: Any, **kwargs: Any) -> None:
        self._guard("logging a table", lambda: super(ResilientWandbLogger, self).log_table(*args, **kwargs))

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self._guard("uploading a checkpoint",
                    lambda: super(ResilientWandbLogger, self).after_save_checkpoint(checkpoint_callback))

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self._guard("finishing the run", lambda: super(ResilientWandbLogger, self).finalize(status))

    def finish(self) -> None:
        """Close the W&B run (each job of a multirun must, or the next job's metrics join it)."""
        if self._experiment is not None and not isinstance(self._experiment, _DummyExperiment):
            self._guard("finishing the run", self._experiment.finish)
