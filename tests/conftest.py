"""Shared test fixtures: one seeded ``rng`` per test, and ``require`` for optional backends."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None, print_blob=True, derandomize=True)
settings.register_profile("dev", max_examples=20, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


@pytest.fixture
def rng():
    """A fresh, seeded generator for each test (no shared mutable state between tests)."""
    return np.random.default_rng(12345)


def require(module_name: str):
    """Import an optional backend. In CI (CI=true) a missing backend is a failure, never a skip."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(module_name)
    return pytest.importorskip(module_name)


DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture
def data_dir():
    """The shared real-data directory (../shared/data beside the checkout): missing is a failure
    in CI, a skip elsewhere."""
    if not DATA_DIR.is_dir():
        message = f"the real data directory {DATA_DIR.resolve()} is missing (see ../shared/data/README.md)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return DATA_DIR
