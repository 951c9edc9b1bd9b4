"""Where the node's files live: the repository root and the folders under it."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
