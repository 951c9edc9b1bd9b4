"""`veratur asr transcribe WAV...`: what the live recognizer configuration hears in recordings (for administrators
checking audio, and for tests); `veratur asr which`: which recognizer the node would start with."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from foundation.config import Settings
from ivr.speech.audio_ops import read_wav
from ivr.speech.choice import choose, load_whisper
from voice_models import ModelError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="asr_command", required=True, metavar="ACTION")
    t = sub.add_parser("transcribe", help="print what the configured recognizer hears in WAV files")
    t.add_argument("wavs", nargs="+", type=Path, metavar="WAV", help="16-bit PCM WAV files (any rate, mono/stereo)")
    t.add_argument("--details", action="store_true", help="also print timing and the recognizer's scores")
    sub.add_parser("which", help="print which recognizer the node starts with and why")


def _vosk_text(model_dir: Path, pcm: bytes, rate: int) -> str:
    import json

    import vosk
    vosk.SetLogLevel(-2)
    rec = vosk.KaldiRecognizer(vosk.Model(str(model_dir)), float(rate))
    rec.AcceptWaveform(pcm)
    return " ".join(w for w in json.loads(rec.FinalResult()).get("text", "").split() if w != "[unk]")


def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        choice = choose(settings)
    except ModelError as exc:
        print(f"veratur asr: {exc}", file=sys.stderr)
        return 1
    if args.asr_command == "which":
        print(f"speech recognizer: {choice.label}")
        return 0
    if choice.engine == "keypad" or choice.model_dir is None:
        print(f"veratur asr: no speech model in place, nothing can be transcribed: {choice.why}", file=sys.stderr)
        return 1
    model = load_whisper(settings, choice.model_dir) if choice.engine == "whisper" else None
    status = 0
    for wav in args.wavs:
        try:
            pcm, rate = read_wav(wav.read_bytes())
        except (OSError, ValueError) as exc:
            print(f"{wav}: error: {exc}", file=sys.stderr)
            status = 1
            continue
        t0 = time.perf_counter()
        if model is not None:
            from ivr.speech.answers import clean_text
            result = model.transcribe(pcm, rate)
            text = clean_text(result.text)
            extra = (f"  [{choice.engine} audio={result.audio_s:.2f}s decode={result.decode_s:.3f}s "
                     f"logprob={result.avg_logprob:.2f} no_speech={result.no_speech_prob:.2f} "
                     f"rejected={result.rejected or '-'}]")
        else:
            text = _vosk_text(choice.model_dir, pcm, rate)
            extra = f"  [{choice.engine} decode={time.perf_counter() - t0:.3f}s]"
        print(f"{wav}: {text}" + (extra if args.details else ""), flush=True)
    return status
