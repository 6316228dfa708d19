"""Shared fixtures of the toy-world tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from wiseft.toy.world import ensure_world

#: Scale of the small worlds the fast tests generate (a few hundred images, about a second).
TINY_SCALE = 0.02


@pytest.fixture(scope="session")
def tiny_scale() -> float:
    """Scale of :func:`tiny_world`."""
    return TINY_SCALE


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny world (seed 0), generated once per test session."""
    return ensure_world(tmp_path_factory.mktemp("toy-worlds"), seed=0, scale=TINY_SCALE)
