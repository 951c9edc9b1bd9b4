"""The per-call pjmedia port: moves 20 ms PCM frames between pjsua2's media clock thread and a `SipLeg`.

Both callbacks run 50 times a second per call on the pjmedia clock thread, so they do the least possible:
inbound, the frame's bytes are read straight from the SWIG `ByteVector`'s memory (~2 µs; `bytes(frame.buf)`
iterates element by element and costs ~200 µs); outbound, a queued frame is popped (silence on underrun).
No exception may escape a pjsua2 callback (it would keep the call alive past libDestroy and abort at exit).

Ports are pooled and reused by the edge, never deleted while the endpoint runs: pjmedia 2.15's conference
bridge applies port removal asynchronously on its clock thread, so deleting a port object can let the clock call
into freed memory (seen here as callbacks on a half-destroyed Python object, then SIGSEGV). A port between
calls is detached (`leg is None`): it takes nothing and sends silence.
"""
from __future__ import annotations

import ctypes
import logging
import time

import pjsua2 as pj

from ivr.sip.leg import SipLeg

log = logging.getLogger("ivr.sip.edge")

# libstdc++ std::vector layout: begin and end pointers at the object's address.
_VECTOR_POINTERS = ctypes.c_void_p * 2
_AUDIO = pj.PJMEDIA_FRAME_TYPE_AUDIO
MAX_CALLBACK_ERRORS_LOGGED = 3


def read_byte_vector(vector: pj.ByteVector, size: int) -> bytes:
    """The bytes of a SWIG ByteVector without per-element iteration."""
    begin, end = _VECTOR_POINTERS.from_address(int(vector.this))
    if not begin or not end:
        return b""
    return ctypes.string_at(begin, min(size, end - begin))


class LegMediaPort(pj.AudioMediaPort):
    """A pjmedia port at the call rate that feeds `leg.rx_frame` and drains `leg.tx_frame` (when attached)."""

    def __init__(self, frame_len: int, sample_rate: int) -> None:
        super().__init__()
        self.leg: SipLeg | None = None
        self.frame_len = frame_len
        self.sample_rate = sample_rate
        self._silence = pj.ByteVector(bytes(frame_len))
        self._errors = 0

    def create(self, name: str) -> None:
        """Register the port in the conference bridge (SIP owner thread only)."""
        fmt = pj.MediaFormatAudio()
        fmt.type = pj.PJMEDIA_TYPE_AUDIO
        fmt.init(pj.PJMEDIA_FORMAT_PCM, self.sample_rate, 1, 20000, 16)
        self.createPort(name, fmt)

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:
        leg = self.leg
        if leg is None:
            return
        start = time.perf_counter_ns()
        try:
            if frame.type == _AUDIO and frame.size:
                pcm = read_byte_vector(frame.buf, frame.size)
                if len(pcm) == self.frame_len:
                    leg.rx_frame(pcm)
        except Exception:
            self._error("rx")
        leg.rx_callback_ns += time.perf_counter_ns() - start

    def onFrameRequested(self, frame: pj.MediaFrame) -> None:
        leg = self.leg
        start = time.perf_counter_ns()
        try:
            data = leg.tx_frame() if leg is not None else None
            frame.type = _AUDIO
            frame.buf = self._silence if data is None else pj.ByteVector(data)
            frame.size = self.frame_len
        except Exception:
            self._error("tx")
        if leg is not None:
            leg.tx_callback_ns += time.perf_counter_ns() - start

    def _error(self, where: str) -> None:
        self._errors += 1
        if self._errors <= MAX_CALLBACK_ERRORS_LOGGED:
            log.exception("media port %s callback failed call_id=%s", where,
                          self.leg.info.call_id if self.leg is not None else "-")


class MediaPortPool:
    """Ports created once and reused call after call (see the module note on why none is deleted while pjsua runs)."""

    def __init__(self) -> None:
        self._all: list[LegMediaPort] = []           # every port created (kept until after libDestroy)
        self._idle: list[LegMediaPort] = []

    @property
    def created(self) -> int:
        return len(self._all)

    @property
    def in_use(self) -> int:
        return len(self._all) - len(self._idle)

    def acquire(self, leg: SipLeg) -> LegMediaPort:
        """An idle pooled port, or a new one registered in the conference bridge."""
        if self._idle:
            port = self._idle.pop()
        else:
            port = LegMediaPort(leg.frame_len, leg.sample_rate)
            port.create(f"leg{len(self._all)}")
            self._all.append(port)
        port.leg = leg
        return port

    def release(self, port: LegMediaPort) -> None:
        port.leg = None                              # inert until the next call takes it
        self._idle.append(port)

    def abandon_all(self) -> None:
        """After libDestroy: the bridge is gone, so deleting a port would assert in pjsua. Leave the C++ objects
        to the process exit; nothing can call them any more."""
        for port in self._all:
            port.leg = None
            port.thisown = False
        self._all.clear()
        self._idle.clear()
