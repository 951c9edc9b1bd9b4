"""Tourism answers for the 12 cities: what to see, what to eat, festivals, how to get there, tourist office.

One action answers every topic. It remembers the city and the topic in slots so a caller can follow up
without naming the city ("¿y qué se come ahí?") or name only a new city to hear the same topic there.
"""
from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from dialogs.actions.context import entity_values, latest_intent, latest_text
from dialogs.actions.payloads import expect, say
from dialogs.actions.resources import UsesResources
from dialogs.actions.tramites import cap, items
from dialogs.catalog import EXACT_SCORE, CityCatalog, FestivalMatch, spoken_list
from dialogs.catalog_match import normalize
from dialogs.catalog_schema import City

TOPIC_BY_INTENT = {
    "ask_attractions": "attractions", "ask_food": "food", "ask_festivals": "festivals",
    "ask_access": "access", "ask_tourist_office": "office",
}
MAX_ITEMS = 3
"""Items read per answer: a caller keeps about three in mind."""
FOLLOW_UP = "¿Quiere saber qué ver, qué comer, sus fiestas, cómo llegar o dónde pedir informes?"


def named_festival(cities: CityCatalog, text: str, city: City | None) -> FestivalMatch | None:
    """The one festival the caller names ("la Candelaria", "Cumbre Tajín"), or None for a generic question
    ("¿cuándo son sus fiestas?" fits festivals everywhere) — then the city's festivals are listed."""
    if not text or text.startswith("/"):
        return None
    anywhere = cities.find_festivals(text)
    if len({m.city.id for m in anywhere}) == 1:
        return anywhere[0] if city is None or anywhere[0].city.id == city.id else None
    if city is not None:
        exact = [m for m in cities.find_festivals(text, city) if m.score >= EXACT_SCORE]
        return exact[0] if len(exact) == 1 else None
    return None


def resolve_city(cities: CityCatalog, tracker: Tracker, topic: str | None) -> City | None:
    """The city the turn is about: named in the text (not as the starting point), or an extracted entity, or
    a festival's city, or — for a follow-up — the city of the conversation."""
    text = latest_text(tracker)
    city = cities.find_city(text) if text and not text.startswith("/") else None
    if city is None:
        for value in entity_values(tracker, "city"):
            city = cities.find_city(value)
            if city is not None:
                break
    if city is None and topic == "festivals":
        festival = named_festival(cities, text, None)
        city = festival.city if festival else None
    if city is None:
        current = tracker.get_slot("city")
        if current:
            city = cities.get(str(current)) or cities.find_city(str(current))
    return city


def answer(city: City, topic: str, origin: City | None = None) -> str:
    """The spoken answer about one topic of one city."""
    name = city.spoken_name
    if topic == "attractions":
        places = city.attractions[:MAX_ITEMS]
        return (f"En {name} puede conocer {spoken_list(items([p.name for p in places]))}. "
                f"{cap(places[0].name)}: {places[0].description}")
    if topic == "food":
        foods = city.foods[:MAX_ITEMS]
        return (f"En {name} lo típico es {spoken_list(items([f.name for f in foods]))}. "
                f"{cap(foods[0].name)}: {foods[0].description}")
    if topic == "festivals":
        parts = [f"{f.name}: {f.when.rstrip('.')}" for f in city.festivals[:MAX_ITEMS]]
        return f"Fiestas de {name}: " + ". ".join(parts) + "."
    if topic == "access":
        routes = []
        wanted = ["from_xalapa", "from_veracruz"]
        if origin is not None and origin.id in ("xalapa", "veracruz"):
            wanted = [f"from_{origin.id}"]
        for key in wanted:
            route = getattr(city.access, key)
            if route is not None:
                start = "Desde Xalapa" if key == "from_xalapa" else "Desde el puerto de Veracruz"
                lead = "" if normalize(route.summary).startswith("desde") else f"{start}: "
                routes.append(f"{lead}{route.summary.rstrip('.')}. Por {spoken_list(items(route.roads))}, "
                              f"{route.duration.rstrip('.')}.")
        return " ".join(routes) or f"{name} es el punto de partida; pregunte por otra ciudad para saber cómo llegar."
    if topic == "office":
        info = city.tourist_info
        extra = f" Horario: {info.hours}." if info.hours else ""
        return f"{info.spoken}{extra}"
    return f"{city.summary}"


class ActionTourismAnswer(UsesResources, Action):
    def name(self) -> str:
        return "action_tourism_answer"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: dict[str, Any]) -> list[EventType]:
        intent = latest_intent(tracker)
        topic = TOPIC_BY_INTENT.get(intent) or tracker.get_slot("topic")
        cities = self.res.cities
        city = resolve_city(cities, tracker, topic)
        if city is None:
            names = spoken_list(cities.spoken_names(), "o")
            say(dispatcher, f"¿De qué ciudad? Tengo información de {names}.",
                hint=expect("city", cities.spoken_names()))
            return [SlotSet("topic", topic)]
        if topic is None:
            say(dispatcher, f"{city.summary} {FOLLOW_UP}")
            return [SlotSet("city", city.id)]
        origin = cities.find_origin(latest_text(tracker)) if topic == "access" else None
        festival = named_festival(cities, latest_text(tracker), city) if topic == "festivals" else None
        text = (f"{cap(festival.festival.name)}, en {city.spoken_name}: {festival.festival.when.rstrip('.')}. "
                f"{festival.festival.description}") if festival else answer(city, topic, origin)
        say(dispatcher, f"{text} ¿Algo más sobre {city.spoken_name} o sobre otra ciudad?")
        return [SlotSet("city", city.id), SlotSet("topic", topic)]
