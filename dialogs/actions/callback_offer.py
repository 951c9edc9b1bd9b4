"""The question at the end of a phone-started trámite: "¿Quiere que le llamemos cuando cambie el estado?".

Asked after the folio/PIN read-back is done (the caller said no to hearing it again), only when the node places
callbacks (Resources.callback_prefixes, from outbound.enabled/allowed_prefixes), the conversation opened a case
(slot case_folio) and the caller's number is inside the dial plan — a number we could not dial is never
promised a call. A yes stores a standby callback (case_bridge.callbacks.accept_callback) to the number on record
(the caller's), which the case's next status change on any channel makes due. Bare yes/no and the keys 1/2 reach
here through action_yes_no / action_dtmf_menu with the custom question "callback_offer": no NLU or domain change.
"""
from __future__ import annotations

import asyncio
import logging

from rasa_sdk import Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher

from dialogs.actions.context import call_meta
from dialogs.actions.payloads import YES_NO_PHRASES, expect, say
from dialogs.actions.resources import Resources
from foundation import dialplan
from foundation.logs import kv

log = logging.getLogger("dialogs.actions.callback_offer")

QUESTION = "callback_offer"
OFFER_TEXT = ("¿Quiere que le llamemos a este número cuando cambie el estado de su trámite? Diga sí o no, o marque "
              "uno para sí y dos para no.")
ACCEPTED_TEXT = ("Listo. Le llamaremos cuando cambie el estado de su trámite; antes de decirle nada le pediremos su "
                 "NIP. ¿Le ayudo con algo más?")
REFUSED_NUMBER_TEXT = "Ese número pidió no recibir llamadas, así que no le llamaremos. ¿Le ayudo con algo más?"
FAILED_TEXT = "No pude registrar la llamada en este momento. ¿Le ayudo con algo más?"


def offerable_folio(res: Resources | None, tracker: Tracker) -> str | None:
    """The folio to offer a callback for, or None when the offer must not be made."""
    if res is None or res.cases is None or not res.callback_prefixes:
        return None
    folio = tracker.get_slot("case_folio")
    meta = call_meta(tracker)
    if not folio or meta.channel != "phone":
        return None
    if not dialplan.check(meta.caller_number, list(res.callback_prefixes)).ok:
        return None                         # withheld, foreign or outside the plan: no promise we cannot keep
    return str(folio)


def offer(dispatcher: CollectingDispatcher, folio: str) -> None:
    say(dispatcher, OFFER_TEXT, hint=expect("yes_no", YES_NO_PHRASES), question=QUESTION, case_folio=folio)


async def answer(yes: bool, res: Resources | None, dispatcher: CollectingDispatcher,
                 tracker: Tracker) -> list[EventType]:
    folio = offerable_folio(res, tracker)
    if not yes or folio is None or res is None or res.cases is None:
        dispatcher.utter_message(response="utter_anything_else")
        return []
    meta = call_meta(tracker)
    try:
        view = await asyncio.to_thread(res.cases.accept_callback, folio, None,
                                       allowed_prefixes=list(res.callback_prefixes))
    except Exception as exc:     # the record is down: say so, the case itself is already safe
        log.error(kv(event="callback_accept_failed", call_id=meta.call_id, case=folio,
                     error=f"{type(exc).__name__}: {exc}"[:200]))
        say(dispatcher, FAILED_TEXT, question="anything_else")
        return []
    log.info(kv(event="callback_accepted", call_id=meta.call_id, case=folio, job=view.id, state=view.state))
    if view.state in ("invalid", "opted_out"):
        say(dispatcher, REFUSED_NUMBER_TEXT if view.state == "opted_out" else FAILED_TEXT, question="anything_else")
        return []
    say(dispatcher, ACCEPTED_TEXT, question="anything_else")
    return []
