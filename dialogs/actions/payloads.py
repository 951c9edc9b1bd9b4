"""The custom payload each bot message carries for the phone engine (parsed by ivr/dialogue/rasa.py).

    {"expect": {"kind": "digits", "max_digits": 8, "terminator": "#", "phrases": [...]},
     "transfer": true, "hangup": true, "case_folio": "12345678", "question": "readback"}

`expect` mirrors ivr.dialogue.interface.Expect; `question` tells the next turn what a bare "sí"/"no" or a key press
answers (anything_else | readback | agent_offer | disambiguation); `transfer_reason` says why a transfer
(ivr.call.escalation.REASONS; `offer_reason` on an agent offer is the reason if the caller accepts); `redacted` is
the message as the transcript must keep it (the PIN masked).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rasa_sdk.executor import CollectingDispatcher

from foundation.vocabulary import ExpectKind

MENU_PHRASES = ("uno", "dos", "tres", "cero", "turismo", "trámites", "estado de mi trámite", "asesor")
YES_NO_PHRASES = ("sí", "no", "repita", "asesor")
TRANSFER_TEXT = "Con gusto."
"""What the dialogue says when it hands the call over. The handoff itself ("Le comunico con un agente. Por favor
espere en la línea.") is the engine's to say (ivr.call.escalation), after these words: it also says it when the
engine decides the transfer alone, and what follows when no agent answers. A dialogue that announced the handoff
too made the caller hear it twice."""
NO_MATCH_TRANSFER_TEXT = "Disculpe, no logro entenderle."
FOLIO_MAX_DIGITS = 8
VERIFICATION_MAX_DIGITS = 4


def expect(kind: ExpectKind = "free", phrases: Sequence[str] = (), max_digits: int = 1,
           terminator: str = "#") -> dict[str, Any]:
    """An expected-answer hint: drives the engine's ASR grammar, endpointing and DTMF collection."""
    hint: dict[str, Any] = {"kind": kind}
    if phrases:
        hint["phrases"] = list(phrases)
    if kind in ("digits", "menu", "yes_no"):
        hint["max_digits"] = max_digits
        hint["terminator"] = terminator
    return hint


def say(dispatcher: CollectingDispatcher, text: str, *, hint: dict[str, Any] | None = None,
        transfer: bool = False, hangup: bool = False, case_folio: str | None = None,
        question: str | None = None, transfer_reason: str | None = None, offer_reason: str | None = None,
        redacted: str | None = None) -> None:
    """Send one spoken message with its payload."""
    custom: dict[str, Any] = {"expect": hint or expect("free")}
    if transfer:
        custom["transfer"] = True
    if hangup:
        custom["hangup"] = True
    if case_folio:
        custom["case_folio"] = case_folio
    if question:
        custom["question"] = question
    if transfer_reason:
        custom["transfer_reason"] = transfer_reason
    if offer_reason:
        custom["offer_reason"] = offer_reason
    if redacted:
        custom["redacted"] = redacted
    dispatcher.utter_message(text=text, json_message=custom)
