"""The Hydra callback that checks a job before Hydra creates its run folder (``conf/hydra/default.yaml``).

Hydra creates the run folder, its ``.hydra/`` configs and the log file before it calls the job, so a check inside
the job would leave them behind (or overwrite them in a folder being resumed). :class:`CheckBeforeRunFolder` runs
the checks in ``on_run_start`` instead: first the ones that need no torch (:func:`~wiseft.config.preflight.preflight`,
about a second), then the rest of :func:`~wiseft.pipeline.checks.check_job`, whose result the job reuses. This
module is imported when Hydra starts, so it imports nothing heavy itself.

A multirun creates its job folders before any job starts; its jobs run the checks themselves.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from wiseft.config.preflight import EXIT_BAD_INPUT, TRAIN_SECTIONS, preflight, preflight_other, report_and_exit
from wiseft.errors import ConfigError, WiseftError


def _job_config(config: DictConfig, run_dir: str) -> DictConfig:
    """What the job will receive: the config without Hydra's node, with Hydra's runtime output folder set.

    ``run_job`` sets ``hydra.runtime.output_dir`` the same way right after this callback; ``${hydra:...}``
    resolves against :class:`HydraConfig`, so the job's config resolves as in the job.
    """
    config = copy.deepcopy(config)
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = os.path.abspath(run_dir)
    HydraConfig.instance().set_config(config)
    job = copy.deepcopy(config)
    with read_write(job), open_dict(job):
        del job["hydra"]
    return job


#: Whether Hydra got as far as starting a run or multirun (so a failure after it is not a composition error).
_started = False


def exit_like_bad_input(main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` function; Hydra's own composition errors exit with status 2, as other bad input.

    Hydra prints an unknown config group option, an unknown key or a value of the wrong type itself and exits
    with status 1, the status of a crash; a failure before any run starts is such an error.
    """
    try:
        main()
    except SystemExit as err:
        if err.code == 1 and not _started:
            sys.exit(EXIT_BAD_INPUT)
        raise


class CheckBeforeRunFolder(Callback):
    """Every cheap check of a run before Hydra creates its folder; one ``error: ...`` line and exit 2 on bad input."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _started
        _started = True
        HydraConfig.instance().set_config(config)  # what run_job does next; lets ${hydra:...} resolve
        try:
            run_dir = OmegaConf.select(config, "hydra.run.dir")
        except Exception:  # an unresolvable run dir is Hydra's to report
            run_dir = None
        try:
            self._check(config, run_dir)
        except ConfigError as err:
            if not isinstance(err.__cause__, InterpolationResolutionError | MissingMandatoryValue):
                report_and_exit(err)
            # else: the value may need what only the job has; train() checks again
        except (WiseftError, PermissionError) as err:
            report_and_exit(err)
        _import_lightning()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _started
        _started = True
        _import_lightning()

    @staticmethod
    def _check(config: DictConfig, run_dir: str | None) -> None:
        if not all(key in config for key in TRAIN_SECTIONS):  # another entry point's config (evaluate.py)
            preflight_other(config, run_dir)
            return
        preflight(config, run_dir)  # no torch yet: bad config values fail in about a second
        if run_dir is not None:
            _import_lightning()  # before the checks build a Trainer: its log lines printed once, filtered
            from wiseft.pipeline.checks import check_job, remember

            remember(run_dir, check_job(_job_config(config, str(run_dir)), run_dir))


def _import_lightning() -> None:
    from wiseft.runtime.terminal import route_lightning_logs

    route_lightning_logs()
