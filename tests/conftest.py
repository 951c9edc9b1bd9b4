"""Shared fixtures. Area fixtures live in each tests/<area>/conftest.py; the toolkit they are built from is
`testkit/` (worker, sipp, raw SIP, pcaps, node, databases, fakes)."""
from __future__ import annotations

from pathlib import Path

import pytest

from foundation.paths import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"

RASA_FIXTURES = frozenset({"rasa_model", "rasa_stack"})
"""Session fixtures that train (once per content hash) and start a real Rasa + action server."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for `pytest -n N --dist loadgroup` (make test): a file's tests stay in one process, so module
    fixtures (a worker, a portal's prompts) start once; every test that needs the real Rasa runs in the same
    process, so the one session Rasa stack is started once, not once per xdist worker."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        group = "rasa" if fixtures & RASA_FIXTURES else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests leave screenshots, recordings and captures for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
