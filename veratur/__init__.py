"""Veratur: the voice portal product — configuration, CLI and process supervision around the packages
`ivr` (telephony engine), `case_bridge` (citizen record and web), `dialogs` (Rasa project) and `voice_models`."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
