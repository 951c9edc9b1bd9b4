"""`veratur call SIP_URI`: a real pjsua2 caller for people, tests and benchmarks.

It places a call, waits for the portal's prompt to finish (silence detection on the received audio), then plays
each step in order — `--say TEXT` (espeak-ng, es-419, resampled to 8 kHz), `--wav FILE` or `--dtmf DIGITS`
(RFC 4733) — waiting after each for the reply, records everything received and prints a per-turn timeline:
when the caller stopped speaking/keying and when the reply's first non-silent audio arrived (turn latency).

`--barge S:FILE` plays FILE S seconds after the previous reply (or the greeting) began, without waiting for it
to end (barge-in); its turn records when the portal's audio stopped (`portal_stopped`).

Library use: `await place_calls(uri, [steps], ...)` returns `CallResult`s (timeline + recording). One process
holds at most 4 calls (the pjsua2 wheel's limit); benchmarks run several processes (`--calls K --json`).
Times are taken where the audio leaves/enters pjmedia: the last speech frame handed to the RTP stream, and the
first voiced frame out of the jitter buffer (so latency includes the jitter buffer's ~40–60 ms).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import logging
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.signal import resample_poly

from foundation.config import PJSUA_MAX_CALLS, Settings
from foundation.logs import kv
from ivr.call.leg import AudioIn, DtmfIn, HangupIn
from ivr.sip.edge import EdgeConfig, SipEdge, SipError
from ivr.sip.leg import SipLeg
from ivr.speech.audio_ops import energy_db
from ivr.speech.frames import FRAME_MS

log = logging.getLogger("ivr.caller")

CALL_RATE = 8000
VOICED_DBFS = -40.0                 # received frame louder than this = the portal is talking
PROMPT_END_SILENCE_MS = 900         # this much silence after voice = the prompt is over
REPLY_TIMEOUT_S = 12.0              # no reply audio this long after a turn = no reply
DTMF_GAP_S = 0.25                   # between digits sent one by one (event ~160 ms + pause)
DEFAULT_VOICE = "es-419"
ESPEAK_RATE_WPM = 160
CACHE_DIR = Path(tempfile.gettempdir()) / "veratur-caller-tts"

StepKind = Literal["say", "wav", "dtmf", "pause", "until", "barge"]
UNTIL_MAX_S = 1800.0               # --until gives up after this long (the caller then goes on)
BARGE_QUIET_S = 0.5                 # this much silence after the caller started = the portal stopped talking


@dataclass(frozen=True)
class Step:
    """One caller turn: speech (text or WAV), DTMF digits, a pause in seconds, silence until a file exists (a
    test says when to go on), or "DELAY_S:FILE" (barge)."""

    kind: StepKind
    value: str


@dataclass
class Turn:
    """Timeline of one step; times in seconds since the call was answered."""

    kind: str
    value: str
    sent_start: float
    caller_end: float                    # end of speech in the sent audio / last digit sent
    reply_start: float | None            # first voiced frame received after caller_end
    reply_end: float | None
    latency_ms: float | None
    portal_stopped: float | None = None  # barge turns: last portal voice before a BARGE_QUIET_S pause


@dataclass
class CallResult:
    uri: str
    call_id: str = ""
    status: int = 0                      # 200 when answered, else the SIP failure code
    error: str = ""
    answered_at: float = 0.0             # monotonic
    greeting_start: float | None = None  # seconds since answer: first voiced frame
    greeting_end: float | None = None
    turns: list[Turn] = field(default_factory=list)
    dtmf_received: str = ""              # digits the portal sent back
    hangup_reason: str = ""
    media_proto: str = ""                # RTP/AVP, or RTP/SAVP for SRTP (--srtp)
    duration_s: float = 0.0
    recording: bytes = b""               # everything received, s16le at CALL_RATE

    def summary(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("recording")
        data["recording_s"] = round(len(self.recording) / 2 / CALL_RATE, 2)
        return data


# ---- audio helpers -------------------------------------------------------------------------------------
def to_rate(pcm: bytes, from_rate: int, to_rate_hz: int = CALL_RATE) -> bytes:
    if from_rate == to_rate_hz or not pcm:
        return pcm
    ratio = Fraction(to_rate_hz, from_rate)
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    out = resample_poly(samples, ratio.numerator, ratio.denominator)
    return np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes()


def read_wav_file(path: Path) -> bytes:
    """A WAV file as s16le mono at the call rate; ValueError for formats other than 8/16-bit PCM."""
    with wave.open(str(path), "rb") as wav:
        width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    if width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128) * 256
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2")
    else:
        raise ValueError(f"{path}: {8 * width}-bit WAV; use 16-bit PCM")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype("<i2")
    return to_rate(samples.astype("<i2").tobytes(), rate)


def write_wav(path: Path, pcm: bytes, rate: int = CALL_RATE) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


def speak(text: str, voice: str = DEFAULT_VOICE) -> bytes:
    """espeak-ng speech at the call rate, cached on disk by text+voice."""
    key = hashlib.sha256(f"{voice}|{ESPEAK_RATE_WPM}|{text}".encode()).hexdigest()[:24]
    cached = CACHE_DIR / f"{key}.pcm"
    if cached.exists():
        return cached.read_bytes()
    proc = subprocess.run(["espeak-ng", "-v", voice, "-s", str(ESPEAK_RATE_WPM), "--stdout", text],
                          capture_output=True, timeout=30, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"espeak-ng failed for voice {voice}: {proc.stderr.decode(errors='replace').strip()}")
    with wave.open(io.BytesIO(fix_stream_wav(proc.stdout)), "rb") as wav:
        rate = wav.getframerate()
        pcm = wav.readframes(wav.getnframes())
    pcm = to_rate(pcm, rate)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(pcm)
    return pcm


def fix_stream_wav(data: bytes) -> bytes:
    """espeak-ng --stdout writes 0x7ffff... sizes (it cannot seek); patch them to the real sizes."""
    if data[:4] != b"RIFF" or data[36:40] != b"data":
        return data
    body = len(data) - 44
    return data[:4] + (body + 36).to_bytes(4, "little") + data[8:40] + body.to_bytes(4, "little") + data[44:]


frame_dbfs = energy_db    # level of one s16le frame in dBFS (-100 for digital silence)


def trailing_silence_s(pcm: bytes, rate: int = CALL_RATE) -> float:
    """Seconds of silence at the end of a clip (so 'end of speech' is not 'end of file')."""
    n = rate * FRAME_MS // 1000 * 2
    frames = [pcm[i:i + n] for i in range(0, len(pcm), n)]
    silent = 0
    for frame in reversed(frames):
        if frame_dbfs(frame) > VOICED_DBFS:
            break
        silent += 1
    return silent * FRAME_MS / 1000


# ---- the call ----------------------------------------------------------------------------------------
class _Listener:
    """Consumes a leg's events: records audio and tracks when the portal is voiced."""

    def __init__(self, leg: SipLeg) -> None:
        self.leg = leg
        self.chunks: list[bytes] = []
        self.voiced: list[tuple[float, bool]] = []      # (timestamp, voiced) per received frame
        self.digits = ""
        self.hangup: str | None = None
        self.changed = asyncio.Event()

    async def run(self) -> None:
        async for event in self.leg.events():
            if isinstance(event, AudioIn):
                for frame in event.frames:
                    self.chunks.append(frame.pcm)
                    self.voiced.append((frame.timestamp, frame_dbfs(frame.pcm) > VOICED_DBFS))
            elif isinstance(event, DtmfIn):
                self.digits += event.digit
            elif isinstance(event, HangupIn):
                self.hangup = event.reason
            self.changed.set()

    async def wait_voice_after(self, t: float, timeout_s: float) -> float | None:
        """Timestamp of the first voiced frame received after `t`, or None."""
        deadline = time.monotonic() + timeout_s
        index = 0
        while True:
            for i in range(index, len(self.voiced)):
                ts, voiced = self.voiced[i]
                if voiced and ts > t:
                    return ts
            index = len(self.voiced)
            if self.hangup is not None or time.monotonic() >= deadline:
                return None
            await self._wait(deadline)

    async def wait_silence_after(self, t: float, silence_s: float, timeout_s: float) -> float:
        """Timestamp of the last voiced frame once `silence_s` of silence followed it (or at timeout)."""
        deadline = time.monotonic() + timeout_s
        last_voice = t
        while True:
            for ts, voiced in self.voiced:
                if voiced and ts > last_voice:
                    last_voice = ts
            if self.voiced and self.voiced[-1][0] - last_voice >= silence_s:
                return last_voice
            if self.hangup is not None or time.monotonic() >= deadline:
                return last_voice
            await self._wait(deadline)

    async def _wait(self, deadline: float) -> None:
        self.changed.clear()
        try:
            await asyncio.wait_for(self.changed.wait(), max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            pass


def prepare(steps: list[Step], voice: str = DEFAULT_VOICE) -> list[tuple[Step, bytes]]:
    """Render speech and read WAVs before dialling, so the call's timing is not spent on espeak-ng."""
    out = []
    for step in steps:
        if step.kind == "say":
            out.append((step, speak(step.value, voice)))
        elif step.kind == "wav":
            out.append((step, read_wav_file(Path(step.value))))
        elif step.kind == "barge":
            out.append((step, read_wav_file(Path(barge_parts(step.value)[1]))))
        else:
            out.append((step, b""))
    return out


def barge_parts(value: str) -> tuple[float, str]:
    """"DELAY_S:FILE" -> (delay, file); ValueError for anything else."""
    delay, sep, path = value.partition(":")
    try:
        seconds = float(delay)
    except ValueError:
        seconds = -1.0
    if not sep or not path or not 0 <= seconds <= 120:
        raise ValueError(f"--barge {value!r}: expected DELAY_S:FILE with 0 <= DELAY_S <= 120")
    return seconds, path


async def run_call(edge: SipEdge, uri: str, script: list[tuple[Step, bytes]], *, headers: dict[str, str] | None
                   = None, wait_s: float = 2.0, reply_timeout_s: float = REPLY_TIMEOUT_S,
                   prompt_silence_ms: int = PROMPT_END_SILENCE_MS, hangup: bool = True,
                   last_reply_end: bool = True) -> CallResult:
    """One call on a started edge: greeting, each step with its reply, `wait_s` of listening, BYE."""
    result = CallResult(uri=uri)
    started = time.monotonic()
    try:
        leg = await edge.call(uri, headers)
    except SipError as exc:
        result.status, result.error = exc.status_code, str(exc)
        return result
    result.status, result.call_id = 200, leg.info.call_id
    t0 = result.answered_at = leg.answered_at
    listener = _Listener(leg)
    listening = asyncio.create_task(listener.run(), name=f"listen-{leg.info.call_id}")
    silence_s = prompt_silence_ms / 1000
    try:
        first = await listener.wait_voice_after(t0, reply_timeout_s)
        anchor = first
        if first is not None:
            result.greeting_start = first - t0
            if not (script and script[0][0].kind == "barge"):
                result.greeting_end = await listener.wait_silence_after(first, silence_s, 60.0) - t0
        for i, (step, pcm) in enumerate(script):
            if listener.hangup is not None:
                break
            # A barge-in step starts while the reply before it is still playing: do not wait for that reply's end.
            barge_next = i + 1 < len(script) and script[i + 1][0].kind == "barge"
            last = i == len(script) - 1
            turn = await _play_step(leg, listener, step, pcm, t0, silence_s, reply_timeout_s, anchor=anchor,
                                    wait_end=not barge_next and (last_reply_end or not last))
            anchor = None if turn.reply_start is None else t0 + turn.reply_start
            result.turns.append(turn)
        if wait_s > 0 and listener.hangup is None:
            await asyncio.sleep(wait_s)
    finally:
        if hangup and not leg.ended:
            await leg.hangup()
        await leg.wait_ended(5.0)
        try:
            await asyncio.wait_for(listening, 2.0)
        except TimeoutError:
            listening.cancel()
    result.hangup_reason = listener.hangup or leg.hangup_reason or ""
    result.dtmf_received = listener.digits
    result.media_proto = leg.media_proto
    result.recording = b"".join(listener.chunks)
    result.duration_s = time.monotonic() - started
    return result


async def _play_step(leg: SipLeg, listener: _Listener, step: Step, pcm: bytes, t0: float, silence_s: float,
                     reply_timeout_s: float, *, anchor: float | None = None, wait_end: bool = True) -> Turn:
    portal_stopped: float | None = None
    if step.kind == "barge":
        delay, _ = barge_parts(step.value)
        start_at = (anchor if anchor is not None else time.monotonic()) + delay
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    sent_start = time.monotonic()
    if step.kind == "pause":
        await asyncio.sleep(float(step.value))
        return Turn(step.kind, step.value, sent_start - t0, time.monotonic() - t0, None, None, None)
    if step.kind == "until":
        await asyncio.to_thread(_wait_for_file, Path(step.value), UNTIL_MAX_S)
        return Turn(step.kind, step.value, sent_start - t0, time.monotonic() - t0, None, None, None)
    if step.kind == "dtmf":
        caller_end = sent_start
        for i, digit in enumerate(step.value):
            if i:
                await asyncio.sleep(DTMF_GAP_S)
            await leg.send_dtmf(digit)
            caller_end = time.monotonic()
    else:
        leg.play(pcm)
        if step.kind == "barge":
            stopped = await listener.wait_silence_after(sent_start, BARGE_QUIET_S, 60.0)
            portal_stopped = stopped - t0
        await leg.wait_playout()
        caller_end = max(sent_start, leg.last_tx_at + FRAME_MS / 1000 - trailing_silence_s(pcm))
    reply = await listener.wait_voice_after(caller_end, reply_timeout_s)
    reply_end = None
    if reply is not None and wait_end:
        reply_end = await listener.wait_silence_after(reply, silence_s, 60.0) - t0
    latency = (reply - caller_end) * 1000 if reply is not None else None
    return Turn(step.kind, step.value, sent_start - t0, caller_end - t0,
                None if reply is None else reply - t0, reply_end, latency, portal_stopped)


def caller_edge(bind_address: str = "127.0.0.1", srtp: str = "off") -> SipEdge:
    """A SIP edge that only places calls: any free SIP port, random RTP ports, refuses INVITEs; `srtp` as
    sip.srtp (mandatory offers RTP/SAVP with SDES keys, over whatever transport the URI names)."""
    return SipEdge(EdgeConfig(bind_address=bind_address, port=0, transports=("udp", "tcp"), accept_calls=False,
                              randomize_rtp_port=True, rtp_port_start=30000, rtp_port_range=20000,
                              node="caller", user="caller", pj_log_level=0, follow_refer=True, srtp=srtp))


async def place_calls(uri: str, steps: list[Step], *, calls: int = 1, voice: str = DEFAULT_VOICE,
                      headers: dict[str, str] | None = None, wait_s: float = 2.0,
                      reply_timeout_s: float = REPLY_TIMEOUT_S, stagger_s: float = 0.2,
                      bind_address: str = "127.0.0.1", last_reply_end: bool = True,
                      srtp: str = "off") -> list[CallResult]:
    """Place `calls` concurrent calls (at most 4 per process) running the same steps; their results."""
    if not 1 <= calls <= PJSUA_MAX_CALLS:
        raise ValueError(f"one caller process holds 1..{PJSUA_MAX_CALLS} calls")
    script = await asyncio.to_thread(prepare, steps, voice)
    edge = caller_edge(bind_address, srtp)
    await edge.start()
    try:
        async def one(i: int) -> CallResult:
            await asyncio.sleep(i * stagger_s)
            return await run_call(edge, uri, script, headers=headers, wait_s=wait_s,
                                  reply_timeout_s=reply_timeout_s, last_reply_end=last_reply_end)
        return list(await asyncio.gather(*(one(i) for i in range(calls))))
    finally:
        await edge.stop(0)


# ---- CLI ---------------------------------------------------------------------------------------------
def _wait_for_file(flag: Path, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


class _StepAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        steps = getattr(namespace, "steps", None) or []
        steps.append(Step(self.const, str(values)))
        namespace.steps = steps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", metavar="SIP_URI", help="e.g. sip:veratur@127.0.0.1:5060")
    parser.add_argument("--say", action=_StepAction, const="say", dest="steps", metavar="TEXT",
                        help="speak TEXT (espeak-ng) and wait for the reply; repeatable, in order")
    parser.add_argument("--wav", action=_StepAction, const="wav", dest="steps", metavar="FILE",
                        help="play a WAV file as one turn")
    parser.add_argument("--dtmf", action=_StepAction, const="dtmf", dest="steps", metavar="DIGITS",
                        help="send RFC 4733 digits as one turn")
    parser.add_argument("--barge", action=_StepAction, const="barge", dest="steps", metavar="S:FILE",
                        help="play FILE S seconds after the previous reply began, over it (barge-in)")
    parser.add_argument("--pause", action=_StepAction, const="pause", dest="steps", metavar="S",
                        help="stay silent S seconds")
    parser.add_argument("--until", action=_StepAction, const="until", dest="steps", metavar="FILE",
                        help=f"stay silent until FILE exists (at most {UNTIL_MAX_S:.0f} s): a test's cue to go on")
    parser.add_argument("--record", type=Path, metavar="OUT.wav", help="write the received audio here")
    parser.add_argument("--wait", type=float, default=2.0, metavar="S", help="listen S seconds after the last turn")
    parser.add_argument("--voice", default=DEFAULT_VOICE, help="espeak-ng voice (default es-419)")
    parser.add_argument("--header", action="append", default=[], metavar="NAME:VALUE", help="extra INVITE header")
    parser.add_argument("--reply-timeout", type=float, default=REPLY_TIMEOUT_S, metavar="S")
    parser.add_argument("--no-last-reply-end", dest="last_reply_end", action="store_false",
                        help="after the last turn, listen only --wait S (do not wait for its reply to end)")
    parser.add_argument("--calls", type=int, default=1, help=f"concurrent identical calls (1..{PJSUA_MAX_CALLS})")
    parser.add_argument("--srtp", choices=("off", "optional", "mandatory"), default="off",
                        help="SRTP with SDES keys: mandatory offers RTP/SAVP only (default off: RTP)")
    parser.add_argument("--json", action="store_true", help="print results as JSON lines (for bench/)")
    parser.set_defaults(steps=[])


def run(settings: Settings, args: argparse.Namespace) -> int:
    headers = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            print(f"veratur call: --header {item!r}: expected NAME:VALUE", file=sys.stderr)
            return 2
        headers[name.strip()] = value.strip()
    try:
        results = asyncio.run(place_calls(args.uri, args.steps, calls=args.calls, voice=args.voice,
                                          headers=headers, wait_s=args.wait, reply_timeout_s=args.reply_timeout,
                                          bind_address=settings.sip.bind_address,
                                          last_reply_end=args.last_reply_end, srtp=args.srtp))
    except (ValueError, RuntimeError, OSError, SipError) as exc:
        print(f"veratur call: {exc}", file=sys.stderr)
        return 2
    for i, result in enumerate(results):
        if args.json:
            print(json.dumps(result.summary()), flush=True)
        else:
            print(format_timeline(result))
        if args.record:
            path = args.record if len(results) == 1 else args.record.with_stem(f"{args.record.stem}-{i + 1}")
            write_wav(path, result.recording)
            log.info("recording written %s", kv(path=path, seconds=round(len(result.recording) / 16000, 1)))
    return 0 if all(r.status == 200 for r in results) else 1


def format_timeline(result: CallResult) -> str:
    """A human-readable per-turn timeline."""
    if result.status != 200:
        return f"call to {result.uri} failed: {result.error or result.status}"
    lines = [f"call {result.call_id} to {result.uri}: answered"]
    if result.greeting_start is not None:
        lines.append(f"  greeting   audio {result.greeting_start:6.2f}s – {result.greeting_end or 0:6.2f}s")
    else:
        lines.append("  greeting   (no audio)")
    for n, turn in enumerate(result.turns, 1):
        label = turn.value if len(turn.value) <= 40 else turn.value[:37] + "..."
        head = f"  turn {n:<2} {turn.kind:5} {label!r}: sent {turn.sent_start:6.2f}s, caller end {turn.caller_end:6.2f}s"
        if turn.reply_start is None:
            lines.append(head + ", no reply")
        else:
            lines.append(head + f", reply {turn.reply_start:6.2f}s – {turn.reply_end or 0:6.2f}s"
                                f"  latency {turn.latency_ms:5.0f} ms")
    if result.dtmf_received:
        lines.append(f"  digits received from the portal: {result.dtmf_received}")
    if result.media_proto:
        lines.append(f"  media: {result.media_proto}")
    lines.append(f"  ended: {result.hangup_reason or '-'} after {result.duration_s:.1f}s")
    return "\n".join(lines)
