"""Checks that need no model, no torch and no data: run first, so bad input fails in about a second.

:func:`preflight` validates the config values (every section and the top-level values), every ``_target_`` and
the output folder. It runs first in the Hydra callback that checks a job before Hydra creates the run folder
(:mod:`wiseft.pipeline.hydra_checks`), and again at the start of :func:`wiseft.pipeline.checks.check_job`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from wiseft.config.schema import EvaluateJobConfig, Settings, to_settings, typed_top_level
from wiseft.config.secrets import redact_text
from wiseft.config.targets import check_targets
from wiseft.errors import one_line
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


def preflight_other(cfg: DictConfig, output_dir: str | Path | None = None) -> None:
    """What applies to a config of another entry point (``evaluate.py``): targets, top-level values, output folder.

    Raises:
        ConfigError: A refused ``_target_`` or a wrongly typed top-level value (names the key).
        PermissionError: The output folder cannot be written (names it).
    """
    check_targets(cfg)
    if "finetuned" in cfg:
        typed_top_level(cfg, EvaluateJobConfig)
    if output_dir is not None:
        check_creatable(output_dir)
