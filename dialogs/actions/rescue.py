"""Turns the NLU did not place (a fallback, or a greeting with the question in the same breath: "oiga, buenas
tardes, ¿qué hay que ver en Xico?") still get an answer when their words name a city or a trámite of the
catalogs, or follow up on the one of the conversation. Otherwise the caller hears the usual prompt."""
from __future__ import annotations

import re

from rasa_sdk import Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher

from dialogs.actions.context import latest_text
from dialogs.actions.resources import Resources
from dialogs.actions.tourism import answer_tourism, topic_from_text
from dialogs.actions.tramites import answer_tramite, field_from_text
from dialogs.catalog_match import normalize
from dialogs.tramite_resolution import searched

GREETING_WORDS = re.compile(
    r"\b(hola|bueno|buenos|buenas|buen|dias|dia|tardes|noches|que tal|oiga|oye|disculpe|senorita|joven|mire|"
    r"pues|este|eh|mmm|a ver|una pregunta|una duda|una consulta|si|diga|alo)\b")
MIN_CONTENT_WORDS = 2
"""Words left after the greeting and fillers before a greeting is taken as a question."""


def content_words(text: str) -> list[str]:
    return GREETING_WORDS.sub(" ", normalize(text)).split()


def worth_rescuing(tracker: Tracker) -> bool:
    """A spoken turn with words beyond greetings and fillers ("mmm", "bueno" are not questions)."""
    text = latest_text(tracker)
    return bool(text) and not text.startswith("/") and len(content_words(text)) >= MIN_CONTENT_WORDS


def rescue(res: Resources, dispatcher: CollectingDispatcher, tracker: Tracker) -> list[EventType] | None:
    """Answer from the catalogs if the words allow it; None when they do not (the caller gets the prompt)."""
    if not worth_rescuing(tracker):
        return None
    text = latest_text(tracker)
    if res.cities.find_city(text) is not None:
        return answer_tourism(res.cities, dispatcher, tracker, topic=topic_from_text(text))
    found = res.tramites.resolve(text)
    if found.best is not None or found.ambiguous or searched(res.tramites, text):
        return answer_tramite(res.tramites, dispatcher, tracker)
    if tracker.get_slot("city") and topic_from_text(text):
        return answer_tourism(res.cities, dispatcher, tracker, topic=topic_from_text(text))
    if tracker.get_slot("tramite") and field_from_text(text):
        return answer_tramite(res.tramites, dispatcher, tracker)
    return None
