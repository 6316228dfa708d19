"""Checks that need no model, no torch and no data: run first, so bad input fails in about a second.

:func:`preflight` validates the config values, every ``_target_`` and the output folder. It runs as a Hydra
callback before Hydra creates the run folder (a bad config leaves no empty folder behind, and an unwritable one
gets a one-line error instead of Hydra's traceback), and again at the start of :func:`wiseft.pipeline.train.train`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from wiseft.config.schema import Settings, to_settings
from wiseft.config.secrets import redact_text
from wiseft.config.targets import check_targets
from wiseft.errors import ConfigError, WiseftError, one_line
from wiseft.io.atomic import check_creatable

#: Exit status of a run stopped by bad input.
EXIT_BAD_INPUT = 2
#: The sections :func:`~wiseft.config.schema.to_settings` checks (a ``train`` config has them all).
TRAIN_SECTIONS = ("model", "data", "finetune", "wiseft")


def preflight(cfg: DictConfig, output_dir: str | Path | None = None) -> Settings:
    """Validate ``cfg`` and, if given, that ``output_dir`` can be written, without creating anything.

    Raises:
        ConfigError: A bad value or a refused ``_target_`` (names the key).
        PermissionError: The output folder cannot be written (names it).
    """
    settings = to_settings(cfg)
    check_targets(cfg)
    if output_dir is not None:
        check_creatable(output_dir)
    return settings


def report_and_exit(err: BaseException) -> None:
    """Print ``error: <one line>`` (secrets redacted) to stderr and exit with :data:`EXIT_BAD_INPUT`."""
    print(f"error: {redact_text(one_line(err))}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


class PreflightCallback(Callback):
    """Hydra callback: :func:`preflight` before Hydra creates the output folder of a run."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # what run_job does next; lets ${hydra:...} resolve
        try:
            run_dir = OmegaConf.select(config, "hydra.run.dir")
        except Exception:  # an unresolvable run dir is Hydra's to report
            run_dir = None
        try:
            if all(key in config for key in TRAIN_SECTIONS):
                preflight(config, run_dir)
            else:  # another entry point's config (evaluate.py): what applies to every config
                check_targets(config)
                if run_dir is not None:
                    check_creatable(run_dir)
        except ConfigError as err:
            if isinstance(err.__cause__, InterpolationResolutionError | MissingMandatoryValue):
                return  # may need the job's runtime values (its output folder); train() checks again
            report_and_exit(err)
        except (WiseftError, PermissionError) as err:
            report_and_exit(err)
