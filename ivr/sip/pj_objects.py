"""The pjsua2 objects the edge subclasses, and small pjsua2 helpers. Every callback runs on the owner thread and
hands over to the edge; no exception may escape into pjsip (it would abort the process)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import Protocol

import pjsua2 as pj

from foundation.logs import mask_phone
from ivr.call.leg import TransferResult
from ivr.sip.leg import SipLeg
from ivr.sip.media_port import LegMediaPort

log = logging.getLogger("ivr.sip.edge")
pjlog = logging.getLogger("ivr.sip.edge.pjsip")


class EdgeCallbacks(Protocol):
    """What the pjsua2 objects call back into (implemented by `ivr.sip.edge.SipEdge`, on the owner thread)."""

    def on_incoming(self, account: pj.Account, prm: pj.OnIncomingCallParam) -> None: ...
    def on_call_state(self, call: PjCall) -> None: ...
    def on_media_state(self, call: PjCall) -> None: ...
    def on_transfer_request(self, call: PjCall, prm: pj.OnCallTransferRequestParam) -> None: ...
    def on_transfer_status(self, call: PjCall, prm: pj.OnCallTransferStatusParam) -> None: ...


MAX_PJ_LOG_CHARS = 240
_LONG_DIGITS = re.compile(r"\d{7,}")            # phone numbers (and CURP-free): masked to the last 4 digits


def summarize_pj_log(message: str, *, whole: bool = False) -> str:
    """A pjsip log entry made safe for the log: pjsip appends the whole offending packet (From,
    P-Asserted-Identity with the caller's number, any size) to the first line of an error. Keep that first line,
    bounded, with digit runs masked; `whole` (operator asked for pjsip message logging) keeps every line, masked."""
    text = message.strip()
    if not whole:
        first, _, rest = text.partition("\n")
        dropped = rest.count("\n") + 1 if rest else 0
        text = first[:MAX_PJ_LOG_CHARS] + ("..." if len(first) > MAX_PJ_LOG_CHARS else "")
        if dropped:
            text += f" [{dropped} lines of the message not logged]"
    return _LONG_DIGITS.sub(lambda m: mask_phone(m.group()), text)


class PjLogWriter(pj.LogWriter):
    """pjsip's log lines into Python logging (stderr), never onto stdout where the worker prints its URI."""

    def write(self, entry: pj.LogEntry) -> None:
        try:
            level = logging.ERROR if entry.level <= 1 else logging.WARNING if entry.level == 2 else logging.DEBUG
            pjlog.log(level, "%s", summarize_pj_log(entry.msg, whole=entry.level >= 4))
        except Exception:
            pass


class PjAccount(pj.Account):
    def __init__(self, edge: EdgeCallbacks) -> None:
        super().__init__()
        self._edge = edge

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        try:
            self._edge.on_incoming(self, prm)
        except Exception:
            log.exception("incoming call handling failed")


class PjCall(pj.Call):
    """A pjsua call with its leg, media port and transfer state; all callbacks run on the owner thread."""

    def __init__(self, edge: EdgeCallbacks, account: pj.Account, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.edge = edge
        self.leg: SipLeg | None = None
        self.port: LegMediaPort | None = None
        self.audio: pj.AudioMedia | None = None
        self.media_index = -1
        self.audio_port_id = -1                 # conference slot of the stream our port is connected to
        self.held_since: float | None = None    # the caller holds the call (a=sendonly/inactive)
        self.confirmed = False
        self.gone = False
        self.hangup_reason: str | None = None
        self.connect_future: asyncio.Future[SipLeg] | None = None
        self.transfer_future: asyncio.Future[TransferResult] | None = None
        self.last_rx_packets = -1
        self.last_rx_change = time.monotonic()
        self.sip_call_id = ""
        self.signal_hosts: set[str] = set()     # INVITE source and Contact: RTP from there is the caller's
        self.rtp_filter: tuple[str, tuple[object, ...]] | None = None   # (local RTP, networks) last attached

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        try:
            self.edge.on_call_state(self)
        except Exception:
            log.exception("onCallState failed")

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        try:
            self.edge.on_media_state(self)
        except Exception:
            log.exception("onCallMediaState failed")

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        try:
            if self.leg is not None:
                self.leg.deliver_dtmf(prm.digit)
        except Exception:
            log.exception("onDtmfDigit failed")

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        try:
            self.edge.on_transfer_request(self, prm)
        except Exception:
            prm.statusCode = 500
            log.exception("onCallTransferRequest failed")

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        try:
            self.edge.on_transfer_status(self, prm)
        except Exception:
            log.exception("onCallTransferStatus failed")


@contextlib.contextmanager
def quiet_stdio(quiet: bool) -> Iterator[None]:
    """Silence fds 1 and 2 (pjlib writes its start-up lines to stdout before logConfig applies)."""
    if not quiet:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def sip_header(name: str, value: str) -> pj.SipHeader:
    header = pj.SipHeader()
    header.hName = name
    header.hValue = value
    return header
