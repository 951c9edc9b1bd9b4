"""Real human Spanish speech for tests and benchmarks: the Asterisk Spanish prompts (a Mexican Spanish speaker,
8 kHz WAV, Debian `asterisk-core-sounds-es-wav`) with their transcripts (Debian `asterisk-core-sounds-es`).

What it gives:
- `recordings()` / `recording(name)`: every spoken recording that has a transcript (`Recording.pcm()`, `.text`).
- `phrase_subset()`: a FIXED list of phrases chosen by a rule (not by how well a recognizer does on them).
- `digit_pcm()`, `splice_digits()`, `folios()`: digit strings and case folios spliced from the digit recordings.
- the telephone channel: `mulaw_channel()` (G.711 μ-law round trip), `add_noise()` (white / pink / babble at an
  SNR measured on the voiced part), `channel()` both at once, `noise_pcm()`, `pad()`.
- scoring: `normalize_text()` (lower case, no accents or punctuation, numerals as Spanish words) and `wer()`.

Everything is s16le mono PCM bytes at `RATE` unless a rate is passed. `missing_reason()` says why the recordings
cannot be used (packages not installed) so a test can skip with that exact reason.
"""
from __future__ import annotations

import functools
import gzip
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from case_bridge.folio import FOLIO_PAYLOAD_DIGITS, damm_digit
from ivr.speech.audio_ops import read_wav, resample

__all__ = [
    "APT_PACKAGES", "RATE", "Recording", "SOUNDS_DIR", "TRANSCRIPTS", "add_noise", "channel", "digit_pcm",
    "folios", "missing_reason", "mulaw_channel", "mulaw_decode", "mulaw_encode", "noise_pcm", "normalize_text",
    "number_words", "pad", "phrase_subset", "recording", "recordings", "splice_digits", "trim", "wer",
    "word_errors",
]

RATE = 8000
APT_PACKAGES = ("asterisk-core-sounds-es-wav", "asterisk-core-sounds-es")
SOUNDS_DIR = Path(os.environ.get("VERATUR_HUMAN_SOUNDS", "/usr/share/asterisk/sounds/es_MX_f_Allison"))
TRANSCRIPTS = Path(os.environ.get("VERATUR_HUMAN_TRANSCRIPTS",
                                  "/usr/share/doc/asterisk-core-sounds-es/core-sounds-es.txt.gz"))

# The transcript file lists 10.wav under the key "digits/0" a second time ("diez"); the first entry wins for
# "digits/0" and this puts "diez" where its recording is.
_TRANSCRIPT_FIXES = {"digits/10": "diez"}
# Directories whose recordings are single words/letters, not phrases (digits are used through splice_digits).
_NOT_PHRASES = ("digits/", "letters/", "phonetic/", "silence/")


def missing_reason() -> str | None:
    """None when the recordings and transcripts are installed, else a sentence saying what is missing."""
    if not (SOUNDS_DIR / "digits" / "0.wav").is_file():
        return f"human Spanish recordings missing: {SOUNDS_DIR} (Debian package {APT_PACKAGES[0]}, scripts/setup.sh)"
    if not TRANSCRIPTS.is_file():
        return f"human Spanish transcripts missing: {TRANSCRIPTS} (Debian package {APT_PACKAGES[1]}, scripts/setup.sh)"
    return None


@dataclass(frozen=True, slots=True)
class Recording:
    name: str          # path under SOUNDS_DIR without ".wav", e.g. "vm-goodbye", "digits/5"
    path: Path
    text: str          # the transcript as written by the recording's authors (accents are inconsistent)

    def pcm(self, rate: int = RATE) -> bytes:
        return _load(self.path, rate)

    @property
    def words(self) -> int:
        return len(normalize_text(self.text).split())


@functools.lru_cache(maxsize=1024)
def _load(path: Path, rate: int) -> bytes:
    pcm, src = read_wav(path.read_bytes())
    return resample(pcm, src, rate)


@functools.lru_cache(maxsize=1)
def recordings() -> dict[str, Recording]:
    """Spoken recordings with a transcript, by name. Tones and other bracketed non-speech entries are left out."""
    reason = missing_reason()
    if reason:
        raise FileNotFoundError(reason)
    texts: dict[str, str] = {}
    for line in gzip.decompress(TRANSCRIPTS.read_bytes()).decode("utf-8", "replace").splitlines():
        if not line.strip() or line.startswith(";") or ":" not in line:
            continue
        name, text = (part.strip() for part in line.split(":", 1))
        if not text or text.startswith("[") or name in texts:
            continue
        texts[name] = text
    texts.update(_TRANSCRIPT_FIXES)
    out = {}
    for name, text in sorted(texts.items()):
        path = SOUNDS_DIR / f"{name}.wav"
        if path.is_file():
            out[name] = Recording(name, path, text)
    return out


def recording(name: str) -> Recording:
    try:
        return recordings()[name]
    except KeyError:
        raise KeyError(f"no human recording {name!r} with a transcript in {SOUNDS_DIR}") from None


def phrase_subset(n: int = 30, *, min_words: int = 3, max_words: int = 12) -> list[Recording]:
    """A fixed, rule-chosen list of `n` phrases: whole sentences of `min_words`..`max_words` words whose
    transcript has no numerals (the speaker may say a number several ways) and no spelled letters ("U S B"),
    spread evenly over the names in
    alphabetical order. The same list on every machine with the same packages."""
    pool = [r for r in recordings().values()
            if not r.name.startswith(_NOT_PHRASES) and not re.search(r"\d|\b[B-DF-NP-XZ]\b", r.text)
            and min_words <= r.words <= max_words]
    if len(pool) <= n:
        return pool
    step = len(pool) / n
    return [pool[int(i * step)] for i in range(n)]


# ---- digits and folios ----------------------------------------------------------------------------------------

def trim(pcm: bytes, rate: int = RATE, *, below_peak_db: float = 30.0, keep_ms: int = 20) -> bytes:
    """Cut leading and trailing quiet (frames more than `below_peak_db` under the loudest 10 ms frame),
    keeping `keep_ms` either side so consonant onsets survive."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    hop = rate // 100
    if x.size < hop:
        return pcm
    n = x.size // hop
    level = 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1.0)
    loud = np.flatnonzero(level >= level.max() - below_peak_db)
    keep = keep_ms * rate // 1000
    start = max(0, int(loud[0]) * hop - keep)
    end = min(x.size, (int(loud[-1]) + 1) * hop + keep)
    return pcm[start * 2:end * 2]


def digit_pcm(digit: str, rate: int = RATE) -> bytes:
    """One spoken digit ("0".."9"), trimmed of its leading/trailing quiet."""
    if len(digit) != 1 or not digit.isdigit():
        raise ValueError(f"not a digit: {digit!r}")
    return trim(recording(f"digits/{digit}").pcm(rate), rate)


def splice_digits(digits: str, *, gap_ms: int = 120, rate: int = RATE, lead_ms: int = 0, tail_ms: int = 0) -> bytes:
    """`digits` read one by one by the human speaker, `gap_ms` of silence between digits (a caller reading a
    folio pauses 100-300 ms), with optional silence before and after."""
    gap = b"\x00\x00" * (rate * gap_ms // 1000)
    body = gap.join(digit_pcm(d, rate) for d in digits)
    return pad(body, lead_ms, tail_ms, rate)


def folios(n: int = 10, *, seed: int = 11) -> list[str]:
    """`n` valid 8-digit folios (Damm check digit, no leading zero), the same for the same seed."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        payload = str(rng.integers(1, 10)) + "".join(str(d) for d in rng.integers(0, 10, FOLIO_PAYLOAD_DIGITS - 1))
        out.append(payload + damm_digit(payload))
    return out


# ---- the telephone channel ------------------------------------------------------------------------------------

_BIAS = 0x84
_CLIP14 = 8159          # the encoder works on 14-bit magnitudes, as ITU-T G.711 and CPython's audioop do


def mulaw_encode(pcm: bytes) -> bytes:
    """G.711 μ-law encoding, one byte per sample (bit-exact with the reference encoder)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(x), _CLIP14) + (_BIAS >> 2)
    exponent = np.clip(np.floor(np.log2(mag)).astype(np.int32) - 5, 0, 7)
    mantissa = (mag >> (exponent + 1)) & 0x0F
    code = np.where(mag > 0x1FFF, 0x7F, (exponent << 4) | mantissa)     # clipped: the top code
    return (code ^ mask).astype(np.uint8).tobytes()


def mulaw_decode(data: bytes) -> bytes:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -mag, mag).astype("<i2").tobytes()


def mulaw_channel(pcm: bytes) -> bytes:
    """What a G.711 μ-law call leg delivers of `pcm` (8 kHz): encode, then decode."""
    return mulaw_decode(mulaw_encode(pcm))


def pad(pcm: bytes, lead_ms: int = 0, tail_ms: int = 0, rate: int = RATE) -> bytes:
    return b"\x00\x00" * (rate * lead_ms // 1000) + pcm + b"\x00\x00" * (rate * tail_ms // 1000)


def noise_pcm(ms: int, level_db: float, *, kind: str = "white", rate: int = RATE, seed: int = 1) -> bytes:
    """Noise at `level_db` dBFS RMS. kind: "white" (hiss), "pink" (1/f: fans, traffic, line rumble) or "babble"
    (other recordings of the same speaker summed: background voices, the hardest case for a VAD)."""
    samples = rate * ms // 1000
    rng = np.random.default_rng(seed)
    if kind == "white":
        x = rng.normal(0.0, 1.0, samples)
    elif kind == "pink":
        spectrum = np.fft.rfft(rng.normal(0.0, 1.0, samples))
        freqs = np.fft.rfftfreq(samples, 1.0 / rate)
        spectrum /= np.sqrt(np.maximum(freqs, 20.0))
        x = np.fft.irfft(spectrum, samples)
    elif kind == "babble":
        x = _babble(samples, rate, rng)
    else:
        raise ValueError(f"unknown noise kind {kind!r} (white, pink, babble)")
    rms = float(np.sqrt(np.mean(x ** 2))) or 1.0
    x = x / rms * 32768 * 10 ** (level_db / 20)
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def _babble(samples: int, rate: int, rng: np.random.Generator, voices: int = 4) -> np.ndarray:
    pool = [r for r in recordings().values() if not r.name.startswith(_NOT_PHRASES) and r.words >= 8]
    out = np.zeros(samples)
    for _ in range(voices):
        acc = np.zeros(0)
        while acc.size < samples:
            rec = pool[int(rng.integers(len(pool)))]
            acc = np.concatenate([acc, np.frombuffer(rec.pcm(rate), dtype="<i2").astype(np.float64)])
        start = int(rng.integers(0, acc.size - samples + 1))
        seg = acc[start:start + samples]
        out += seg / (np.sqrt(np.mean(seg ** 2)) or 1.0)
    return out


def speech_level_db(pcm: bytes, rate: int = RATE) -> float:
    """Active speech level in dBFS: RMS over the 10 ms frames within 30 dB of the loudest (pauses excluded)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    hop = rate // 100
    n = x.size // hop
    if n == 0:
        return -100.0
    power = np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1)
    level = 10 * np.log10(power + 1.0)
    active = power[level >= level.max() - 30.0]
    return float(10 * np.log10(np.mean(active) / 32768 ** 2 + 1e-12))


def add_noise(pcm: bytes, snr_db: float, *, kind: str = "white", rate: int = RATE, seed: int = 1) -> bytes:
    """`pcm` with noise added at `snr_db` below its active speech level (the noise covers the pauses too)."""
    ms = len(pcm) * 1000 // (2 * rate) + 1
    noise = np.frombuffer(noise_pcm(ms, speech_level_db(pcm, rate) - snr_db, kind=kind, rate=rate, seed=seed),
                          dtype="<i2")[: len(pcm) // 2].astype(np.int32)
    mixed = np.frombuffer(pcm, dtype="<i2").astype(np.int32) + noise
    return np.clip(mixed, -32768, 32767).astype("<i2").tobytes()


def channel(pcm: bytes, *, snr_db: float | None = None, noise: str = "white", mulaw: bool = True,
            rate: int = RATE, seed: int = 1) -> bytes:
    """A call's inbound audio: noise at the caller's end (optional), then the G.711 μ-law leg (8 kHz only)."""
    out = add_noise(pcm, snr_db, kind=noise, rate=rate, seed=seed) if snr_db is not None else pcm
    if mulaw:
        if rate != 8000:
            raise ValueError("the μ-law channel model is 8 kHz")
        out = mulaw_channel(out)
    return out


# ---- scoring --------------------------------------------------------------------------------------------------

_UNITS = ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve", "diez", "once",
          "doce", "trece", "catorce", "quince", "dieciseis", "diecisiete", "dieciocho", "diecinueve", "veinte",
          "veintiuno", "veintidos", "veintitres", "veinticuatro", "veinticinco", "veintiseis", "veintisiete",
          "veintiocho", "veintinueve"]
_TENS = {30: "treinta", 40: "cuarenta", 50: "cincuenta", 60: "sesenta", 70: "setenta", 80: "ochenta",
         90: "noventa"}
_HUNDREDS = {1: "ciento", 2: "doscientos", 3: "trescientos", 4: "cuatrocientos", 5: "quinientos",
             6: "seiscientos", 7: "setecientos", 8: "ochocientos", 9: "novecientos"}


def number_words(n: int) -> str:
    """Spanish words for 0..999999 without accents ("veintitres", "ciento uno", "mil quinientos")."""
    if n < 0 or n > 999_999:
        raise ValueError(f"out of range: {n}")
    if n < 30:
        return _UNITS[n]
    if n < 100:
        tens, unit = divmod(n, 10)
        return _TENS[tens * 10] + ("" if unit == 0 else " y " + _UNITS[unit])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        head = "cien" if n == 100 else _HUNDREDS[hundreds]
        return head + ("" if rest == 0 else " " + number_words(rest))
    thousands, rest = divmod(n, 1000)
    head = "mil" if thousands == 1 else number_words(thousands) + " mil"
    return head + ("" if rest == 0 else " " + number_words(rest))


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def normalize_text(text: str) -> str:
    """Text as compared for WER: lower case, accents and punctuation removed, numerals as Spanish words
    (a digit string longer than 6 digits is read digit by digit, as callers read folios)."""
    text = _strip_accents(text.lower()).replace("ñ", "n")
    words: list[str] = []
    for token in re.findall(r"[a-z]+|\d+", text):
        if token.isdigit():
            if len(token) > 6:
                words.extend(_UNITS[int(d)] for d in token)
            else:
                words.extend(number_words(int(token)).split())
        else:
            words.append(token)
    return " ".join(words)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after `normalize_text` on both."""
    ref = normalize_text(reference).split()
    hyp = normalize_text(hypothesis).split()
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)


def wer(references: Sequence[str] | str, hypotheses: Sequence[str] | str) -> float:
    """Corpus word error rate (total edits / total reference words) over aligned lists, or of one pair."""
    refs: Iterable[str] = [references] if isinstance(references, str) else references
    hyps: Iterable[str] = [hypotheses] if isinstance(hypotheses, str) else hypotheses
    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references, {len(hyps)} hypotheses")
    errors = words = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        e, n = word_errors(ref, hyp)
        errors += e
        words += n
    return errors / words if words else 0.0
