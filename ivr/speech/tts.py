"""Speech synthesis: prompt text to s16le PCM at the call rate, cached on disk.

`EspeakSynthesizer` drives pyttsx3 with its espeak driver (espeak-ng) on ONE dedicated thread, because pyttsx3
engines are not thread-safe: every pyttsx3 call happens on that thread. A render writes a 22050 Hz WAV, which
is resampled to the call rate and stored in `tts.cache_dir` under a key made of text + voice + rate + sample
rate (atomic rename, so a crash never leaves half a prompt). `prerender()` fills the cache at start.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from foundation.logs import kv
from ivr.speech.audio_ops import read_wav, resample

log = logging.getLogger("ivr.speech.tts")

CACHE_SUFFIX = ".pcm"
CACHE_FORMAT_VERSION = "1"
RENDER_ATTEMPTS = 3            # see _render: pyttsx3's espeak driver occasionally writes an empty WAV     # bump when the rendering pipeline changes so old cache entries are not reused


SENTENCE_END = re.compile(r"(?<=[.!?;…])\s+(?=[¿¡\"«(]?[A-ZÁÉÍÓÚÑÜ0-9])")
MIN_SENTENCE_CHARS = 30        # shorter pieces join the next one: fewer renders, no choppy pauses
ABBREVIATIONS = frozenset({"sr.", "sra.", "srta.", "dr.", "dra.", "lic.", "ing.", "no.", "núm.", "num.", "av.",
                           "col.", "c.", "cd.", "gral.", "prof.", "mtro.", "mtra.", "etc.", "p.", "ej."})


def split_sentences(text: str) -> list[str]:
    """The sentences of a reply, each long enough to be worth its own render. A split needs a sentence end
    followed by a capital or a digit, and never follows an abbreviation ("Sr. Pérez", "Av. Juárez")."""
    pieces: list[str] = []
    for piece in SENTENCE_END.split(" ".join(text.split())):
        last_word = pieces[-1].rsplit(" ", 1)[-1].lower() if pieces else ""
        if pieces and (len(pieces[-1]) < MIN_SENTENCE_CHARS or last_word in ABBREVIATIONS):
            pieces[-1] = f"{pieces[-1]} {piece}"
        else:
            pieces.append(piece)
    if len(pieces) > 1 and len(pieces[-1]) < MIN_SENTENCE_CHARS:
        pieces[-2:] = [f"{pieces[-2]} {pieces[-1]}"]
    return [p for p in pieces if p]


class SpeechSynthesizer(Protocol):
    sample_rate: int

    async def synthesize(self, text: str) -> bytes:
        """s16le mono PCM at `sample_rate` for `text`."""
        ...

    def cached(self, text: str) -> bool:
        """Whether `text` is rendered already (a prerendered prompt is played whole, not sentence by sentence)."""
        ...

    async def prerender(self, texts: Iterable[str]) -> None:
        ...

    async def close(self) -> None:
        ...


class TtsError(RuntimeError):
    """The synthesizer could not render a prompt."""


@dataclass
class TtsStats:
    renders: int = 0
    render_s: float = 0.0           # total time spent rendering on the TTS thread (miss path)
    hits: int = 0
    hit_s: float = 0.0              # total time to serve cache hits
    last_render_s: float = 0.0
    last_hit_s: float = 0.0
    per_text: dict[str, float] = field(default_factory=dict)


def cache_key(text: str, voice: str, rate: int, sample_rate: int) -> str:
    raw = "\x1f".join([CACHE_FORMAT_VERSION, text, voice, str(rate), str(sample_rate)])
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


class _ProcessEspeak:
    """The process's one pyttsx3 espeak engine and the one thread allowed to touch it.

    libespeak-ng is a process-wide singleton and pyttsx3 mirrors that: `pyttsx3.init("espeak")` caches one engine
    per process, and when any espeak engine object is garbage-collected its destructor unregisters the global
    synthesis callback, silencing every other engine. So the engine is created once, on this thread, and kept
    for the life of the process; synthesizers share it and set their voice and rate before each render.
    This is the one piece of process-wide state in the engine, forced by the C library underneath.
    """

    _lock = threading.Lock()
    _instance: _ProcessEspeak | None = None

    def __init__(self) -> None:
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts")
        self.engine: Any = None       # created and used only on self.thread
        self.voices: set[str] = set()

    @classmethod
    def get(cls) -> _ProcessEspeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def ensure_engine(self) -> Any:
        """On the TTS thread: the pyttsx3 engine, created on first use."""
        if self.engine is not None:
            return self.engine
        import pyttsx3
        try:
            engine = pyttsx3.init("espeak")
        except Exception as exc:  # pyttsx3 raises bare errors when libespeak-ng is absent
            raise TtsError(f"cannot start pyttsx3 with espeak-ng (apt package espeak-ng): {exc}") from exc
        # pyttsx3's espeak driver print()s "Audio saved to ..." on stdout after every file; silence it in that
        # module only (stdout may carry a supervisor's protocol, and the line says nothing useful).
        driver = sys.modules.get("pyttsx3.drivers.espeak")
        if driver is not None:
            driver.print = lambda *_a, **_k: None  # type: ignore[attr-defined]
        self.voices = {v.id for v in engine.getProperty("voices")}
        self.engine = engine
        return engine


class EspeakSynthesizer:
    """pyttsx3 + espeak-ng on the process's TTS thread, with a disk cache; shared by the calls of a process."""

    def __init__(self, *, voice: str, rate: int, sample_rate: int, cache_dir: Path) -> None:
        self.voice = voice
        self.rate = rate
        self.sample_rate = sample_rate
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._espeak = _ProcessEspeak.get()
        self._thread = self._espeak.thread
        self._inflight: dict[str, asyncio.Future[bytes]] = {}
        self.stats = TtsStats()

    async def start(self) -> None:
        """Create the pyttsx3 engine on the TTS thread (fails early when espeak-ng is missing)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._init_engine)

    def _init_engine(self) -> Any:
        engine = self._espeak.ensure_engine()
        if self.voice not in self._espeak.voices:
            raise TtsError(f"tts.voice: espeak-ng has no voice {self.voice!r}")
        return engine

    def _path(self, key: str) -> Path:
        return self.cache_dir / (key + CACHE_SUFFIX)

    def cached(self, text: str) -> bool:
        text = " ".join(text.split())
        return self._path(cache_key(text, self.voice, self.rate, self.sample_rate)).exists()

    async def synthesize(self, text: str) -> bytes:
        text = " ".join(text.split())
        if not text:
            return b""
        key = cache_key(text, self.voice, self.rate, self.sample_rate)
        t0 = time.perf_counter()
        try:
            pcm = self._path(key).read_bytes()
        except FileNotFoundError:
            pass
        else:
            spent = time.perf_counter() - t0
            self.stats.hits += 1
            self.stats.hit_s += spent
            self.stats.last_hit_s = spent
            return pcm
        # One render per text even when several calls ask at once.
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        self._inflight[key] = fut
        try:
            pcm = await loop.run_in_executor(self._thread, self._render, text, key)
            fut.set_result(pcm)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()      # mark retrieved: the awaiting caller gets it below
            raise
        finally:
            del self._inflight[key]
        return pcm

    def _render(self, text: str, key: str) -> bytes:
        """On the TTS thread: espeak-ng to a temporary WAV, resample, atomically store in the cache."""
        t0 = time.perf_counter()
        engine = self._init_engine()
        fd, wav_path = tempfile.mkstemp(suffix=".wav", dir=self.cache_dir)
        os.close(fd)
        pcm, rate = b"", 0
        try:
            for _attempt in range(RENDER_ATTEMPTS):
                engine.setProperty("voice", self.voice)      # the engine is shared: set ours every time
                engine.setProperty("rate", self.rate)
                engine.save_to_file(text, wav_path)
                engine.runAndWait()
                try:
                    pcm, rate = read_wav(Path(wav_path).read_bytes())
                except ValueError:
                    pcm = b""
                if pcm:
                    break
                # Seen about once in 40 renders: pyttsx3's espeak driver writes the WAV when espeak reports the
                # end of the message and drops samples delivered in that same callback.
                log.warning("espeak-ng returned no audio, rendering again %s", kv(chars=len(text)))
        finally:
            Path(wav_path).unlink(missing_ok=True)
        if not pcm:
            raise TtsError(f"espeak-ng produced no audio for {text[:40]!r} after {RENDER_ATTEMPTS} attempts")
        pcm = resample(pcm, rate, self.sample_rate)
        fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=self.cache_dir)
        with os.fdopen(fd, "wb") as f:
            f.write(pcm)
        os.replace(tmp, self._path(key))
        spent = time.perf_counter() - t0
        self.stats.renders += 1
        self.stats.render_s += spent
        self.stats.last_render_s = spent
        self.stats.per_text[text] = spent
        log.debug("rendered %s", kv(chars=len(text), ms=round(spent * 1000, 1), audio_ms=len(pcm) * 500 // self.sample_rate))
        return pcm

    async def prerender(self, texts: Iterable[str]) -> None:
        """Render every text not cached yet, so the first caller waits for nothing."""
        t0 = time.perf_counter()
        unique = list(dict.fromkeys(" ".join(t.split()) for t in texts if t.strip()))
        for text in unique:
            await self.synthesize(text)
        log.info("prerendered %s", kv(prompts=len(unique), renders=self.stats.renders,
                                       s=round(time.perf_counter() - t0, 2)))

    async def close(self) -> None:
        """Wait for renders in flight; the process's espeak engine and thread stay (see _ProcessEspeak)."""
        pending = list(self._inflight.values())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
