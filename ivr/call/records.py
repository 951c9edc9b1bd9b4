"""What the engine records in the citizen's case: the call, each transcript turn, the end.

Implemented by `ivr.call.recorder.CaseRecorder` over the case-bridge service API (with a durable outbox when the
database is unreachable). Each caller turn is committed before its reply is spoken: `add_turn` returns after
the write is durable (in the database, or in the node's outbox).
"""
from __future__ import annotations

from typing import Protocol

from foundation.vocabulary import Disposition, Speaker
from ivr.call.leg import CallInfo

__all__ = ["CallRecorder", "Disposition", "Speaker"]


class CallRecorder(Protocol):
    async def call_started(self, info: CallInfo) -> str | None:
        """Record the call; return the folio of the case it is linked to, if one is known."""
        ...

    async def add_turn(self, call_id: str, speaker: Speaker, text: str, intent: str | None = None,
                       confidence: float | None = None) -> None:
        ...

    async def link_case(self, call_id: str, folio: str) -> None:
        """The dialogue identified or opened a case during the call."""
        ...

    async def call_ended(self, call_id: str, disposition: Disposition, transfer_target: str | None = None) -> None:
        ...
