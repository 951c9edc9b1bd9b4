"""Shared fixtures. Area fixtures live in each tests/<area>/conftest.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from foundation.paths import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests leave screenshots, recordings and captures for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
