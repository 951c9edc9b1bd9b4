"""The asyncio face of one pjsua2 call: `SipLeg` implements `ivr.call.leg.CallLeg`.

Threads meet here through plain deques (append/popleft are atomic in CPython):
- the pjmedia clock thread calls `rx_frame()` / `tx_frame()` 50 times a second each (ivr.sip.media_port);
- the SIP owner thread calls `deliver_hangup()`; DTMF may arrive on either thread;
- everything else runs on the event loop.
Inbound audio reaches the loop in batches: the media thread only appends to a deque, and the edge's pump task
on the loop drains every live leg each RX_PUMP_MS (no thread-safe wake-up per frame: each one costs a self-pipe
write and a GIL hand-over on the media clock thread, which serves every call of the process).
No pjsua2 here: commands that touch SIP go through the `LegOwner` (ivr.sip.edge.SipEdge).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator
from typing import Protocol

from foundation import vocabulary
from foundation.logs import kv
from ivr.call.leg import AudioIn, CallInfo, DtmfIn, HangupIn, LegEvent, TransferResult
from ivr.speech.frames import AudioFrame, frame_bytes

log = logging.getLogger("ivr.sip.edge")

RX_PUMP_MS = 40                # inbound audio reaches the session at most this late (20 ms on average)
MAX_EVENT_BACKLOG = 500        # ~30 s of unread audio batches; beyond it inbound audio is dropped (slow consumer)
DTMF_DIGITS = frozenset(vocabulary.DTMF_DIGITS)


class LegOwner(Protocol):
    """What a leg asks of the SIP edge (run on the SIP owner thread by ivr.sip.edge)."""

    async def hangup_leg(self, leg: SipLeg, reason: str) -> None: ...

    async def transfer_leg(self, leg: SipLeg, target_uri: str, headers: dict[str, str]) -> TransferResult: ...

    async def send_dtmf(self, leg: SipLeg, digits: str) -> None: ...


class SipLeg:
    """One SIP call as the session sees it (see ivr.call.leg.CallLeg)."""

    def __init__(self, info: CallInfo, sample_rate: int, loop: asyncio.AbstractEventLoop, owner: LegOwner,
                 outbound: bool = False, max_dtmf_per_second: int = 20) -> None:
        self.info = info
        self.sample_rate = sample_rate
        self.outbound = outbound
        self.frame_len = frame_bytes(sample_rate)
        self._loop = loop
        self._owner = owner
        self._events: asyncio.Queue[LegEvent] = asyncio.Queue()
        self._rx: collections.deque[AudioFrame] = collections.deque()
        self._tx: collections.deque[bytes] = collections.deque()
        self._ended = False
        self._ended_event = asyncio.Event()
        self._hangup_sent = False
        # Counters read by metrics/bench; written by one thread each.
        self.rx_frames = 0
        self.dtmf_digits = 0
        self.dtmf_dropped = 0
        self._dtmf_cap = max_dtmf_per_second
        self._dtmf_window = 0           # the monotonic second the digits below were counted in
        self._dtmf_in_window = 0
        self.rx_dropped_batches = 0
        self.tx_frames = 0
        self.tx_underruns = 0
        self.rx_callback_ns = 0
        self.tx_callback_ns = 0
        self.last_tx_at = 0.0           # monotonic time the last queued frame was taken for sending
        self.answered_at = time.monotonic()
        self.media_proto = ""           # SDP transport once media is up: RTP/AVP, or RTP/SAVP (SRTP, sip.srtp)
        self.hangup_reason: str | None = None

    # ---- event loop side (CallLeg) -------------------------------------------------------------------
    async def events(self) -> AsyncIterator[LegEvent]:
        """Audio batches and DTMF in arrival order; the HangupIn comes last and ends the iteration."""
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, HangupIn):
                return

    def play(self, pcm: bytes) -> None:
        """Queue s16le PCM for sending; a last partial frame is padded with silence."""
        if self._ended or not pcm:
            return
        n = self.frame_len
        for start in range(0, len(pcm), n):
            chunk = pcm[start:start + n]
            if len(chunk) < n:
                chunk = chunk + bytes(n - len(chunk))
            self._tx.append(chunk)

    def clear_playback(self) -> None:
        self._tx.clear()

    def queued_playback_ms(self) -> int:
        return len(self._tx) * 20

    async def transfer(self, target_uri: str, headers: dict[str, str]) -> TransferResult:
        if self._ended:
            return TransferResult(False, 481, "call already ended")
        return await self._owner.transfer_leg(self, target_uri, headers)

    async def hangup(self) -> None:
        if self._hangup_sent or self._ended:
            return
        self._hangup_sent = True
        await self._owner.hangup_leg(self, "local")

    async def send_dtmf(self, digits: str) -> None:
        """RFC 4733 digits towards the peer (used by the test caller)."""
        bad = set(digits) - DTMF_DIGITS
        if bad:
            raise ValueError(f"not DTMF digits: {''.join(sorted(bad))!r}")
        await self._owner.send_dtmf(self, digits)

    @property
    def ended(self) -> bool:
        return self._ended

    async def wait_ended(self, timeout_s: float) -> bool:
        """Wait until the call is gone; False if it is still up after `timeout_s`."""
        try:
            await asyncio.wait_for(self._ended_event.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def wait_playout(self, poll_s: float = 0.01) -> None:
        """Return once every queued frame has been handed to pjmedia (or the call ended)."""
        # the media thread empties the deque; waking the loop from it per frame would cost more than polling
        while self._tx and not self._ended:  # noqa: ASYNC110
            await asyncio.sleep(poll_s)

    def pump(self) -> None:
        """Hand the frames received so far to the session as one AudioIn (called by the edge's pump task)."""
        self._drain_rx()

    def _drain_rx(self) -> None:
        frames: list[AudioFrame] = []
        rx = self._rx
        if self._ended:
            rx.clear()
            return
        while rx:
            frames.append(rx.popleft())
        if not frames:
            return
        if self._events.qsize() >= MAX_EVENT_BACKLOG:
            self.rx_dropped_batches += 1
            return
        self._events.put_nowait(AudioIn(tuple(frames)))

    def _push(self, event: LegEvent) -> None:
        if not self._ended:
            self._events.put_nowait(event)

    def _end(self, reason: str) -> None:
        if self._ended:
            return
        self._drain_rx()
        self._ended = True
        self.hangup_reason = reason
        self._tx.clear()
        self._events.put_nowait(HangupIn(reason))
        self._ended_event.set()
        log.info("leg ended %s", kv(call_id=self.info.call_id, reason=reason, rx_frames=self.rx_frames,
                                    tx_frames=self.tx_frames, underruns=self.tx_underruns,
                                    dtmf=self.dtmf_digits, dtmf_dropped=self.dtmf_dropped))

    # ---- other threads -------------------------------------------------------------------------------
    def rx_frame(self, pcm: bytes) -> None:
        """Called on the media thread with one inbound frame."""
        self.rx_frames += 1
        self._rx.append(AudioFrame(pcm, self.sample_rate, time.monotonic()))

    def tx_frame(self) -> bytes | None:
        """Called on the media thread: the next outbound frame, or None (send silence)."""
        try:
            data = self._tx.popleft()
        except IndexError:
            self.tx_underruns += 1
            return None
        self.tx_frames += 1
        self.last_tx_at = time.monotonic()
        return data

    def deliver_dtmf(self, digit: str) -> None:
        """Called on a pjsua thread with one received digit. At most max_dtmf_per_second digits a second reach the
        session: a flood (RFC 4733 events or INFOs by the thousand) would otherwise fill its queue and the dialogue's
        turns. Two threads may count here at once; a digit more or less in a window does not matter."""
        if digit.upper() not in DTMF_DIGITS:
            return
        now = time.monotonic()
        window = int(now)
        if window != self._dtmf_window:
            self._dtmf_window, self._dtmf_in_window = window, 0
        self._dtmf_in_window += 1
        if self._dtmf_in_window > self._dtmf_cap:
            self.dtmf_dropped += 1
            if self._dtmf_in_window == self._dtmf_cap + 1:
                log.warning("dtmf flood %s", kv(call_id=self.info.call_id, limit_per_s=self._dtmf_cap,
                                                dropped_total=self.dtmf_dropped))
            return
        self.dtmf_digits += 1
        self._call_soon(self._push, DtmfIn(digit.upper(), now))

    def deliver_hangup(self, reason: str) -> None:
        """Called on the SIP owner thread when the call is gone."""
        self._call_soon(self._end, reason)

    def _call_soon(self, fn: object, *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)  # type: ignore[arg-type]
        except RuntimeError:        # the loop is closed: the process is exiting, nobody is listening
            pass
