"""Audio helpers for the engine core: frame energy (for VAD), resampling between the TTS rate and the call rate,
and WAV reading. numpy/scipy only; G.711 stays at the RTP edge (pjsua2)."""
from __future__ import annotations

import io
import math
import wave
from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

SILENCE_DB = -100.0      # energy reported for digital silence (log of zero is undefined)
FULL_SCALE = 32768.0


def energy_db(pcm: bytes) -> float:
    """RMS level of s16le PCM in dB relative to full scale (0 dBFS = a full-scale square wave)."""
    if len(pcm) < 2:
        return SILENCE_DB
    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2).astype(np.float32)
    mean_square = float(np.dot(samples, samples)) / samples.size
    if mean_square <= 0.0:
        return SILENCE_DB
    return max(SILENCE_DB, 10.0 * math.log10(mean_square / (FULL_SCALE * FULL_SCALE)))


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample s16le mono PCM with a polyphase filter (anti-aliased), clipping to 16 bits."""
    if from_rate == to_rate or not pcm:
        return pcm
    ratio = Fraction(to_rate, from_rate)
    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2).astype(np.float32)
    out = resample_poly(samples, ratio.numerator, ratio.denominator)
    return np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes()


def read_wav(data: bytes) -> tuple[bytes, int]:
    """(s16le mono PCM, sample rate) from WAV bytes; stereo is mixed down. Raises ValueError on other formats."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a PCM WAV file: {exc}") from exc
    if width != 2:
        raise ValueError(f"WAV sample width {width * 8} bits, expected 16")
    if channels > 1:
        samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels).astype(np.int32)
        frames = (samples.sum(axis=1) // channels).astype("<i2").tobytes()
    return frames, rate


def pcm_ms(pcm_len: int, sample_rate: int) -> int:
    """Duration in milliseconds of `pcm_len` bytes of s16le mono PCM."""
    return pcm_len * 1000 // (2 * sample_rate)
