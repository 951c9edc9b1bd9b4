"""Tourism answers for the 12 cities: what to see, what to eat, festivals, how to get there, tourist office.

One action answers every topic. It remembers the city and the topic in slots so a caller can follow up
without naming the city ("¿y qué se come ahí?") or name only a new city to hear the same topic there.
"""
from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from dialogs.actions.context import entity_values, latest_intent, latest_text
from dialogs.actions.payloads import expect, say
from dialogs.actions.resources import UsesResources
from dialogs.actions.spoken import say_sized
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
TAIL = "¿Algo más sobre {name} o sobre otra ciudad?"

# What the caller's words say about the topic (on the text without accents). Used to correct an intent that a
# sparse model confused ("¿qué actividades hay en Xico?" heard as a route question) and to answer a turn the
# NLU did not classify but that names a city.
TOPIC_WORDS: dict[str, re.Pattern[str]] = {
    "access": re.compile(r"\b(como (llego|llegar|le hago para llegar|me voy|se llega)|carretera|autobus|camion|"
                         r"distancia|lejos|retirado|ruta|por donde me voy|cuanto (se hace|tiempo se hace)|"
                         r"horas (son|se hacen)|desde (\w+ )?(aqui|xalapa|jalapa|veracruz))"),
    "food": re.compile(r"\b(come|comer|comida|platillos?|gastronomia|antojitos?|dulces?|bebidas?|desayun\w*|"
                       r"cenar|probar)\b"),
    "festivals": re.compile(r"\b(fiestas?|ferias?|festival\w*|carnaval|celebra\w*|tradicion\w*|patron\w*|"
                            r"festividad\w*)\b"),
    "office": re.compile(r"\b(oficina de turismo|modulo|informes|informacion turistica|mapa)\b"),
    "attractions": re.compile(r"\b(ver|visitar|conocer|atractiv\w*|lugares|paseos?|pasear|actividades|hacer|"
                              r"sugiere|recomienda\w*|vale la pena|conviene|museos?|cascadas?|playas?|bonit\w*|"
                              r"iglesias?|rios?|laguna|zona arqueologica|piramides?|banar|nadar)\b"),
}
# A feature of a city the caller asks about: (what to call it, the caller's words, the words in the catalog).
FEATURES: tuple[tuple[str, re.Pattern[str], tuple[str, ...]], ...] = (
    ("cascadas", re.compile(r"\b(cascadas?|saltos? de agua|caidas? de agua|salto)\b"), ("cascada", "salto")),
    ("playas", re.compile(r"\b(playas?|mar|costa)\b"), ("playa", "costa", "golfo")),
    ("museos", re.compile(r"\bmuseos?\b"), ("museo",)),
    ("iglesias", re.compile(r"\b(iglesias?|catedral|templos?|parroquias?|basilica)\b"),
     ("iglesia", "catedral", "parroquia", "basilica", "santuario", "templo")),
    ("ríos y lagunas", re.compile(r"\b(rios?|lagunas?|lagos?)\b"), ("rio", "laguna", "lago")),
    ("zonas arqueológicas", re.compile(r"\b(zonas? arqueologicas?|piramides?|ruinas)\b"),
     ("zona arqueologica", "piramide", "arqueolog")),
    ("lugares para nadar", re.compile(r"\b(banar(me|nos|se)?|nadar)\b"), ("playa", "cascada", "laguna", "rio")),
)


def topic_from_text(text: str) -> str | None:
    plain = normalize(text)
    return next((topic for topic, words in TOPIC_WORDS.items() if words.search(plain)), None)


def asked_topic(intent: str, text: str, previous: str | None) -> str | None:
    """The topic of this turn: the intent's, unless the words name another topic and none of the intent's."""
    by_intent = TOPIC_BY_INTENT.get(intent)
    if not text or text.startswith("/"):
        return by_intent or previous
    plain = normalize(text)
    if by_intent is not None:
        if TOPIC_WORDS[by_intent].search(plain):
            return by_intent
        other = topic_from_text(text)
        return other or by_intent
    return topic_from_text(text) or previous


def asked_feature(text: str, city: City | None = None) -> tuple[str, tuple[str, ...]] | None:
    """The feature asked about, from the words outside the city's own name ("Boca del Río" asks for no river)."""
    plain = f" {normalize(text)} "
    for phrase in sorted((normalize(p) for p in city.phrases), key=len, reverse=True) if city else ():
        if phrase:
            plain = plain.replace(f" {phrase} ", " ")
    return next(((label, found) for label, said, found in FEATURES if said.search(plain)), None)


def feature_answer(city: City, label: str, found: tuple[str, ...]) -> str:
    """The places of the city that have the feature asked (from the catalog), or a clear 'not listed'."""
    hits = [p for p in city.attractions if any(w in normalize(f"{p.name} {p.description}") for w in found)]
    name = city.spoken_name
    if not hits:
        others = spoken_list(items([p.name for p in city.attractions[:MAX_ITEMS]]))
        return f"No tengo registradas {label} en {name}. Lo que le puedo recomendar es {others}."
    first = hits[0]
    if len(hits) == 1:
        return f"En {name}, para {label}: {first.name}. {first.description}"
    return (f"En {name}, para {label}: {spoken_list(items([p.name for p in hits[:MAX_ITEMS]]))}. "
            f"{cap(first.name)}: {first.description}")


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
                # roads and time first: a long answer is cut for the ear, and these are what the caller asked
                routes.append(f"{start}, por {spoken_list(items(route.roads))}, {route.duration.rstrip('.')}. "
                              f"{route.summary.rstrip('.')}.")
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
        cities = self.res.cities
        if latest_intent(tracker) == "tourism" and cities.find_city(latest_text(tracker)) is None \
                and not entity_values(tracker, "city"):
            dispatcher.utter_message(response="utter_ask_city")   # "información turística": which city?
            return [SlotSet("topic", None)]
        return answer_tourism(cities, dispatcher, tracker)


def answer_tourism(cities: CityCatalog, dispatcher: CollectingDispatcher, tracker: Tracker,
                   topic: str | None = None) -> list[EventType]:
    """Answer the tourism question of this turn (shared with the turns the NLU did not classify)."""
    text = latest_text(tracker)
    topic = topic or asked_topic(latest_intent(tracker), text, tracker.get_slot("topic"))
    city = resolve_city(cities, tracker, topic)
    if city is None:
        names = spoken_list(cities.spoken_names(), "o")
        say(dispatcher, f"¿De qué ciudad? Tengo información de {names}.",
            hint=expect("city", cities.spoken_names()))
        return [SlotSet("topic", topic)]
    if topic is None:
        say(dispatcher, f"{city.summary} {FOLLOW_UP}")
        return [SlotSet("city", city.id)]
    origin = cities.find_origin(text) if topic == "access" else None
    festival = named_festival(cities, text, city) if topic == "festivals" else None
    feature = asked_feature(text, city) if topic == "attractions" else None
    if festival:
        reply = (f"{cap(festival.festival.name)}, en {city.spoken_name}: "
                 f"{festival.festival.when.rstrip('.')}. {festival.festival.description}")
    elif feature:
        reply = feature_answer(city, *feature)
    else:
        reply = answer(city, topic, origin)
    sized = say_sized(dispatcher, reply, TAIL.format(name=city.spoken_name))
    return [SlotSet("city", city.id), SlotSet("topic", topic), *sized]
