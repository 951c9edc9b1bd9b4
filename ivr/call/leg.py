"""The seam between the SIP edge and the call session.

`ivr.sip.edge` implements `CallLeg` with pjsua2 (threads kept inside it); tests implement it in memory. The session
reads `LegEvent`s from `events()` and writes audio with `play()`. Everything here is called on the event loop.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from ivr.speech.frames import AudioFrame


@dataclass(frozen=True, slots=True)
class AudioIn:
    frames: tuple[AudioFrame, ...]     # batched: the edge hands over several 20 ms frames per wake-up


@dataclass(frozen=True, slots=True)
class DtmfIn:
    digit: str                         # one of 0-9 * # A-D
    timestamp: float


@dataclass(frozen=True, slots=True)
class HangupIn:
    reason: str                        # "bye", "cancel", "media_timeout", "shutdown", ...


LegEvent = AudioIn | DtmfIn | HangupIn


@dataclass(frozen=True, slots=True)
class TransferResult:
    ok: bool
    status_code: int                   # final SIP code from the NOTIFY sipfrag (or of the bridged INVITE)
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CallInfo:
    call_id: str                       # SIP Call-ID
    caller: str                        # user part of From (a phone number: mask it in logs)
    called: str                        # user part of the Request-URI
    node: str                          # worker that holds the call
    headers: dict[str, str] = field(default_factory=dict)


class CallLeg(Protocol):
    """One answered SIP call as the session sees it."""

    info: CallInfo
    sample_rate: int

    def events(self) -> AsyncIterator[LegEvent]:
        """Inbound audio batches, DTMF digits and, last, the hang-up."""
        ...

    def play(self, pcm: bytes) -> None:
        """Append s16le PCM at `sample_rate` to the outgoing buffer (sent in 20 ms frames)."""
        ...

    def clear_playback(self) -> None:
        """Drop queued outgoing audio at once (barge-in)."""
        ...

    def queued_playback_ms(self) -> int:
        """Milliseconds of outgoing audio not yet sent."""
        ...

    async def transfer(self, target_uri: str, headers: dict[str, str]) -> TransferResult:
        """Blind transfer (REFER with `headers`) or bridge, per configuration; waits for the final result."""
        ...

    async def hangup(self) -> None:
        """Send BYE (idempotent)."""
        ...
