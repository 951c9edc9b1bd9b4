"""Conversation control: repeat, agent, goodbye, not-understood, the key-press menu and bare yes/no answers.

DTMF convention: the engine sends collected keys as the intent message `/dtmf{"digits":"<keys>"}` (a spoken
"uno", "la segunda" gets the same intent from the NLU). What keys mean depends on the question just asked
(custom `question` of the last bot message) and on open forms:
    main menu      1 tourism · 2 trámite information · 3 trámite status · 0 agent · 9 repeat
    disambiguation 1..3 pick that option           readback   1 repeat · 2 done
    callback offer 1 yes · 2 no
    agent offer    0 or 1 transfer · 2 done        5+ keys    a folio: starts the status form with it
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from dialogs.actions import callback_offer
from dialogs.actions.context import (
    entity_values,
    last_custom,
    last_question,
    latest_intent,
    latest_text,
    previous_bot_turn,
)
from dialogs.actions.numbers import spoken_digits
from dialogs.actions.payloads import MENU_PHRASES, NO_MATCH_TRANSFER_TEXT, TRANSFER_TEXT, expect, say
from dialogs.actions.rescue import rescue, worth_rescuing
from dialogs.actions.resources import Resources, UsesResources
from dialogs.actions.spoken import say_more
from dialogs.actions.status import said_folio
from dialogs.actions.tramites import ORDINALS, answer_tramite
from dialogs.catalog_match import normalize

MAX_MISSES = 3
"""Turns in a row not understood before the caller is handed to an agent."""
FORM_SLOTS = ("folio", "verification", "status_result", "start_tramite", "field_answer", "start_field",
              "start_answers", "confirm_start", "requested_slot")


def _stop_loop(tracker: Tracker) -> list[EventType]:
    """Events that close an open form and forget its half-collected answers."""
    if not (tracker.active_loop or {}).get("name"):
        return []
    return [ActiveLoop(None), *[SlotSet(s, None) for s in FORM_SLOTS]]


def resend(dispatcher: CollectingDispatcher, messages: list[dict[str, Any]]) -> None:
    for m in messages:
        dispatcher.utter_message(text=m.get("text"), json_message=m.get("custom"))


def pressed(tracker: Tracker) -> str:
    """The keys of a /dtmf message, or digits/ordinal a caller said instead."""
    for value in entity_values(tracker, "digits"):
        keys = "".join(ch for ch in value if ch.isdigit() or ch in "*#")
        if keys:
            return keys.rstrip("#")
    text = latest_text(tracker)
    digits = spoken_digits(text)
    if digits:
        return digits
    for word in normalize(text).split():
        if ORDINALS.get(word, 0) > 0:
            return str(ORDINALS[word])
    return ""


class ActionRepeat(Action):
    """Say again what was said before the caller's request. Inside a form, the form asks again by itself."""

    def name(self) -> str:
        return "action_repeat"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: dict[str, Any]) -> list[EventType]:
        if (tracker.active_loop or {}).get("name"):
            return []
        messages = previous_bot_turn(tracker)
        if messages:
            resend(dispatcher, messages)
        else:
            dispatcher.utter_message(response="utter_help")
        return []


class ActionTransferAgent(Action):
    def name(self) -> str:
        return "action_transfer_agent"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: dict[str, Any]) -> list[EventType]:
        dispatcher.utter_message(response="utter_transfer")
        return _stop_loop(tracker)


class ActionGoodbye(Action):
    def name(self) -> str:
        return "action_goodbye"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: dict[str, Any]) -> list[EventType]:
        dispatcher.utter_message(response="utter_goodbye")
        return _stop_loop(tracker)


GOODBYE_WORDS = re.compile(r"\b(adios|hasta (luego|pronto|manana)|bye|bai|es todo|seria todo|nada mas|"
                           r"me despido|nos vemos|que (este|le vaya) bien|ya me voy|voy a colgar|ahi le dejo)\b")


class ActionThanks(Action):
    """'Gracias' after an answer offers more help once; thanks said to that offer, or thanks with a goodbye
    ("eso es todo, muchas gracias, hasta luego"), end the call politely."""

    def name(self) -> str:
        return "action_thanks"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: dict[str, Any]) -> list[EventType]:
        said = normalize(latest_text(tracker))
        if GOODBYE_WORDS.search(said) or last_question(tracker) == "anything_else":
            dispatcher.utter_message(response="utter_goodbye")
            return _stop_loop(tracker)
        dispatcher.utter_message(response="utter_thanks")
        return []


class ActionVeraturFallback(UsesResources, Action):
    """Not understood: answer from the catalogs if the words name a city or a trámite; else ask to rephrase
    (with the key menu); the third time in a row, hand over to an agent."""

    def name(self) -> str:
        return "action_veratur_fallback"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: dict[str, Any]) -> list[EventType]:
        if not (tracker.active_loop or {}).get("name") and worth_rescuing(tracker):
            folio = said_folio(latest_text(tracker), checked=True)
            if folio:       # "...en qué va mi trámite, tengo el folio ...": a valid folio says what is wanted
                return [SlotSet("folio", folio), FollowupAction("status_form")]
            answered = rescue(self.res, dispatcher, tracker)
            if answered is not None:
                return answered
        misses = 0
        for event in reversed(list(tracker.events)):
            if event.get("event") != "user":
                continue
            if ((event.get("parse_data") or {}).get("intent") or {}).get("name") != "nlu_fallback":
                break
            misses += 1
        if misses >= MAX_MISSES:
            say(dispatcher, NO_MATCH_TRANSFER_TEXT, hint=expect("none"), transfer=True, transfer_reason="no_match")
            return _stop_loop(tracker)
        dispatcher.utter_message(response="utter_please_rephrase")
        return []


class ActionDtmfMenu(UsesResources, Action):
    def name(self) -> str:
        return "action_dtmf_menu"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: dict[str, Any]) -> list[EventType]:
        keys = pressed(tracker)
        question = last_question(tracker)
        keyed = latest_text(tracker).startswith("/dtmf")
        if question == "disambiguation" and tracker.get_slot("tramite_choices"):
            return answer_tramite(self.res.tramites, dispatcher, tracker, digits=keys)
        if question in ("readback", "more", callback_offer.QUESTION) and keys in ("1", "2"):    # 1 yes, 2 no
            return await _yes_no(keys == "1", question, dispatcher, tracker, lambda: self.res)
        if question == "agent_offer" and keys in ("0", "1", "2"):
            return await _yes_no(keys != "2", "agent_offer", dispatcher, tracker)
        folio = keys if len(keys) >= FOLIO_MIN_DIGITS else ("" if keyed else folio_in_words(latest_text(tracker)))
        if folio and latest_intent(tracker) in ("dtmf", "inform_number"):
            return [SlotSet("folio", folio), FollowupAction("status_form")]
        if not keyed and keys not in MENU_KEYS:
            # A number said in a sentence that is no menu key (a PIN said again after the status, "tengo el
            # folio ..."): "Esa opción no existe" is the answer to a key, not to words.
            dispatcher.utter_message(response="utter_please_rephrase")
            return []
        if keys == "1":
            dispatcher.utter_message(response="utter_ask_city")
            return [SlotSet("topic", None)]
        if keys == "2":
            dispatcher.utter_message(response="utter_ask_tramite")
            return [SlotSet("tramite", None), SlotSet("tramite_field", "summary")]
        if keys == "3":
            return [FollowupAction("status_form")]
        if keys == "0":
            dispatcher.utter_message(response="utter_transfer")
            return []
        if keys in ("9", "*"):
            resend(dispatcher, previous_bot_turn(tracker))
            return []
        say(dispatcher, "Esa opción no existe. Marque uno para turismo, dos para información de trámites, tres para "
                        "el estado de un trámite, o cero para un asesor.",
            hint=expect("menu", MENU_PHRASES))
        return []


MENU_KEYS = frozenset({"0", "1", "2", "3", "9", "*"})
FOLIO_MIN_DIGITS = 5


def folio_in_words(text: str) -> str:
    """The last stretch of numbers in a spoken turn long enough for a folio ("quiero saber cómo va mi trámite, mi
    folio es siete seis ...", "folio 1425 0316 por favor"), else "". Unlike the status form's `said_folio`
    default (first stretch of exactly eight digits), any length from FOLIO_MIN_DIGITS up: the status form then
    says what is wrong with a short or invalid folio."""
    return said_folio(text, min_digits=FOLIO_MIN_DIGITS, max_digits=None, last=True) or ""


async def _yes_no(yes: bool, question: str | None, dispatcher: CollectingDispatcher,
                  tracker: Tracker, res: Callable[[], Resources] | None = None) -> list[EventType]:
    """`res` is called only where the answer needs the record (the callback offer): a bare yes elsewhere loads
    nothing."""
    if question == "more":
        rest = tracker.get_slot("more_text")
        if yes and rest:
            return say_more(dispatcher, str(rest), "¿Le ayudo con algo más?")
        dispatcher.utter_message(response="utter_anything_else")
        return [SlotSet("more_text", None)]
    if question == "readback":
        if yes:
            resend(dispatcher, previous_bot_turn(tracker))
            return []
        folio = callback_offer.offerable_folio(res() if res else None, tracker)
        if folio is not None:                # the end of a phone-started trámite: offer the status callback
            callback_offer.offer(dispatcher, folio)
            return []
        dispatcher.utter_message(response="utter_anything_else")
        return []
    if question == callback_offer.QUESTION:
        return await callback_offer.answer(yes, res() if res else None, dispatcher, tracker)
    if question == "agent_offer":
        if yes:
            reason = (last_custom(tracker) or {}).get("offer_reason") or "caller_request"
            say(dispatcher, TRANSFER_TEXT, hint=expect("none"), transfer=True, transfer_reason=str(reason))
            return []
        dispatcher.utter_message(response="utter_anything_else")
        return []
    if question == "anything_else":
        if yes:
            say(dispatcher, "Dígame.")
            return []
        dispatcher.utter_message(response="utter_goodbye")
        return []
    if not yes and (tracker.active_loop or {}).get("name"):
        say(dispatcher, "De acuerdo, lo dejamos aquí. ¿Le ayudo con algo más?", question="anything_else")
        return _stop_loop(tracker)
    say(dispatcher, "Dígame en qué le ayudo: turismo, información de trámites o el estado de su trámite.",
        hint=expect("menu", MENU_PHRASES))
    return []


class ActionYesNo(UsesResources, Action):
    """A bare "sí" or "no": its meaning comes from the question just asked."""

    def name(self) -> str:
        return "action_yes_no"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: dict[str, Any]) -> list[EventType]:
        return await _yes_no(latest_intent(tracker) == "affirm", last_question(tracker), dispatcher, tracker,
                             lambda: self.res)
