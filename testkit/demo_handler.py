"""A tiny call handler that needs nothing but the SIP edge: `veratur ivr --app testkit.demo_handler:factory`.

It exists so the SIP edge can be tested and benchmarked alone (no ASR model, no dialogue): it plays a
greeting (a short melody), answers every DTMF digit with a short tone and, on '#', sends the keyed digits back
as RFC 4733; it answers every caller utterance (energy VAD, trailing silence) with a reply tone. The digit 0
transfers the call to the agent queue (REFER). It hangs up after MAX_CALL_S or on the digits '**'.
Every digit received is logged (`demo dtmf digit=...`) and, like every utterance heard, transfer outcome and
call end, written to the probe file `<data_dir>/demo-probe.jsonl`, one JSON object a line: what reached the
session, for tests to assert on instead of log wording (`testkit.worker.Worker.probe`).
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from foundation.config import Settings
from foundation.logs import kv
from ivr.call.leg import AudioIn, CallLeg, DtmfIn, HangupIn
from ivr.speech.audio_ops import energy_db

log = logging.getLogger("ivr.demo")

GREETING_NOTES_HZ = (523.0, 659.0, 784.0, 1047.0)
NOTE_S = 0.3
REPLY_TONE_HZ = 880.0
REPLY_S = 0.5
DIGIT_TONE_S = 0.2
VOICED_DBFS = -35.0            # a frame louder than this counts as caller speech
MIN_SPEECH_MS = 200
END_SILENCE_MS = 400
MAX_CALL_S = 120.0
AMPLITUDE = 0.3


PROBE_FILE = "demo-probe.jsonl"


class Probe:
    """Appends what reached the call handler to a JSON-lines file (None path: records nothing)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def record(self, call_id: str, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        line = json.dumps({"call_id": call_id, "event": event, **fields}, ensure_ascii=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)     # a workers-only node has no var/ of its own yet
        with self.path.open("a", encoding="utf-8") as out:      # one write per line: readers never see half
            out.write(line + "\n")


NO_PROBE = Probe(None)


def tone(freq_hz: float, seconds: float, sample_rate: int) -> bytes:
    """A sine tone with 10 ms ramps (no clicks), s16le."""
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    wave = np.sin(2 * math.pi * freq_hz * t) * AMPLITUDE
    ramp = min(n // 2, sample_rate // 100)
    if ramp:
        envelope = np.linspace(0.0, 1.0, ramp)
        wave[:ramp] *= envelope
        wave[-ramp:] *= envelope[::-1]
    return (wave * 32767).astype("<i2").tobytes()


frame_dbfs = energy_db    # level of one s16le frame in dBFS (-100 for digital silence)


@dataclass
class _Utterance:
    voiced_ms: int = 0
    silence_ms: int = 0

    def push(self, voiced: bool) -> bool:
        """Feed one 20 ms frame; True when an utterance just ended."""
        if voiced:
            self.voiced_ms += 20
            self.silence_ms = 0
            return False
        if self.voiced_ms >= MIN_SPEECH_MS:
            self.silence_ms += 20
            if self.silence_ms >= END_SILENCE_MS:
                self.voiced_ms = self.silence_ms = 0
                return True
        else:
            self.voiced_ms = 0
        return False


async def _echo_digits(leg: CallLeg, digits: str) -> None:
    await asyncio.sleep(DIGIT_TONE_S + 0.1)
    send = getattr(leg, "send_dtmf", None)          # SipLeg has it; the CallLeg protocol does not need it
    if send is None:
        return
    for digit in digits:
        try:
            await send(digit)
        except Exception as exc:                     # the call ended, or no telephone-event negotiated
            log.debug("demo dtmf echo failed: %s", exc)
            return
        await asyncio.sleep(0.25)


async def demo_call(leg: CallLeg, transfer_target: str | None = None, probe: Probe = NO_PROBE) -> None:
    """Greeting, then echo DTMF and answer speech with a tone until the caller hangs up; the digit 0
    transfers the call to `transfer_target` (REFER with X-Veratur-Case and User-to-User headers)."""
    rate = leg.sample_rate
    call_id = leg.info.call_id
    greeting = b"".join(tone(f, NOTE_S, rate) for f in GREETING_NOTES_HZ)
    leg.play(greeting)
    utterance = _Utterance()
    keyed = ""
    background: set[asyncio.Task[None]] = set()
    deadline = time.monotonic() + MAX_CALL_S
    events = leg.events()
    while True:
        try:
            event = await asyncio.wait_for(anext(events), max(0.1, deadline - time.monotonic()))
        except (TimeoutError, StopAsyncIteration):
            break
        if isinstance(event, HangupIn):
            log.info("demo call ended %s", kv(call_id=call_id, reason=event.reason, keyed=keyed or "-"))
            probe.record(call_id, "ended", reason=event.reason, keyed=keyed)
            return
        if isinstance(event, DtmfIn):
            keyed += event.digit
            log.info("demo dtmf %s", kv(call_id=call_id, digit=event.digit))
            probe.record(call_id, "dtmf", digit=event.digit)
            if keyed.endswith("**"):
                break
            leg.clear_playback()
            if event.digit == "0" and transfer_target:
                result = await leg.transfer(transfer_target, {
                    "X-Veratur-Case": "DEMO-0001", "User-to-User": "56455241545552;encoding=hex"})
                log.info("demo transfer %s", kv(call_id=call_id, ok=result.ok, code=result.status_code))
                probe.record(call_id, "transfer", ok=result.ok, code=result.status_code)
                if result.ok:
                    return
                continue
            leg.play(tone(REPLY_TONE_HZ / 2, DIGIT_TONE_S, rate))
            if event.digit == "#":
                # Echo the keyed string back as RFC 4733 after the tone: an outgoing DTMF event replaces the
                # audio packets while it lasts, so sending it at once would swallow the tone.
                echo = asyncio.create_task(_echo_digits(leg, keyed.rsplit("#", 2)[-2] + "#"))
                background.add(echo)
                echo.add_done_callback(background.discard)
        elif isinstance(event, AudioIn):
            for frame in event.frames:
                if utterance.push(frame_dbfs(frame.pcm) > VOICED_DBFS) and not leg.queued_playback_ms():
                    log.info("demo utterance %s", kv(call_id=call_id))
                    probe.record(call_id, "utterance")
                    leg.play(tone(REPLY_TONE_HZ, REPLY_S, rate))
    probe.record(call_id, "ended", reason="handler", keyed=keyed)
    await leg.hangup()


DEMO_APP = "testkit.demo_handler:factory"
"""The `--app` value that makes a worker answer with this handler."""


def factory(settings: Settings) -> Callable[[CallLeg], Awaitable[None]]:
    """`veratur ivr --app testkit.demo_handler:factory`: the SIP-only handler, transfers to the agent queue."""
    return functools.partial(demo_call, transfer_target=settings.escalation.agent_queue_uri,
                             probe=Probe(settings.data_dir / PROBE_FILE))
