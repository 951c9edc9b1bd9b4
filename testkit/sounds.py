"""Real test audio at 8 kHz: espeak-ng speech, and the non-speech that must not cut a prompt."""
from __future__ import annotations

import functools
import subprocess

import numpy as np

from ivr.speech.audio_ops import read_wav, resample
from testkit.fakes import RATE, noise, silence

__all__ = ["speech", "click", "cough", "silence", "noise"]


@functools.lru_cache(maxsize=32)
def speech(text: str, voice: str = "ko", rate: int = RATE, wpm: int = 160) -> bytes:
    """`text` spoken by espeak-ng with `voice`, resampled to `rate` (espeak-ng renders at 22050 Hz)."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "--stdout", text],
                         check=True, capture_output=True, timeout=30).stdout
    pcm, src_rate = read_wav(wav)
    return resample(pcm, src_rate, rate)


def click(rate: int = RATE) -> bytes:
    """A 5 ms line click (a full-scale decaying impulse) inside one 20 ms frame."""
    n = rate * 5 // 1000
    pulse = (20000 * np.exp(-np.arange(n) / (n / 4)) * np.sign(np.sin(np.arange(n)))).astype("<i2").tobytes()
    return pulse + silence(15, rate)


def cough(ms: int = 120, rate: int = RATE) -> bytes:
    """A short broadband burst with a fast attack and decay, loud like a cough into the handset."""
    burst = np.frombuffer(noise(ms, -14.0, rate, seed=7), dtype="<i2").astype(np.float32)
    envelope = np.minimum(1.0, np.linspace(4.0, 0.0, burst.size))
    return (burst * envelope).astype("<i2").tobytes()
