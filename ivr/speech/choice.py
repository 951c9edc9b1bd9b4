"""Which recognizer a node runs (`asr.engine`): vosk, whisper, or auto = Vosk when its model (`asr.model`) is in
place, else Whisper when its model is, else keypad only (or refuse to start with `asr.on_missing_model: fail`).
`choose()` only decides (cheap, no model loaded); `build()` loads the chosen model into a provider.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from foundation.config import Settings
from foundation.logs import kv
from ivr.metrics import EngineMetrics
from ivr.speech.recognizer import KeypadOnlyRecognizer, SpeechRecognizer, StreamConfig, VoskRecognizer
from voice_models import ModelError, ModelMissing, locate
from voice_models.whisper import locate_whisper

log = logging.getLogger("ivr.speech.choice")


@dataclass(frozen=True, slots=True)
class AsrChoice:
    engine: str                  # "vosk" | "whisper" | "keypad"
    model_dir: Path | None
    why: str                     # one line for the start-up screen and logs

    @property
    def label(self) -> str:
        if self.engine == "keypad":
            return f"KEYPAD ONLY (no speech model: {self.why})"
        return f"{self.engine} ({self.model_dir})"


def choose(settings: Settings) -> AsrChoice:
    """The recognizer `settings` ask for and that is installed. Raises ModelError when none is and the config
    says fail."""
    asr = settings.asr
    problems: list[str] = []
    if asr.engine in ("vosk", "auto"):
        try:
            return AsrChoice("vosk", locate(asr.model), f"asr.engine={asr.engine}")
        except ModelError as exc:
            problems.append(str(exc))
    if asr.engine in ("whisper", "auto"):
        try:
            return AsrChoice("whisper", locate_whisper(asr.whisper.model), f"asr.engine={asr.engine}")
        except ModelError as exc:
            problems.append(str(exc))
    why = "; ".join(problems)
    if asr.on_missing_model == "fail":
        raise ModelMissing(why)
    return AsrChoice("keypad", None, why)


def whisper_options(settings: Settings):  # type: ignore[no-untyped-def]
    from ivr.speech.whisper import WhisperOptions
    w = settings.asr.whisper
    return WhisperOptions(beam_size=w.beam_size, window=w.window, max_decode_s=w.max_decode_s,
                          initial_prompt=w.initial_prompt)


def load_whisper(settings: Settings, model_dir: Path):  # type: ignore[no-untyped-def]
    """The process's WhisperModel (blocking, ~1 s)."""
    from ivr.speech.whisper import WhisperModel
    return WhisperModel(model_dir, options=whisper_options(settings), cpu_threads=settings.asr.whisper.cpu_threads,
                        parallel=settings.asr.max_parallel_decoders)


def build(choice: AsrChoice, settings: Settings, config: StreamConfig, metrics: EngineMetrics | None,
          executor: ThreadPoolExecutor | None) -> SpeechRecognizer:
    """The provider for `choice` (blocking: loads the model). `executor` is the bounded decoding pool."""
    if choice.engine == "keypad" or choice.model_dir is None:
        log.error("speech recognition OFF, keypad only %s", kv(reason=choice.why, fix="veratur models fetch"))
        return KeypadOnlyRecognizer(config, metrics)
    assert executor is not None
    if choice.engine == "vosk":
        return VoskRecognizer(VoskRecognizer.load_model(choice.model_dir), executor, config, metrics)
    from ivr.speech.whisper import WhisperRecognizer
    return WhisperRecognizer(load_whisper(settings, choice.model_dir), executor, config, metrics)
