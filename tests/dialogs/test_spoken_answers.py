"""The answer to the question asked, sized for the ear: every catalog answer fits ~20 s of speech, long lists
offer the rest, processing time and online questions get their own answers (never invented), a feature of a
city is answered from its attractions, everyday words pick the right entry, and thanks / goodbye close the call.
Real catalogs, hand-built trackers; the same actions run through Rasa in test_e2e_http.py."""
from __future__ import annotations

from typing import Any

import pytest
from rasa_sdk.executor import CollectingDispatcher

from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from dialogs.actions.control import ActionThanks, ActionVeraturFallback, ActionYesNo
from dialogs.actions.resources import Resources
from dialogs.actions.spoken import MAX_WORDS, MORE_QUESTION, split_to_fit, word_count
from dialogs.actions.status import ActionStatusReport, ValidateStatusForm
from dialogs.actions.tourism import TOPIC_BY_INTENT, ActionTourismAnswer, asked_feature
from dialogs.actions.tramites import FIELD_BY_INTENT, ActionTramiteInfo, asked_field
from tests.dialogs.conftest import caller_number, entity, tracker


def said(dispatcher: CollectingDispatcher) -> str:
    return " ".join(m.get("text") or "" for m in dispatcher.messages)


def slots_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e["value"] for e in events if e.get("event") == "slot"}


def last_custom(dispatcher: CollectingDispatcher) -> dict[str, Any]:
    return dict(dispatcher.messages[-1].get("custom") or {})


async def test_every_catalog_answer_fits_the_ear(catalogs: Resources) -> None:
    longest = (0, "")
    for city in catalogs.cities.cities:
        for intent in TOPIC_BY_INTENT:
            d = CollectingDispatcher()
            await ActionTourismAnswer(catalogs).run(d, tracker(city.name, intent,
                                                               entities=[entity("city", city.name)]), {})
            longest = max(longest, (word_count(said(d)), f"{city.id}/{intent}"))
    for t in catalogs.tramites.tramites:
        for intent in FIELD_BY_INTENT:
            d = CollectingDispatcher()
            await ActionTramiteInfo(catalogs).run(d, tracker("", intent, slots={"tramite": t.id}), {})
            longest = max(longest, (word_count(said(d)), f"{t.id}/{intent}"))
    assert longest[0] <= MAX_WORDS, longest


def test_split_keeps_whole_sentences() -> None:
    head, rest = split_to_fit("Uno dos tres. Cuatro cinco seis. Siete ocho.", 6)
    assert head == "Uno dos tres. Cuatro cinco seis." and rest == "Siete ocho."
    assert split_to_fit("Corto.", 6) == ("Corto.", None)


async def test_long_requirement_list_offers_the_rest_and_yes_reads_it(catalogs: Resources) -> None:
    entry = next(t for t in catalogs.tramites.tramites if len(t.requirements) > 3)
    d = CollectingDispatcher()
    events = await ActionTramiteInfo(catalogs).run(
        d, tracker("¿qué papeles ocupo?", "ask_tramite_requirements", slots={"tramite": entry.id}), {})
    assert MORE_QUESTION in said(d) and last_custom(d)["question"] == "more"
    rest = slots_of(events)["more_text"]
    assert rest and entry.requirements[-1].split(",")[0].rstrip(".")[1:] in rest
    d2 = CollectingDispatcher()
    await ActionYesNo().run(d2, tracker("sí, dígame los demás", "affirm", slots={"more_text": rest},
                                        previous_bot=[{"text": said(d), "custom": last_custom(d)}]), {})
    assert rest.split(":")[0] in said(d2) and word_count(said(d2)) <= MAX_WORDS
    d3 = CollectingDispatcher()
    await ActionYesNo().run(d3, tracker("no", "deny", slots={"more_text": rest},
                                        previous_bot=[{"text": said(d), "custom": last_custom(d)}]), {})
    assert d3.messages[0]["response"] == "utter_anything_else"


@pytest.mark.parametrize(("text", "intent", "field"), [
    ("¿y en cuántos días me la dan?", "ask_tramite_requirements", "duration"),
    ("¿se puede hacer por internet?", "ask_tramite_where", "online"),
    ("¿cuánto cuesta?", "ask_tramite_cost", "cost"),
    ("la licencia de chofer, qué papeles piden", "inform_tramite", "requirements"),
    ("¿dónde la saco?", "ask_tramite_where", "where"),
])
def test_the_field_asked(text: str, intent: str, field: str) -> None:
    assert asked_field(intent, text, None) == field


async def test_processing_time_said_when_known_and_never_invented(catalogs: Resources) -> None:
    known = next(t for t in catalogs.tramites.tramites if t.processing_time)
    unknown = next(t for t in catalogs.tramites.tramites if not t.processing_time)
    d = CollectingDispatcher()
    await ActionTramiteInfo(catalogs).run(d, tracker("¿cuánto tarda?", "ask_tramite_duration",
                                                     slots={"tramite": known.id}), {})
    assert known.processing_time is not None and known.processing_time.split(",")[0] in said(d)
    d2 = CollectingDispatcher()
    await ActionTramiteInfo(catalogs).run(d2, tracker("¿cuánto tarda?", "ask_tramite_duration",
                                                      slots={"tramite": unknown.id}), {})
    agency = catalogs.tramites.agency_of(unknown).spoken_name
    assert "No tengo confirmado cuánto tarda" in said(d2) and agency in said(d2)


async def test_online_or_in_person(catalogs: Resources) -> None:
    remote = next(t for t in catalogs.tramites.tramites if "web" in t.channels_start)
    office = next(t for t in catalogs.tramites.tramites if set(t.channels_start) == {"office"})
    d = CollectingDispatcher()
    await ActionTramiteInfo(catalogs).run(d, tracker("¿se puede en línea?", "ask_tramite_online",
                                                     slots={"tramite": remote.id}), {})
    assert said(d).startswith("Sí") and "portal web" in said(d)
    d2 = CollectingDispatcher()
    await ActionTramiteInfo(catalogs).run(d2, tracker("¿se puede en línea?", "ask_tramite_online",
                                                      slots={"tramite": office.id}), {})
    assert said(d2).startswith("No, este trámite se hace en persona")


@pytest.mark.parametrize(("text", "city", "expected"), [
    ("¿tiene cascadas Xico?", "Xico", "Cascada de Texolo"),
    ("¿qué museos hay en Tlacotalpan?", "Tlacotalpan", "Casa Museo Agustín Lara"),
    ("¿hay playas en Xalapa?", "Xalapa", "No tengo registradas playas en Xalapa"),
])
async def test_a_feature_of_a_city(catalogs: Resources, text: str, city: str, expected: str) -> None:
    d = CollectingDispatcher()
    await ActionTourismAnswer(catalogs).run(d, tracker(text, "ask_attractions", entities=[entity("city", city)]), {})
    assert expected in said(d)


async def test_activities_are_not_answered_with_the_route(catalogs: Resources) -> None:
    d = CollectingDispatcher()
    events = await ActionTourismAnswer(catalogs).run(
        d, tracker("¿qué actividades hay en Orizaba?", "ask_access", entities=[entity("city", "Orizaba")]), {})
    assert slots_of(events)["topic"] == "attractions" and "Teleférico" in said(d)


async def test_city_with_extra_words_without_an_entity(catalogs: Resources) -> None:
    for text, city_id in (("el centro de Xalapa", "xalapa"), ("allá por catemaco", "catemaco"),
                          ("Orizaba Veracruz", "orizaba")):
        events = await ActionTourismAnswer(catalogs).run(
            CollectingDispatcher(), tracker(text, "inform_city", slots={"topic": "food"}), {})
        assert slots_of(events)["city"] == city_id, text


async def test_loss_words_pick_the_replacement(catalogs: Resources) -> None:
    events = await ActionTramiteInfo(catalogs).run(
        CollectingDispatcher(), tracker("se me perdió la licencia, ¿qué hago?", "ask_tramite_info",
                                        entities=[entity("tramite", "licencia")]), {})
    assert slots_of(events)["tramite"] == "licencia-reposicion"


async def test_unclassified_turn_naming_a_city_is_answered(catalogs: Resources) -> None:
    d = CollectingDispatcher()
    events = await ActionVeraturFallback(catalogs).run(
        d, tracker("pues mire, ¿qué tal se come allá por Papantla?", "nlu_fallback", confidence=0.3), {})
    assert slots_of(events)["city"] == "papantla" and slots_of(events)["topic"] == "food"
    d2 = CollectingDispatcher()
    await ActionVeraturFallback(catalogs).run(d2, tracker("bueno, este, mmm", "nlu_fallback"), {})
    assert d2.messages[0]["response"] == "utter_please_rephrase"


async def test_thanks_offers_more_once_then_closes() -> None:
    d = CollectingDispatcher()
    await ActionThanks().run(d, tracker("gracias", "thanks", previous_bot=[{"text": "En Xico puede conocer..."}]), {})
    assert d.messages[0]["response"] == "utter_thanks"
    d2 = CollectingDispatcher()
    await ActionThanks().run(d2, tracker("gracias", "thanks", previous_bot=[
        {"text": "Con mucho gusto. ¿Le ayudo con algo más?", "custom": {"question": "anything_else"}}]), {})
    assert d2.messages[0]["response"] == "utter_goodbye"
    d3 = CollectingDispatcher()
    await ActionThanks().run(d3, tracker("eso es todo, muchas gracias, hasta luego", "thanks"), {})
    assert d3.messages[0]["response"] == "utter_goodbye"


async def test_status_of_a_case_with_many_missing_items_is_short(resources: Resources,
                                                                 case_service: CaseService) -> None:
    opened = case_service.open_case("licencia-automovilista", "phone",
                                    citizen=CitizenInfo("Ana Prueba", curp="PEPA900101MVZRRN09"))
    folio, pin = opened.case.folio, opened.pin
    d = CollectingDispatcher()
    t = tracker(pin, "inform_number", slots={"folio": folio}, metadata={"caller_number": caller_number()})
    result = await ValidateStatusForm(resources).validate_verification(pin, d, t, {})
    assert result["status_result"] == "ok" and "Estado" in said(d)
    assert word_count(said(d)) <= MAX_WORDS
    if opened.case.missing and len(opened.case.missing) > 2:
        assert result["more_text"]
        d2 = CollectingDispatcher()
        await ActionStatusReport().run(d2, tracker(pin, "inform_number", slots={
            "status_result": "ok", "more_text": result["more_text"]}), {})
        assert last_custom(d2)["question"] == "more"


def test_a_city_name_is_not_a_feature_asked(catalogs: Resources) -> None:
    """'Boca del Río' names a river: asking what to see there is not asking for rivers."""
    boca = catalogs.cities.get("boca-del-rio")
    assert asked_feature("¿qué hay que ver en Boca del Río?", boca) is None
    assert asked_feature("¿hay lagunas por boca del rio?", boca) == ("ríos y lagunas", ("rio", "laguna", "lago"))
