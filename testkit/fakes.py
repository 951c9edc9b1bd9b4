"""In-memory stand-ins for the engine's seams, with failure knobs: a CallLeg, a scripted Dialogue, a recorder,
a tone synthesizer and a scripted ASR decoder. Unit-test seams only; the real paths have their own tests."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ivr.call.leg import AudioIn, CallInfo, DtmfIn, HangupIn, LegEvent, TransferResult
from ivr.call.records import Disposition, Speaker
from ivr.dialogue.interface import CallerTurn, DialogueReply, TurnContext
from ivr.speech.frames import FRAME_MS, AudioFrame, frame_bytes

RATE = 8000


# ---- audio helpers -------------------------------------------------------------------------------------------

def silence(ms: int, rate: int = RATE) -> bytes:
    return b"\x00\x00" * (rate * ms // 1000)


def noise(ms: int, level_db: float, rate: int = RATE, seed: int = 1) -> bytes:
    """White noise at `level_db` dBFS RMS: a stand-in for voiced audio where words do not matter."""
    rng = np.random.default_rng(seed)
    amp = 32768 * 10 ** (level_db / 20)
    samples = rng.normal(0.0, amp, rate * ms // 1000)
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


def tone(ms: int, freq: float = 440.0, level_db: float = -12.0, rate: int = RATE) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    amp = 32768 * 10 ** (level_db / 20) * np.sqrt(2)
    return (amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def frames_of(pcm: bytes, rate: int = RATE, start: float = 0.0) -> list[AudioFrame]:
    """Split PCM into 20 ms frames stamped start + k*20 ms (the end time of each frame)."""
    size = frame_bytes(rate)
    pcm = pcm + b"\x00" * (-len(pcm) % size)
    return [AudioFrame(pcm[i:i + size], rate, start + (i // size + 1) * FRAME_MS / 1000)
            for i in range(0, len(pcm), size)]


# ---- the leg -------------------------------------------------------------------------------------------------

class FakeLeg:
    """A `CallLeg` in memory. Outgoing audio drains in real time, as a SIP leg sends it.

    Script the caller with `say()` (real-time paced audio), `press()`, `hang_up()`. Knobs: `transfer_ok`,
    `transfer_raises`, `transfer_delay_s`."""

    def __init__(self, call_id: str = "call-1", caller: str = "2281234567", rate: int = RATE) -> None:
        self.info = CallInfo(call_id=call_id, caller=caller, called="veratur", node="test")
        self.sample_rate = rate
        self._events: asyncio.Queue[LegEvent | None] = asyncio.Queue()
        self._pending = bytearray()          # queued, not yet "sent"
        self.sent = bytearray()              # everything that left, in order
        self._last_drain = time.monotonic()
        self.clear_calls = 0
        self.play_calls: list[tuple[float, int]] = []   # (time, bytes)
        self.transfers: list[tuple[str, dict[str, str]]] = []
        self.transfer_ok = True
        self.transfer_raises: Exception | None = None
        self.transfer_delay_s = 0.0
        self.hangup_calls = 0
        self.closed = False

    # CallLeg
    async def events(self) -> AsyncIterator[LegEvent]:  # type: ignore[override]
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    def _drain(self) -> None:
        now = time.monotonic()
        n = int((now - self._last_drain) * self.sample_rate) * 2
        self._last_drain = now
        if n > 0 and self._pending:
            take = bytes(self._pending[:n])
            del self._pending[:n]
            self.sent += take

    def play(self, pcm: bytes) -> None:
        self._drain()
        if not self._pending:
            self._last_drain = time.monotonic()
        self._pending += pcm
        self.play_calls.append((time.monotonic(), len(pcm)))

    def clear_playback(self) -> None:
        self._drain()
        self._pending.clear()
        self.clear_calls += 1

    def queued_playback_ms(self) -> int:
        self._drain()
        return len(self._pending) * 1000 // (2 * self.sample_rate)

    async def transfer(self, target_uri: str, headers: dict[str, str]) -> TransferResult:
        self.transfers.append((target_uri, dict(headers)))
        if self.transfer_delay_s:
            await asyncio.sleep(self.transfer_delay_s)
        if self.transfer_raises is not None:
            raise self.transfer_raises
        return TransferResult(ok=self.transfer_ok, status_code=200 if self.transfer_ok else 486)

    async def hangup(self) -> None:
        self.hangup_calls += 1
        self.closed = True

    # caller script
    async def say(self, pcm: bytes, *, batch_frames: int = 5) -> float:
        """Send `pcm` paced in real time, `batch_frames` frames per wake-up; returns the end time of the audio."""
        size = frame_bytes(self.sample_rate)
        pcm = pcm + b"\x00" * (-len(pcm) % size)
        t = time.monotonic()
        end = t
        for i in range(0, len(pcm), size * batch_frames):
            chunk = pcm[i:i + size * batch_frames]
            frames = frames_of(chunk, self.sample_rate, start=t)
            t = frames[-1].timestamp
            end = t
            delay = t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._events.put_nowait(AudioIn(tuple(frames)))
        return end

    def press(self, digits: str) -> float:
        now = time.monotonic()
        for d in digits:
            self._events.put_nowait(DtmfIn(d, now))
        return now

    def hang_up(self, reason: str = "bye") -> None:
        self._events.put_nowait(HangupIn(reason))

    def end_events(self) -> None:
        self._events.put_nowait(None)

    @property
    def sent_ms(self) -> int:
        self._drain()
        return len(self.sent) * 1000 // (2 * self.sample_rate)


# ---- dialogue ------------------------------------------------------------------------------------------------

@dataclass
class FakeDialogue:
    """Scripted `Dialogue`: `greeting`, then `replies` in order (the last one repeats).

    Knobs: `delay_s` (slow dialogue), `fail_on_turn` (raise on that turn index, 0-based)."""
    greeting: DialogueReply
    replies: Sequence[DialogueReply] = ()
    delay_s: float = 0.0
    fail_on_turn: int | None = None
    turns: list[CallerTurn] = field(default_factory=list)
    started: int = 0
    ended: int = 0

    async def start(self, ctx: TurnContext) -> DialogueReply:
        self.started += 1
        return self.greeting

    async def turn(self, ctx: TurnContext, turn: CallerTurn) -> DialogueReply:
        index = len(self.turns)
        self.turns.append(turn)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_on_turn is not None and index == self.fail_on_turn:
            raise RuntimeError("dialogue down")
        return self.replies[min(index, len(self.replies) - 1)]

    async def end(self, ctx: TurnContext) -> None:
        self.ended += 1


# ---- recorder ------------------------------------------------------------------------------------------------

@dataclass
class RecordedTurn:
    call_id: str
    speaker: Speaker
    text: str
    intent: str | None
    confidence: float | None
    leg_sent_ms: int | None       # what the leg had sent when this turn was committed (order checks)
    leg_plays: int | None


@dataclass
class FakeRecorder:
    """In-memory `CallRecorder`. Knobs: `folio` returned by call_started, `fail_add_turn`, `fail_call_started`."""
    folio: str | None = None
    fail_add_turn: bool = False
    fail_call_started: bool = False
    leg: FakeLeg | None = None
    started: list[CallInfo] = field(default_factory=list)
    turns: list[RecordedTurn] = field(default_factory=list)
    linked: list[tuple[str, str]] = field(default_factory=list)
    ended: list[tuple[str, Disposition, str | None]] = field(default_factory=list)

    async def call_started(self, info: CallInfo) -> str | None:
        if self.fail_call_started:
            raise ConnectionError("database down")
        self.started.append(info)
        return self.folio

    async def add_turn(self, call_id: str, speaker: Speaker, text: str, intent: str | None = None,
                       confidence: float | None = None) -> None:
        if self.fail_add_turn:
            raise ConnectionError("database down")
        self.turns.append(RecordedTurn(call_id, speaker, text, intent, confidence,
                                       self.leg.sent_ms if self.leg else None,
                                       len(self.leg.play_calls) if self.leg else None))

    async def link_case(self, call_id: str, folio: str) -> None:
        self.linked.append((call_id, folio))

    async def call_ended(self, call_id: str, disposition: Disposition, transfer_target: str | None = None) -> None:
        self.ended.append((call_id, disposition, transfer_target))


# ---- synthesizer and decoder ---------------------------------------------------------------------------------

class ToneSynthesizer:
    """`SpeechSynthesizer` that renders every text as a tone of `ms_per_text` (prompts of known length)."""

    def __init__(self, ms_per_text: int = 400, rate: int = RATE, fail: bool = False) -> None:
        self.sample_rate = rate
        self.ms_per_text = ms_per_text
        self.fail = fail
        self.texts: list[str] = []
        self.prerendered: list[str] = []

    async def synthesize(self, text: str) -> bytes:
        if self.fail:
            raise RuntimeError("tts down")
        self.texts.append(text)
        return tone(self.ms_per_text, rate=self.sample_rate)

    def cached(self, text: str) -> bool:
        return text in self.prerendered

    async def prerender(self, texts: Sequence[str]) -> None:  # type: ignore[override]
        self.prerendered.extend(texts)

    async def close(self) -> None:
        return None


class ScriptedDecoder:
    """`ivr.speech.recognizer.Decoder` that "recognizes" the next scripted text for each utterance.

    The partial shows the text once `partial_after_ms` of audio were accepted (so the barge-in guard sees
    words); `final()` pops it. Everything fed is counted so tests can check VAD gating."""

    def __init__(self, texts: Sequence[str], *, rate: int = RATE, partial_after_ms: int = 100,
                 fail: bool = False, final_delay_s: float = 0.0) -> None:
        self.texts = list(texts)
        self.final_delay_s = final_delay_s     # a slow decoder: the result is still in flight for this long
        self.rate = rate
        self.partial_after_ms = partial_after_ms
        self.fail = fail
        self._utt_bytes = 0
        self.total_bytes = 0
        self.resets = 0
        self.finals = 0
        self.phrases: list[list[str] | None] = []
        self.closed = False

    def accept(self, pcm: bytes) -> str | None:
        if self.fail:
            raise RuntimeError("decoder crashed")
        self._utt_bytes += len(pcm)
        self.total_bytes += len(pcm)
        return None

    def partial(self) -> str:
        ms = self._utt_bytes * 1000 // (2 * self.rate)
        return self.texts[0] if self.texts and ms >= self.partial_after_ms else ""

    def final(self) -> tuple[str, float | None]:
        if self.final_delay_s:
            time.sleep(self.final_delay_s)     # runs on a pool thread, like Vosk's FinalResult
        self.finals += 1
        self._utt_bytes = 0
        return (self.texts.pop(0), 0.9) if self.texts else ("", None)

    def reset(self) -> None:
        self.resets += 1
        self._utt_bytes = 0

    def set_phrases(self, phrases: Sequence[str] | None) -> None:
        self.phrases.append(list(phrases) if phrases else None)

    def close(self) -> None:
        self.closed = True


class ScriptedRecognizer:
    """`SpeechRecognizer` over the real `RecognizeStream` (real VAD, gating, endpointing) with scripted text."""

    def __init__(self, texts: Sequence[str], config: object, *, partial_after_ms: int = 100,
                 fail: bool = False, final_delay_s: float = 0.0) -> None:
        self.texts = list(texts)
        self.final_delay_s = final_delay_s
        self.config = config
        self.partial_after_ms = partial_after_ms
        self.fail = fail
        self.streams: list[object] = []
        self.decoders: list[ScriptedDecoder] = []

    def stream(self, call_id: str, sample_rate: int):  # type: ignore[no-untyped-def]
        from ivr.speech.recognizer import RecognizeStream
        decoder = ScriptedDecoder(self.texts, rate=sample_rate, partial_after_ms=self.partial_after_ms,
                                  fail=self.fail, final_delay_s=self.final_delay_s)
        self.decoders.append(decoder)
        s = RecognizeStream(lambda: decoder, None, self.config, sample_rate=sample_rate,  # type: ignore[arg-type]
                            call_id=call_id)
        s.start()
        self.streams.append(s)
        return s


class BrokenLeg(FakeLeg):
    """A FakeLeg whose event stream fails after `fail_after` events (an edge bug)."""

    def __init__(self, fail_after: int = 0, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.fail_after = fail_after

    async def events(self) -> AsyncIterator[LegEvent]:  # type: ignore[override]
        n = 0
        async for event in super().events():
            if n >= self.fail_after:
                raise RuntimeError("edge exploded")
            n += 1
            yield event
