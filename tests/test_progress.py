"""Progress bars: drawn on a terminal, nested steps share one display, silent elsewhere."""

import io
import logging
import sys

import pytest
from rich.console import Console

from wiseft.runtime import progress_bars as progress


@pytest.fixture
def terminal(monkeypatch):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    monkeypatch.setattr(progress, "_console", lambda: console)
    monkeypatch.delenv("WISEFT_PROGRESS", raising=False)
    return out


def test_nested_steps_share_one_display_and_finish(terminal):
    seen = []
    with progress.step("sweep", total=2) as advance:
        live = progress._progress
        for alpha in (0.0, 1.0):
            seen += list(progress.track(range(3), f"evaluating alpha={alpha}"))
            assert progress._progress is live  # the inner bar joined the outer display
            advance(1)
        assert [t.description for t in live.tasks] == ["sweep"]  # finished inner bars are removed
        assert live.tasks[0].completed == 2
    assert progress._progress is None and seen == [0, 1, 2, 0, 1, 2]
    text = terminal.getvalue()
    assert "sweep" in text and "2/2" in text


def test_no_bars_when_switched_off_or_not_a_terminal(terminal, monkeypatch):
    monkeypatch.setenv("WISEFT_PROGRESS", "0")
    assert list(progress.track([1, 2], "quiet")) == [1, 2]
    assert terminal.getvalue() == "" and progress._progress is None
    monkeypatch.delenv("WISEFT_PROGRESS")
    monkeypatch.setattr(progress, "_console", lambda: Console(file=io.StringIO(), force_terminal=False))
    with progress.step("log file") as advance:
        advance(1)
    assert progress._progress is None


def test_console_log_lines_go_through_the_live_display_while_bars_show(terminal):
    # A handler made before the bars holds the real stderr, which would bypass rich and garble the display.
    handler = logging.StreamHandler(sys.__stderr__)
    logger = logging.getLogger("wiseft.test_progress")
    logger.addHandler(handler)
    try:
        with progress.step("outer"):
            assert handler.stream is sys.stderr and sys.stderr is not sys.__stderr__
        assert handler.stream is sys.__stderr__
    finally:
        logger.removeHandler(handler)
