"""What the session asks of a dialogue manager: a caller turn in, what to say and do back.

Implementations: `ivr.dialogue.rasa.RasaDialogue` (the real one, HTTP to `rasa run`) and
`ivr.dialogue.menu.MenuDialogue` (the DTMF menu used as fallback when Rasa is down or slow).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from ivr.speech.expect import Expect

__all__ = ["CallerTurn", "Dialogue", "DialogueReply", "Expect", "TurnContext"]


@dataclass(frozen=True, slots=True)
class TurnContext:
    call_id: str
    case_folio: str | None
    caller_number: str
    channel: str = "phone"


@dataclass(frozen=True, slots=True)
class CallerTurn:
    text: str | None = None            # recognized speech (final)
    dtmf: str | None = None            # collected digits, sent to Rasa as an intent message
    confidence: float | None = None
    event: Literal["start", "speech", "dtmf", "no_input"] = "speech"


@dataclass(frozen=True, slots=True)
class DialogueReply:
    texts: tuple[str, ...]
    expect: Expect = field(default_factory=Expect)
    transfer: bool = False             # hand the call to a call-center agent
    hangup: bool = False
    barge_in: bool = True              # False for legal notices
    intent: str | None = None          # the caller turn's recognized intent (for the transcript)
    intent_confidence: float | None = None
    case_folio: str | None = None      # a case opened or identified during the turn
    fallback: bool = False             # produced by the fallback menu because the real dialogue failed
    transfer_reason: str | None = None  # why `transfer`: caller_request | no_match | no_input |
                                        # verification_locked | dialogue_error (ivr.call.escalation.REASONS)
    transcript_texts: tuple[str, ...] | None = None  # what the transcript stores instead of `texts` when
                                                      # they hold a secret (a PIN read back); None: `texts`


class Dialogue(Protocol):
    async def start(self, ctx: TurnContext) -> DialogueReply:
        """The greeting for a new call."""
        ...

    async def turn(self, ctx: TurnContext, turn: CallerTurn) -> DialogueReply:
        ...

    async def end(self, ctx: TurnContext) -> None:
        """The call is over: release the conversation."""
        ...
