"""What the terminal shows: wiseft's own progress lines and every warning; the rest goes to ``train.log`` only.

Hydra's logging configs (``conf/hydra/job_logging/wiseft.yaml``, ``conf/hydra/hydra_logging/wiseft.yaml``) attach
:class:`TerminalFilter` and :class:`TerminalFormatter` to the console handler; the run's log file gets every record
unfiltered. ``log_level=INFO`` (or ``hydra.verbose=true``, which also turns on DEBUG) brings the other packages'
messages back to the terminal.

:func:`route_lightning_logs` stops Lightning from printing its records a second time through a handler of its own;
:func:`configure_warnings` routes Python warnings into the same logs and drops the few known third-party warnings
that a user cannot act on.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

#: Third-party warnings that say nothing about the user's job: ``(category, message regex)``.
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # torch >= 2.10 deprecates LeafSpec, which Lightning's batch handling still constructs.
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
)


def parse_level(level: str | int) -> int:
    """A logging level from its name (``"info"``, ``"WARNING"``) or number.

    Raises:
        ValueError: Not a level name.
    """
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    value = logging.getLevelName(str(level).upper())
    if not isinstance(value, int):
        raise ValueError(f"'{level}' is not a logging level (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
    return value


class TerminalFilter(logging.Filter):
    """Pass a record to the terminal when it reaches ``level``, or the level ``show`` gives its logger.

    Args:
        level: The lowest level shown for any logger (``log_level``, default ``WARNING``).
        show: Logger name -> the lowest level shown for it and its children when lower than ``level``; the
            longest matching name wins (``{"wiseft": "INFO", "wiseft.sweep": "WARNING"}``).

    When the root logger is at DEBUG (``hydra.verbose=true``) every record passes.
    """

    def __init__(self, level: str | int = "WARNING", show: Mapping[str, str | int] | None = None) -> None:
        super().__init__()
        try:
            self.level = parse_level(level)
        except ValueError:  # Hydra configures logging before any check: the preflight reports a bad log_level
            self.level = logging.WARNING
        # Longest names first, so the most specific entry decides.
        self.show = sorted(((name, parse_level(lvl)) for name, lvl in (show or {}).items()),
                           key=lambda item: -len(item[0]))

    def floor(self, name: str) -> int:
        """The lowest level shown for logger ``name``."""
        for prefix, level in self.show:
            if name == prefix or name.startswith(f"{prefix}."):
                return min(level, self.level)
        return self.level

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            return True
        return record.levelno >= self.floor(record.name)


class TerminalFormatter(logging.Formatter):
    """The message alone for INFO and below, ``warning: ...`` / ``error: ...`` above (as the one-line errors)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        return text if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {text}"


def route_lightning_logs() -> None:
    """Let Lightning's log records reach the terminal and ``train.log`` once, through the root's handlers.

    Importing Lightning gives its ``lightning`` logger a console handler of its own while records also propagate
    to the root, so under Hydra (whose root handlers print and file every record) each line appeared twice, once
    unfiltered. Imports Lightning if needed.
    """
    import lightning  # noqa: F401  (its import adds the handler this removes)

    logger = logging.getLogger("lightning")
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler:
            logger.removeHandler(handler)
    logger.propagate = True


def configure_warnings() -> None:
    """Send Python warnings to the logs (terminal and ``train.log``) and drop :data:`KNOWN_WARNINGS`."""
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    logging.captureWarnings(True)
