"""Shared test fixtures: one seeded ``rng`` per test, and ``require`` for optional backends."""

from __future__ import annotations

import importlib
import os

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
