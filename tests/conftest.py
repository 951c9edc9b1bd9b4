"""Shared fixtures. Area fixtures live in each tests/<area>/conftest.py; the toolkit they are built from is
`testkit/` (worker, sipp, raw SIP, pcaps, node, databases, fakes)."""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest

from foundation.paths import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"

RASA_FIXTURES = ("rasa_model", "rasa_stack")
"""Session fixtures that train (once per content hash) and start a real Rasa + action server."""
RASA_GROUP = "rasa"


def _work_unit(nodeid: str) -> str:
    """The work unit a test belongs to: its file, or "rasa" for every file whose tests use the real Rasa."""
    path = nodeid.split("::", 1)[0]
    return RASA_GROUP if _uses_rasa(path) else path


@functools.cache
def _uses_rasa(path: str) -> bool:
    try:
        text = (REPO_ROOT / path).read_text(encoding="utf-8")
    except OSError:
        return False
    return any(re.search(rf"\b{name}\s*:", text) for name in RASA_FIXTURES)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`pytest -n N --dist loadgroup` (make test): a file's tests stay in one process, so module fixtures (a node,
    a worker, a portal's prompts) start once, and every file that needs the real Rasa runs in one process, so the
    session's Rasa stack starts once. xdist's own loadgroup cannot do this with pytest 9: it renames items
    (`item._nodeid`) that pytest 9 no longer reads, so every test became its own unit, two Rasa stacks ran and
    module fixtures started once per process. This scheduler groups by node id alone, on the controller."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileAndRasaScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid)

    return FileAndRasaScheduling(config, log)


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests leave screenshots, recordings and captures for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
