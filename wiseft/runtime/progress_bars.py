"""Rich progress bars for the long steps outside Lightning's fit loop (zero-shot head, evaluation, alpha sweep).

Nested steps share one live display: the outermost step starts it, inner steps add a bar to it and remove
their bar when done. Bars are drawn only on rank 0 and only on a terminal (logs stay clean); set
``WISEFT_PROGRESS=0`` to switch them off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich import get_console
from rich.console import Console
from rich.errors import LiveError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

_progress: Progress | None = None
_depth = 0


def _console() -> Console:
    return get_console()


def _rank_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def enabled() -> bool:
    """Whether bars are drawn: rank 0, a terminal, and ``WISEFT_PROGRESS`` not ``0``."""
    return os.environ.get("WISEFT_PROGRESS", "1") != "0" and _rank_zero() and _console().is_terminal


def _noop(advance: int = 1) -> None:
    return None


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    # Exactly StreamHandler: FileHandler subclasses it and must keep writing to its file.
    return [h for lg in loggers for h in lg.handlers if type(h) is logging.StreamHandler]


@contextlib.contextmanager
def _logs_above_bars() -> Iterator[None]:
    """Send console log lines through the live display's redirected stdout/stderr, so they print above the bars.

    Logging handlers keep the stream they were created with, which bypasses rich's redirection and garbles the
    display (and the log lines) while bars are live.
    """
    targets = {id(sys.__stdout__): sys.stdout, id(sys.__stderr__): sys.stderr}
    swapped = []
    for handler in _stream_handlers():
        target = targets.get(id(handler.stream))
        if target is not None and target is not handler.stream:
            swapped.append((handler, handler.setStream(target)))
    try:
        yield
    finally:
        for handler, old in swapped:
            handler.setStream(old)


@contextlib.contextmanager
def step(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar for one step; yields ``advance(n=1)``.

    Args:
        description: Shown left of the bar.
        total: Number of units (``None``: unknown, a pulsing bar).
    """
    global _progress, _depth
    if not enabled():
        yield _noop
        return
    if _progress is None:
        progress = Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=_console())
        try:
            progress.start()
        except LiveError:  # another live display owns the terminal (older rich cannot nest): go without bars
            yield _noop
            return
        _progress = progress
    progress = _progress
    _depth += 1
    task_id = progress.add_task(description, total=total)
    try:
        if _depth == 1:
            with _logs_above_bars():
                yield lambda advance=1: progress.advance(task_id, advance)
        else:
            yield lambda advance=1: progress.advance(task_id, advance)
    finally:
        _depth -= 1
        if _depth == 0:
            progress.stop()
            _progress = None
        else:
            progress.remove_task(task_id)


def track(iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``iterable`` under a progress bar (``total`` defaults to ``len(iterable)`` when it has one)."""
    if total is None and hasattr(iterable, "__len__"):
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with step(description, total) as advance:
        for item in iterable:
            yield item
            advance(1)
