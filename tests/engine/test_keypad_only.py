"""With no speech model in place the engine starts in keypad-only mode (or refuses, if configured)."""
from __future__ import annotations

from pathlib import Path

import pytest

from foundation.config import load_settings
from ivr.engine import Engine, NullRecorder
from ivr.metrics import EngineMetrics
from ivr.speech.recognizer import KeypadOnlyRecognizer
from testkit.fakes import ToneSynthesizer
from voice_models import ModelError


def _settings(tmp_path: Path, mode: str):  # type: ignore[no-untyped-def]
    return load_settings(environ={
        "VERATUR__ASR__MODEL": str(tmp_path / "no-such-model"),
        "VERATUR__ASR__WHISPER__MODEL": str(tmp_path / "no-such-whisper"),
        "VERATUR__ASR__ON_MISSING_MODEL": mode,
        "VERATUR__DATA_DIR": str(tmp_path),
    })


async def test_missing_model_starts_keypad_only(tmp_path: Path) -> None:
    engine = await Engine.create(_settings(tmp_path, "keypad_only"), EngineMetrics(),
                                 synthesizer=ToneSynthesizer(), recorder=NullRecorder(),
                                 dialogue_factory=lambda info: None)  # type: ignore[arg-type,return-value]
    try:
        assert isinstance(engine.recognizer, KeypadOnlyRecognizer)
    finally:
        await engine.close()


async def test_missing_model_can_refuse_to_start(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        await Engine.create(_settings(tmp_path, "fail"), EngineMetrics(), synthesizer=ToneSynthesizer(),
                            recorder=NullRecorder(), dialogue_factory=lambda info: None)  # type: ignore[arg-type,return-value]
