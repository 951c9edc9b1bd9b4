"""The voice suite's scripts. The end-to-end run lives in tests/dialogs/test_voice_calls.py, beside the session's
real Rasa + action server fixtures, so that one Rasa stack serves both."""
from __future__ import annotations

from pathlib import Path

SCRIPTS = Path(__file__).parent / "scripts"
