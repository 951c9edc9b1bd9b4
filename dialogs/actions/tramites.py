"""Trámite information: requirements, cost, where, hours — with a short question when the name is ambiguous.

The trámite and the field asked are remembered in slots, so "¿y cuánto cuesta?" follows the last trámite and
naming only a trámite answers the field asked before. An open disambiguation keeps its candidate ids in
`tramite_choices`; the answer may be a name, an ordinal ("la segunda") or a key (1..3).
"""
from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from dialogs.actions.context import entity_values, latest_intent, latest_text
from dialogs.actions.numbers import spoken_digits
from dialogs.actions.payloads import expect, say
from dialogs.actions.resources import UsesResources
from dialogs.catalog import DISAMBIGUATION_OPTIONS, TramiteCatalog, TramiteMatch, spoken_list
from dialogs.catalog_match import normalize
from dialogs.catalog_schema import Tramite

FIELD_BY_INTENT = {
    "ask_tramite_requirements": "requirements", "ask_tramite_cost": "cost", "ask_tramite_where": "where",
    "ask_tramite_hours": "hours", "ask_tramite_info": "summary",
}
CHANNEL_NAMES = {"phone": "por teléfono", "web": "en el portal web", "office": "en oficina", "kiosk": "en un kiosco"}
ORDINALS = {"primer": 1, "primero": 1, "primera": 1, "uno": 1, "segundo": 2, "segunda": 2, "dos": 2,
            "tercero": 3, "tercera": 3, "tercer": 3, "tres": 3, "ultimo": -1, "ultima": -1}


def items(texts: list[str] | tuple[str, ...]) -> list[str]:
    """Catalog sentences as list items: without their final period, so a spoken list reads well."""
    return [t.strip().rstrip(".").strip() for t in texts if t.strip()]


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def uncap(text: str) -> str:
    """Lower the first letter of a sentence that now continues another ('En la oficina' -> 'en la oficina')."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def channels_text(channels: list[str]) -> str:
    return spoken_list([CHANNEL_NAMES.get(c, c) for c in channels], "o")


def field_answer(catalog: TramiteCatalog, t: Tramite, field: str) -> str:
    """What the portal says about one field of a trámite. Never invents: a missing hour is said to be missing."""
    if field == "requirements":
        return f"Para {t.spoken_name} necesita: {spoken_list(items(t.requirements))}."
    if field == "cost":
        return f"{cap(t.spoken_name)}: {t.cost.spoken}"
    if field == "where":
        return f"{t.where} Puede terminarlo {channels_text(list(t.channels_finish))}."
    if field == "hours":
        if t.hours:
            return f"Horario para {t.spoken_name}: {t.hours}"
        return (f"No tengo un horario confirmado para {t.spoken_name}. Le sugiero confirmar con "
                f"{catalog.agency_of(t).spoken_name} antes de ir.")
    return (f"{cap(t.spoken_name)}, con {catalog.agency_of(t).spoken_name}. "
            f"Requisitos: {spoken_list(items(t.requirements))}. "
            f"Costo: {t.cost.spoken} Se inicia {channels_text(list(t.channels_start))}.")


def choice_by_position(text: str, choices: list[str]) -> str | None:
    """'la segunda', 'el dos', a key '2' -> the second candidate."""
    digits = spoken_digits(text)
    if len(digits) == 1 and 1 <= int(digits) <= len(choices):
        return choices[int(digits) - 1]
    for word in normalize(text).split():
        pos = ORDINALS.get(word)
        if pos is not None and pos <= len(choices):
            return choices[pos - 1] if pos > 0 else choices[-1]
    return None


def shown_choices(matches: list[TramiteMatch] | tuple[TramiteMatch, ...]) -> list[str]:
    """Candidate ids in the order the disambiguation question names them (one per distinct label)."""
    seen: set[str] = set()
    out = []
    for m in matches:
        if m.tramite.label not in seen:
            seen.add(m.tramite.label)
            out.append(m.tramite.id)
    return out[:DISAMBIGUATION_OPTIONS]


def resolve_tramite(catalog: TramiteCatalog, tracker: Tracker, digits: str | None = None
                    ) -> tuple[Tramite | None, list[TramiteMatch]]:
    """(the trámite meant, or None with the candidates to ask among). Uses, in order: an open disambiguation,
    the extracted entity, the words of the turn, the trámite of the conversation."""
    text = latest_text(tracker)
    plain = "" if text.startswith("/") else text
    choices = list(tracker.get_slot("tramite_choices") or [])
    if choices:
        picked = choice_by_position(digits or plain, choices)
        if picked is not None:
            return catalog.get(picked), []
        for said in [*entity_values(tracker, "tramite"), plain]:
            if said:
                found = catalog.resolve(said, among=choices)
                if found.best is not None:
                    return found.best, []
    for value in entity_values(tracker, "tramite"):
        found = catalog.resolve(value)
        if found.not_found:
            continue
        if found.ambiguous and plain:
            # the caller may have said more than the entity caught ("licencia de chofer" vs "licencia")
            fuller = catalog.resolve(plain, among=[m.tramite.id for m in found.matches])
            if fuller.best is not None or fuller.ambiguous:
                found = fuller
        return found.best, ([] if found.best else list(found.matches))
    current = tracker.get_slot("tramite")
    follow_up = bool(current) and latest_intent(tracker) in FIELD_BY_INTENT \
        and latest_intent(tracker) != "ask_tramite_info"
    if plain and not follow_up:
        found = catalog.resolve(plain)
        if not found.not_found:
            return found.best, ([] if found.best else list(found.matches))
    if current:
        return catalog.get(str(current)), []
    return None, []


class ActionTramiteInfo(UsesResources, Action):
    def name(self) -> str:
        return "action_tramite_info"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: dict[str, Any]) -> list[EventType]:
        return answer_tramite(self.res.tramites, dispatcher, tracker)


def answer_tramite(catalog: TramiteCatalog, dispatcher: CollectingDispatcher, tracker: Tracker,
                   digits: str | None = None) -> list[EventType]:
    """Answer the trámite question of this turn (shared by the key-press router)."""
    field = FIELD_BY_INTENT.get(latest_intent(tracker)) or tracker.get_slot("tramite_field") or "summary"
    tramite, candidates = resolve_tramite(catalog, tracker, digits)
    if tramite is None and candidates:
        ids = shown_choices(candidates)
        question = catalog.disambiguation_question([m for m in candidates if m.tramite.id in ids])
        keys = spoken_list([f"{n} para {catalog.get(i).label}" for n, i in  # type: ignore[union-attr]
                            zip(("uno", "dos", "tres"), ids, strict=False)], "o")
        say(dispatcher, f"{question} También puede marcar {keys}.",
            hint=expect("free", [catalog.get(i).label for i in ids if catalog.get(i)], max_digits=1),  # type: ignore[union-attr]
            question="disambiguation")
        return [SlotSet("tramite_choices", ids), SlotSet("tramite_field", field)]
    if tramite is None:
        say(dispatcher, "¿Sobre qué trámite? Por ejemplo la licencia de conducir, las placas o el acta de nacimiento.")
        return [SlotSet("tramite_field", field), SlotSet("tramite_choices", None)]
    text = field_answer(catalog, tramite, field)
    if tramite.can_start_by_phone:
        text += " Este trámite lo puede iniciar por teléfono: diga iniciar trámite."
    say(dispatcher, f"{text} ¿Quiere saber algo más de este trámite?")
    return [SlotSet("tramite", tramite.id), SlotSet("tramite_field", field), SlotSet("tramite_choices", None)]
