"""Streaming speech recognition: frames in, typed events out.

`RecognizeStream` is one call's stream. It runs the caller VAD (`ivr.speech.vad`, frames judged by
`ivr.speech.speech_vad`) on every frame, keeps a pre-roll of quiet audio, and sends audio to the decoder only
while the caller is in an utterance, so silence costs one energy computation per frame and no decoding. The endpointer (`ivr.speech.endpointing`) ends utterances. Decoding runs
off the event loop in the engine's bounded thread pool, one batch at a time per stream (a recognizer is never
used by two threads at once).

`VoskRecognizer` is the provider: ONE `vosk.Model` per process shared by all calls, one `KaldiRecognizer` per
call, phrase-list grammars when the prompt expects a closed set.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from foundation.logs import kv
from ivr.metrics import EngineMetrics
from ivr.speech.audio_ops import energy_db
from ivr.speech.backlog import DecodeBacklog
from ivr.speech.endpointing import SPOKEN_DIGITS, EndpointConfig, Endpointer
from ivr.speech.expect import Expect
from ivr.speech.frames import FRAME_MS, AudioFrame
from ivr.speech.speech_vad import VadKind, make_voicing
from ivr.speech.vad import CallerState, CallerTurnTracker

log = logging.getLogger("ivr.speech.recognizer")

UNK = "[unk]"
PARTIAL_EVERY_MS = 100       # ask the decoder for a partial at most this often (it walks the lattice each time)
PROGRESS_EVERY_MS = 100      # voiced time between SpeechProgress events of a confirmed utterance
YES_NO_PHRASES = ("sí", "si", "no", "claro", "correcto", "así es", "de acuerdo", "no es correcto", "está bien")


def grammar_for(expect: Expect) -> list[str] | None:
    """The phrase list for a closed answer (the prompt's own phrases, digits, yes/no), None for free speech."""
    if expect.phrases:
        return list(expect.phrases)
    if expect.kind == "digits":
        return list(dict.fromkeys(SPOKEN_DIGITS))
    if expect.kind == "yes_no":
        return list(YES_NO_PHRASES)
    return None


# ---- events ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SpeechStarted:
    at: float                  # time of the first voiced frame


@dataclass(frozen=True, slots=True)
class Partial:
    text: str


@dataclass(frozen=True, slots=True)
class SpeechProgress:
    """The confirmed utterance has `voiced_ms` of speech so far (every PROGRESS_EVERY_MS): barge-in is decided on
    it when the decoder gives no partials (Whisper decodes only at the end)."""
    voiced_ms: int
    speech_vad: bool           # the voiced time comes from a speech detector (Silero), not frame energy


@dataclass(frozen=True, slots=True)
class EndOfSpeech:
    at: float                  # when the endpointer decided
    speech_end_at: float       # end of the last voiced frame: the real end of the caller's speech
    voiced_ms: int = 0         # voiced time in the utterance (a cough is short)
    seq: int = 0               # number of the utterance in the stream (1, 2, ...); its Final has the same


@dataclass(frozen=True, slots=True)
class Final:
    text: str                  # "" when nothing was recognized
    confidence: float | None
    speech_end_at: float
    voiced_ms: int = 0
    seq: int = 0
    dropped: bool = False      # not decoded: it waited too long for the pool (the service's asr.max_wait_keypad_ms)


AsrEvent = SpeechStarted | Partial | SpeechProgress | EndOfSpeech | Final


@dataclass(frozen=True, slots=True)
class _PeekRead:
    """Inside the stream only: the reading of the utterance up to the voiced frame at `voiced_at`."""
    text: str
    voiced_at: float | None


# ---- decoder seam ---------------------------------------------------------------------------------------------

class Decoder(Protocol):
    """One call's blocking recognizer. Called from a pool thread, never from two threads at once."""

    def accept(self, pcm: bytes) -> str | None:
        """Decode audio; return the text of a segment the decoder closed by itself, else None."""
        ...

    def partial(self) -> str:
        ...

    def final(self) -> tuple[str, float | None]:
        """Flush the utterance: (text, mean word confidence). The decoder is then ready for a new utterance."""
        ...

    def reset(self) -> None:
        """Drop the utterance in progress (a click dismissed by the VAD)."""
        ...

    def set_phrases(self, phrases: Sequence[str] | None) -> None:
        """Restrict recognition to `phrases` (closed answers), or None for free speech."""
        ...

    def close(self) -> None:
        ...


class SpeechRecognizer(Protocol):
    """A recognition provider: one stream per call."""

    def stream(self, call_id: str, sample_rate: int) -> RecognizeStream:
        ...


# ---- the stream -----------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StreamConfig:
    vad_threshold_db: float
    preroll_ms: int
    endpoint: EndpointConfig
    vad: VadKind = "energy"          # silero: speech detector on top of the energy floor (ivr.speech.speech_vad)
    vad_speech_threshold: float = 0.5


_AUDIO, _FINAL, _RESET, _PHRASES, _CLOSE, _PEEK = range(6)


class RecognizeStream:
    """One call's recognition: `push_frame()` on the loop (cheap), events from `get()`/`events()`."""

    def __init__(self, decoder_factory: Callable[[], Decoder], executor: Executor | None, config: StreamConfig, *,
                 sample_rate: int, call_id: str = "-", metrics: EngineMetrics | None = None,
                 peek_digits: bool = False, backlog: DecodeBacklog | None = None) -> None:
        self._decoder_factory = decoder_factory
        self._decoder: Decoder | None = None
        self._executor = executor
        self.sample_rate = sample_rate
        self.call_id = call_id
        self._metrics = metrics
        self.vad = CallerTurnTracker(config.vad_threshold_db)
        self.voicing = make_voicing(config.vad, sample_rate, energy_threshold_db=config.vad_threshold_db,
                                    speech_threshold=config.vad_speech_threshold)
        # peek_digits: the decoder has `peek()` (reads the utterance so far without ending it) and
        # `final_from_peek()`, so an incomplete digit string can wait for its next group (Endpointer.digits_wait).
        self._peek_digits = peek_digits
        endpoint = config.endpoint if peek_digits else replace(config.endpoint, silence_ms_digits=None)
        self.endpointer = Endpointer(endpoint)
        self._peeked_voiced_at: float | None = None   # last voiced frame when the utterance was last peeked
        # The pre-roll: a ring of references to the last `preroll_ms` of frames as they came (no copy), fed while
        # the caller speaks too, so a blip the VAD dismissed just before the word (a breath, a click, the echo of
        # the prompt) does not leave the word's utterance without its lead, as clearing it at each onset did.
        # Never voiced frames of the previous utterance: `_since_end` counts the frames since its last voiced one,
        # so its endpoint silence may lead the next (a blip's utterance that ends as the word starts was
        # handed the word's unvoiced onset, "s" of "siete", and the word's own utterance got no lead at all).
        self._preroll: collections.deque[bytes] = collections.deque(maxlen=max(0, config.preroll_ms // FRAME_MS))
        self._since_end = 0
        self._inbox: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        self._events: asyncio.Queue[AsrEvent] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._now = 0.0
        self.partial = ""             # latest partial of the utterance in progress ("" between utterances)
        self._progress_ms = 0         # voiced time of the last SpeechProgress of this utterance
        self._utterance_open = False  # audio of an utterance has been sent and not yet flushed or reset
        self.utterances_ended = 0     # EndOfSpeech events emitted (the seq of the latest)
        self.frames_in = 0            # frames pushed
        self.frames_decoded = 0       # frames sent to the decoder (VAD gating keeps this low)
        self.decode_s = 0.0           # time spent inside the decoder
        self.closed = False
        # Segment texts the decoder closed by itself within the current utterance, and audio bytes decoded since
        # the last partial; both touched only in the pool thread.
        self._segments: list[str] = []
        self._since_partial = 0
        # Finals waiting in the decoding pool, shared with the other streams of the pool (ivr.speech.backlog); a
        # stream built alone counts only itself. `_dropped`: utterances whose final the session gave up on (read
        # in the pool thread: a set's membership test is atomic).
        self.backlog = backlog if backlog is not None else DecodeBacklog(1)
        self._dropped: set[int] = set()
        self.finals_dropped = 0
        self._last_final_seq = 0          # seq of the latest Final made (pool thread)

    # -- lifecycle --
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._decode_loop(), name=f"asr-{self.call_id}")

    async def aclose(self) -> None:
        """Stop decoding and free the recognizer; idempotent."""
        if self.closed:
            return
        self.closed = True
        self._forget_pending()
        if self._task is not None:
            self._inbox.put_nowait((_CLOSE, None))
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
                raise
            finally:
                self._task = None
        elif self._decoder is not None:
            self._decoder.close()
            self._decoder = None

    # -- input (event loop, per frame) --
    def set_expect(self, expect: Expect) -> None:
        """Adapt to the next answer: grammar for a closed set, endpointing threshold by kind."""
        self.endpointer.set_expect(expect)
        self._inbox.put_nowait((_PHRASES, expect))

    def push_frame(self, frame: AudioFrame) -> None:
        if self.closed:
            return
        self.frames_in += 1
        now = self._now = frame.timestamp
        vad = self.vad
        transition = vad.push_voiced(self.voicing.voiced(frame.pcm, energy_db(frame.pcm)), now)
        if not vad.in_utterance:
            if transition is not None:          # STARTING -> QUIET: a blip; forget what it fed the decoder
                self._progress_ms = 0
                self._peeked_voiced_at = None
                self._inbox.put_nowait((_RESET, None))
                self.partial = ""
                self.endpointer.reset()
                self._utterance_open = False
            self._remember(frame.pcm)
            return
        if transition is not None and transition.before is CallerState.QUIET:
            pre = list(self._preroll)[-self._since_end:] if self._since_end else []
            chunk = b"".join(pre) + frame.pcm
            self.frames_decoded += len(pre)
            self._utterance_open = True
        else:
            chunk = frame.pcm
        self._remember(frame.pcm)
        self.frames_decoded += 1
        self._inbox.put_nowait((_AUDIO, chunk))
        if transition is not None and transition.after is CallerState.SPEAKING \
                and transition.before is CallerState.STARTING:
            self._events.put_nowait(SpeechStarted(vad.speech_started_at or now))
        if vad.confirmed and vad.voiced_ms >= self._progress_ms + PROGRESS_EVERY_MS:
            self._progress_ms = vad.voiced_ms
            self._events.put_nowait(SpeechProgress(vad.voiced_ms, self.voicing.speech_detector))
        if vad.confirmed and self.endpointer.is_end(confirmed=True, last_voiced_at=vad.last_voiced_at,
                                                   speech_started_at=vad.speech_started_at, now=now):
            self.end_utterance()
        elif self._peek_digits and vad.confirmed and self._peeked_voiced_at != vad.last_voiced_at \
                and self.endpointer.wants_peek(last_voiced_at=vad.last_voiced_at, now=now):
            self._peeked_voiced_at = vad.last_voiced_at
            self._inbox.put_nowait((_PEEK, vad.last_voiced_at))

    def _remember(self, pcm: bytes) -> None:
        if self._preroll.maxlen:
            self._preroll.append(pcm)
            self._since_end = min(self._since_end + 1, self._preroll.maxlen)

    def end_utterance(self) -> None:
        """Close the utterance now (endpoint, or the session decided): EndOfSpeech now, Final after decoding."""
        speech_end = self.vad.last_voiced_at or self._now
        voiced = self.vad.voiced_ms
        trailing = self.vad.silence_ms // FRAME_MS     # unvoiced frames since the last voiced one
        self.utterances_ended += 1
        seq = self.utterances_ended
        # nothing voiced since the last peek: that reading covers the whole utterance
        reuse_peek = self._peeked_voiced_at is not None and self._peeked_voiced_at == self.vad.last_voiced_at
        self._peeked_voiced_at = None
        self.backlog.enqueue(self._key(seq))
        self._events.put_nowait(EndOfSpeech(self._now, speech_end, voiced, seq))
        self._inbox.put_nowait((_FINAL, (speech_end, voiced, seq, reuse_peek, time.monotonic())))
        self.vad.reset()
        self.endpointer.reset()
        self._utterance_open = False
        self._progress_ms = 0
        self._since_end = min(self._since_end, trailing)

    def discard_utterance(self) -> None:
        """Forget the utterance in progress without a result (e.g. DTMF answered the prompt instead)."""
        if self.vad.in_utterance or self._utterance_open:
            self._inbox.put_nowait((_RESET, None))
        self.vad.reset()
        self.endpointer.reset()
        self.partial = ""
        self._utterance_open = False
        self._progress_ms = 0
        self._peeked_voiced_at = None
        self._since_end = 0

    # -- the decoding backlog (event loop) --
    def _key(self, seq: int) -> tuple[int, int]:
        return (id(self), seq)

    def final_wait_estimate_s(self) -> float:
        """Estimated wait for a final asked now, from the pool's backlog (ivr.speech.backlog)."""
        return self.backlog.estimate_wait_s()

    def drop_final(self, seq: int) -> bool:
        """Give up on utterance `seq`'s final: its decode is skipped if it has not started (the pool is free
        for the others sooner), and no Final comes for it then. False when it is already out or dropped."""
        if seq in self._dropped or seq > self.utterances_ended or seq <= self._last_final_seq:
            return False
        self._dropped.add(seq)
        self.finals_dropped += 1
        self.backlog.drop(self._key(seq))
        return True

    def _forget_pending(self) -> None:
        me = id(self)
        self.backlog.forget(lambda key: isinstance(key, tuple) and key[0] == me)

    # -- output --
    async def get(self) -> AsrEvent:
        return await self._events.get()

    def get_nowait(self) -> AsrEvent | None:
        try:
            return self._events.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def events(self):  # type: ignore[no-untyped-def]
        """Async iterator over events (until cancelled)."""
        while True:
            yield await self._events.get()

    @property
    def speech_vad(self) -> bool:
        """True when voiced frames are decided by a speech detector (Silero), not energy alone."""
        return self.voicing.speech_detector

    @property
    def voiced_ms(self) -> int:
        return self.vad.voiced_ms if self.vad.in_utterance else 0

    @property
    def rtf(self) -> float:
        audio_s = self.frames_decoded * FRAME_MS / 1000
        return self.decode_s / audio_s if audio_s else 0.0

    # -- decoding (pool thread, one batch at a time) --
    async def _decode_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            # Build the recognizer now (~130 ms of a pool thread), while the greeting plays, not at first speech.
            await loop.run_in_executor(self._executor, self._ensure_decoder)
            while True:
                batch = [await self._inbox.get()]
                while not self._inbox.empty():
                    batch.append(self._inbox.get_nowait())
                closing = any(kind == _CLOSE for kind, _ in batch)
                results = await loop.run_in_executor(self._executor, self._run_batch, batch)
                for event in results:
                    if isinstance(event, _PeekRead):
                        # what the pause heard decides whether the digit string waits for its next group
                        self.endpointer.on_peek(event.text, event.voiced_at)
                        event = Partial(event.text)
                    if isinstance(event, Partial):
                        if event.text == self.partial:
                            continue
                        self.partial = event.text
                        self.endpointer.on_partial(event.text, self._now)
                    elif isinstance(event, Final):
                        self.partial = ""
                    self._events.put_nowait(event)
                if closing:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("decoder failed %s", kv(call_id=self.call_id))
            # The caller is then only understood by DTMF; the session hears no more speech events.
            self.closed = True
            self._forget_pending()
            if self._decoder is not None:       # no batch is running any more: safe to drop it here
                try:
                    self._decoder.close()
                finally:
                    self._decoder = None

    def _ensure_decoder(self) -> Decoder:
        if self._decoder is None:
            self._decoder = self._decoder_factory()
        return self._decoder

    def _run_batch(self, batch: list[tuple[int, Any]]) -> list[AsrEvent | _PeekRead]:
        dec = self._ensure_decoder()
        out: list[AsrEvent | _PeekRead] = []
        segments = self._segments
        pending = bytearray()
        partial_bytes = self.sample_rate * 2 * PARTIAL_EVERY_MS // 1000
        batch_t0 = time.perf_counter()      # a final's decode time counts its batch's audio before it

        def flush_audio() -> None:
            if not pending:
                return
            t0 = time.perf_counter()
            segment = dec.accept(bytes(pending))
            self._since_partial += len(pending)
            text: str | None = None
            if segment is not None:
                if segment:
                    segments.append(segment)
                text = " ".join(segments)
            elif self._since_partial >= partial_bytes:
                text = " ".join([*segments, dec.partial()]).strip()
            if text is not None:
                self._since_partial = 0
            spent = time.perf_counter() - t0
            self.decode_s += spent
            audio_s = len(pending) / (2 * self.sample_rate)
            if self._metrics is not None and audio_s > 0:
                self._metrics.asr_rtf.observe(spent / audio_s)
            pending.clear()
            if text is not None:
                out.append(Partial(text))

        for index, (kind, arg) in enumerate(batch):
            if kind == _AUDIO:
                pending += arg
                continue
            flush_audio()
            if kind == _FINAL:
                seq = arg[2]
                if seq in self._dropped:
                    # the session stopped waiting for it (overload): no decode, no Final; the decoder starts over
                    self._dropped.discard(seq)
                    drop = getattr(dec, "drop", None)
                    (drop if drop is not None else dec.reset)()
                    segments.clear()
                    self._since_partial = 0
                    batch_t0 = time.perf_counter()
                    continue
                ended = getattr(dec, "utterance_ended", None)    # a remote decoder bounds the service's wait
                if ended is not None:
                    ended(arg[4])
                t0 = time.perf_counter()
                from_peek = getattr(dec, "final_from_peek", None)
                text, conf = from_peek() if arg[3] and from_peek is not None else dec.final()
                t1 = time.perf_counter()
                self.decode_s += t1 - t0
                dropped = getattr(dec, "dropped", False) is True
                self.backlog.done(self._key(seq), None if dropped else t1 - batch_t0)
                self._last_final_seq = seq
                batch_t0 = t1
                if text:
                    segments.append(text)
                out.append(Final(" ".join(segments).strip(), conf, arg[0], arg[1], seq, dropped))
                segments.clear()
                self._since_partial = 0
            elif kind == _PEEK:
                peek = getattr(dec, "peek", None)
                # a later peek or the final in this batch reads more: this one would be a wasted decode (under
                # load a Whisper decode takes seconds and the batch piles up behind it)
                superseded = any(k in (_PEEK, _FINAL, _RESET) for k, _ in batch[index + 1:])
                if peek is not None and not superseded:
                    t0 = time.perf_counter()
                    heard = peek()
                    self.decode_s += time.perf_counter() - t0
                    out.append(_PeekRead(" ".join([*segments, heard]).strip(), arg))
            elif kind == _RESET:
                dec.reset()
                segments.clear()
                self._since_partial = 0
                out.append(Partial(""))
            elif kind == _PHRASES:
                # A free-text decoder (Whisper) maps its text onto the expected answer; a grammar decoder (Vosk)
                # takes the phrase list.
                set_expect = getattr(dec, "set_expect", None)
                if set_expect is not None:
                    set_expect(arg)
                else:
                    dec.set_phrases(grammar_for(arg))
            elif kind == _CLOSE:
                dec.close()
                self._decoder = None
                return out
        flush_audio()
        return out


# ---- Vosk -----------------------------------------------------------------------------------------------------

def _clean(text: str) -> str:
    return " ".join(w for w in text.split() if w != UNK)


class VoskDecoder:
    """`Decoder` over `vosk.KaldiRecognizer`s sharing the process's `vosk.Model`.

    A call keeps up to two recognizers: one for free speech and, once a prompt expects a closed answer, one for
    grammars. A recognizer cannot drop a grammar, and building a fresh one costs ~130 ms of a decoding thread
    (measured with the test model) against ~0.1 ms for SetGrammar, so switching between the two is just a pick.
    """

    def __init__(self, model: Any, sample_rate: int) -> None:
        self._model = model
        self._rate = sample_rate
        self._free: Any = self._new()
        self._closed: Any = None
        self._rec: Any = self._free
        self._phrases: list[str] | None = None

    def _new(self) -> Any:
        import vosk
        rec = vosk.KaldiRecognizer(self._model, float(self._rate))
        rec.SetWords(True)
        return rec

    def accept(self, pcm: bytes) -> str | None:
        if self._rec.AcceptWaveform(pcm):
            return _clean(json.loads(self._rec.Result()).get("text", ""))
        return None

    def partial(self) -> str:
        return _clean(json.loads(self._rec.PartialResult()).get("partial", ""))

    def final(self) -> tuple[str, float | None]:
        result = json.loads(self._rec.FinalResult())
        words = [w for w in result.get("result", []) if w.get("word") != UNK]
        conf = sum(float(w.get("conf", 0.0)) for w in words) / len(words) if words else None
        return _clean(result.get("text", "")), conf

    def reset(self) -> None:
        self._rec.Reset()

    def set_phrases(self, phrases: Sequence[str] | None) -> None:
        wanted = [p.lower() for p in phrases] if phrases else None
        if wanted == self._phrases:
            return
        self._phrases = wanted
        if wanted:
            if self._closed is None:
                self._closed = self._new()
            # "[unk]" lets out-of-grammar speech come out as unknown instead of the nearest phrase.
            self._closed.SetGrammar(json.dumps([*wanted, UNK], ensure_ascii=False))
            self._rec = self._closed
        else:
            self._rec = self._free
        self._rec.Reset()

    def close(self) -> None:
        self._rec = self._free = self._closed = None


def pool_size(executor: Executor | None) -> int:
    """Threads of a decoding pool (a ThreadPoolExecutor's bound; 1 when it cannot be told)."""
    return int(getattr(executor, "_max_workers", 1) or 1)


class VoskRecognizer:
    """The process's Vosk provider: one shared model, one recognizer per call, decoding in `executor`."""

    def __init__(self, model: Any, executor: Executor, config: StreamConfig,
                 metrics: EngineMetrics | None = None) -> None:
        self.model = model
        self._executor = executor
        self._config = config
        self._metrics = metrics
        self.backlog = DecodeBacklog(pool_size(executor))     # every call's finals wait in the one pool

    @staticmethod
    def load_model(path: Path) -> Any:
        """Load a Vosk model directory (blocking, seconds): call it once per process."""
        import vosk
        vosk.SetLogLevel(-2)     # errors only: grammar words missing from a model are expected (warnings)
        return vosk.Model(str(path))

    def stream(self, call_id: str, sample_rate: int) -> RecognizeStream:
        def factory() -> Decoder:
            return VoskDecoder(self.model, sample_rate)
        s = RecognizeStream(factory, self._executor, self._config, sample_rate=sample_rate, call_id=call_id,
                            metrics=self._metrics, backlog=self.backlog)
        s.start()
        return s


class NoSpeechDecoder:
    """A decoder that hears no words: the keypad-only mode used when no speech model is installed."""

    def accept(self, pcm: bytes) -> str | None:
        return None

    def partial(self) -> str:
        return ""

    def final(self) -> tuple[str, float | None]:
        return "", None

    def reset(self) -> None:
        return None

    def set_phrases(self, phrases: Sequence[str] | None) -> None:
        return None

    def close(self) -> None:
        return None


class KeypadOnlyRecognizer:
    """Speech recognition off (no model in place): VAD still runs, no words come out, DTMF carries the call."""

    def __init__(self, config: StreamConfig, metrics: EngineMetrics | None = None) -> None:
        self._config = config
        self._metrics = metrics

    def stream(self, call_id: str, sample_rate: int) -> RecognizeStream:
        s = RecognizeStream(NoSpeechDecoder, None, self._config, sample_rate=sample_rate, call_id=call_id,
                            metrics=self._metrics)
        s.start()
        return s
