"""Actions against hand-built trackers, with the real catalogs and a real case service on SQLite."""
from __future__ import annotations

import uuid
from typing import Any

import pytest
from rasa_sdk.executor import CollectingDispatcher

from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from dialogs.actions.control import (
    ActionDtmfMenu,
    ActionRepeat,
    ActionVeraturFallback,
    ActionYesNo,
    folio_in_words,
)
from dialogs.actions.resources import Resources
from dialogs.actions.start_case import ActionOpenCase, ValidateStartForm, parse_field
from dialogs.actions.status import ActionStatusReport, ValidateStatusForm, said_folio
from dialogs.actions.tourism import ActionTourismAnswer
from dialogs.actions.tramites import ActionTramiteInfo
from dialogs.catalog_schema import PhoneField
from tests.dialogs.conftest import caller_number, entity, tracker


def slots_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e["value"] for e in events if e.get("event") == "slot"}


def said(dispatcher: CollectingDispatcher) -> str:
    return " ".join(m.get("text") or "" for m in dispatcher.messages)


def customs(dispatcher: CollectingDispatcher) -> list[dict[str, Any]]:
    return [m["custom"] for m in dispatcher.messages if m.get("custom")]


# -- tourism ----------------------------------------------------------------------------------------------

async def test_attractions_of_a_named_city(catalogs: Resources) -> None:
    d = CollectingDispatcher()
    events = await ActionTourismAnswer(catalogs).run(
        d, tracker("¿qué hay que ver en Papantla?", "ask_attractions", entities=[entity("city", "Papantla")]), {})
    assert "Tajín" in said(d)
    assert {k: slots_of(events)[k] for k in ("city", "topic")} == {"city": "papantla", "topic": "attractions"}


async def test_follow_up_without_city_keeps_the_city(catalogs: Resources) -> None:
    d = CollectingDispatcher()
    events = await ActionTourismAnswer(catalogs).run(
        d, tracker("¿y qué se come ahí?", "ask_food", slots={"city": "xico", "topic": "attractions"}), {})
    xico = catalogs.cities.get("xico")
    assert xico is not None and xico.foods[0].name.lower() in said(d).lower()
    assert slots_of(events)["city"] == "xico"


async def test_city_alone_switches_city_with_the_same_topic(catalogs: Resources) -> None:
    d = CollectingDispatcher()
    events = await ActionTourismAnswer(catalogs).run(
        d, tracker("¿y en Orizaba?", "inform_city", entities=[entity("city", "Orizaba")],
                   slots={"city": "xico", "topic": "food"}), {})
    orizaba = catalogs.cities.get("orizaba")
    assert orizaba is not None and orizaba.foods[0].name.lower() in said(d).lower()
    assert slots_of(events)["city"] == "orizaba"


async def test_mishearing_and_origin(catalogs: Resources) -> None:
    d = CollectingDispatcher()
    events = await ActionTourismAnswer(catalogs).run(
        d, tracker("¿cómo llego a Catemaco desde Jalapa?", "ask_access",
                   entities=[entity("city", "Catemaco"), entity("city", "Xalapa")]), {})
    assert slots_of(events)["city"] == "catemaco"
    assert "Desde el puerto" not in said(d)        # only the route from the origin named


async def test_festival_names_its_city(catalogs: Resources) -> None:
    d = CollectingDispatcher()
    events = await ActionTourismAnswer(catalogs).run(
        d, tracker("¿cuándo es la feria de la Candelaria?", "ask_festivals"), {})
    assert slots_of(events)["city"] == "tlacotalpan"
    assert "Candelaria" in said(d)


async def test_generic_festival_question_lists_the_city_festivals(catalogs: Resources) -> None:
    d = CollectingDispatcher()
    await ActionTourismAnswer(catalogs).run(d, tracker("¿y cuándo son sus fiestas?", "ask_festivals",
                                                       slots={"city": "coatepec"}), {})
    coatepec = catalogs.cities.get("coatepec")
    assert coatepec is not None and said(d).startswith("Fiestas de Coatepec")
    assert all(f.name in said(d) for f in coatepec.festivals[:3])


async def test_no_city_asks_which_with_a_city_grammar(catalogs: Resources) -> None:
    d = CollectingDispatcher()
    events = await ActionTourismAnswer(catalogs).run(d, tracker("¿qué se come?", "ask_food"), {})
    assert "¿De qué ciudad?" in said(d)
    assert customs(d)[-1]["expect"]["kind"] == "city"
    assert slots_of(events) == {"topic": "food"}


# -- trámite information -------------------------------------------------------------------------------

async def test_ambiguous_name_gets_a_question_then_a_key_picks(catalogs: Resources) -> None:
    d = CollectingDispatcher()
    events = await ActionTramiteInfo(catalogs).run(
        d, tracker("¿qué necesito para sacar la licencia?", "ask_tramite_requirements",
                   entities=[entity("tramite", "licencia")]), {})
    slots = slots_of(events)
    assert "¿Cuál trámite busca" in said(d) and len(slots["tramite_choices"]) >= 2
    assert customs(d)[-1]["question"] == "disambiguation"
    second = slots["tramite_choices"][1]
    d2 = CollectingDispatcher()
    events2 = await ActionDtmfMenu(catalogs).run(
        d2, tracker('/dtmf{"digits":"2"}', "dtmf", entities=[entity("digits", "2")], slots=slots,
                    previous_bot=[{"text": said(d), "custom": customs(d)[-1]}]), {})
    assert slots_of(events2)["tramite"] == second
    assert slots_of(events2)["tramite_choices"] is None
    assert "necesita" in said(d2)


async def test_answer_by_name_and_follow_up_cost(catalogs: Resources) -> None:
    d = CollectingDispatcher()
    events = await ActionTramiteInfo(catalogs).run(
        d, tracker("la de chofer", "inform_tramite", entities=[entity("tramite", "chofer")],
                   slots={"tramite_choices": ["licencia-automovilista", "licencia-chofer", "licencia-motociclista"],
                          "tramite_field": "requirements"}), {})
    assert slots_of(events)["tramite"] == "licencia-chofer"
    d2 = CollectingDispatcher()
    await ActionTramiteInfo(catalogs).run(
        d2, tracker("¿y cuánto cuesta?", "ask_tramite_cost", slots={"tramite": "licencia-chofer"}), {})
    chofer = catalogs.tramites.get("licencia-chofer")
    assert chofer is not None and chofer.cost.spoken.split(".")[0] in said(d2)


async def test_hours_never_invented(catalogs: Resources) -> None:
    without = next(t for t in catalogs.tramites.tramites if not t.hours)
    d = CollectingDispatcher()
    await ActionTramiteInfo(catalogs).run(d, tracker("¿qué horario tienen?", "ask_tramite_hours",
                                                     slots={"tramite": without.id}), {})
    assert "No tengo un horario confirmado" in said(d)


# -- DTMF menu, repeat, yes/no, fallback ---------------------------------------------------------------

@pytest.mark.parametrize(("keys", "expected"), [("1", "utter_ask_city"), ("2", "utter_ask_tramite"),
                                                ("0", "utter_transfer")])
async def test_main_menu_keys(catalogs: Resources, keys: str, expected: str) -> None:
    d = CollectingDispatcher()
    await ActionDtmfMenu(catalogs).run(d, tracker(f'/dtmf{{"digits":"{keys}"}}', "dtmf",
                                                  entities=[entity("digits", keys)]), {})
    assert d.messages[0]["response"] == expected


async def test_key_3_opens_the_status_form_and_a_long_number_prefills_the_folio(catalogs: Resources) -> None:
    events = await ActionDtmfMenu(catalogs).run(CollectingDispatcher(), tracker("tres", "dtmf"), {})
    assert {"event": "followup", "name": "status_form"} in [{k: e.get(k) for k in ("event", "name")}
                                                             for e in events]
    events = await ActionDtmfMenu(catalogs).run(CollectingDispatcher(), tracker(
        "cuatro tres cero dos tres nueve cinco nueve", "inform_number"), {})
    assert slots_of(events)["folio"] == "43023959"


@pytest.mark.parametrize(("text", "exact", "checked", "menu"), [
    # first eight-digit stretch for the status form; the last stretch of 5+ digits for the key menu
    ("mi folio es 1425 0317 o tal vez 4302 3959", "14250317", "43023959", "43023959"),
    ("folio cuatro tres cero dos tres nueve cinco nueve por favor", "43023959", "43023959", "43023959"),
    ("tengo el 12345 nada mas", None, None, "12345"),     # too short for the form, a folio to the menu
    ("es el 123456789", None, None, "123456789"),        # nine digits: the form then says it has eight
    ("son las tres y cuarto", None, None, ""),
])
def test_folio_in_a_sentence_one_reading_two_lengths(text: str, exact: str | None, checked: str | None,
                                                     menu: str) -> None:
    """The status form's said_folio and the key menu's folio_in_words are one reading of the turn's digit runs
    (dialogs.actions.numbers.digit_runs) with different lengths, check digit and which stretch counts."""
    assert said_folio(text) == exact
    assert said_folio(text, checked=True) == checked
    assert folio_in_words(text) == menu


async def test_unknown_key_reads_the_menu_again(catalogs: Resources) -> None:
    d = CollectingDispatcher()
    await ActionDtmfMenu(catalogs).run(d, tracker('/dtmf{"digits":"7"}', "dtmf", entities=[entity("digits", "7")]), {})
    assert "no existe" in said(d) and customs(d)[-1]["expect"]["kind"] == "menu"



async def test_a_spoken_number_that_is_no_key_is_not_a_missing_option(catalogs: Resources) -> None:
    """A PIN said again after the status reply reaches the menu as inform_number: no "Esa opción no existe" (the
    answer to a key), but a request to say it again; a folio at the end of a sentence starts the status form."""
    status = [{"text": "¿Le ayudo con algo más?", "custom": {"expect": {"kind": "free"}, "question": "anything_else"}}]
    d = CollectingDispatcher()
    await ActionDtmfMenu(catalogs).run(d, tracker("tres dos cinco tres", "inform_number", previous_bot=status), {})
    assert "no existe" not in said(d) and d.messages[0]["response"] == "utter_please_rephrase"
    events = await ActionDtmfMenu(catalogs).run(CollectingDispatcher(), tracker(
        "oiga quiero saber como va mi tramite mi folio es cuatro tres cero dos tres nueve cinco nueve",
        "inform_number"), {})
    assert slots_of(events)["folio"] == "43023959"


async def test_keys_answer_the_offer_of_the_rest_of_the_list(catalogs: Resources) -> None:
    """1/2 to "¿Quiere que le diga lo demás que le falta?" are yes/no, not the main menu's tourism/trámites."""
    offer = [{"text": "¿Quiere que le diga lo demás que le falta?",
              "custom": {"expect": {"kind": "yes_no", "max_digits": 1}, "question": "more"}}]
    d = CollectingDispatcher()
    await ActionDtmfMenu(catalogs).run(d, tracker('/dtmf{"digits":"1"}', "dtmf", entities=[entity("digits", "1")],
                                                  slots={"more_text": "También le falta el comprobante."},
                                                  previous_bot=offer), {})
    assert "comprobante" in said(d)
    d = CollectingDispatcher()
    await ActionDtmfMenu(catalogs).run(d, tracker('/dtmf{"digits":"2"}', "dtmf", entities=[entity("digits", "2")],
                                                  slots={"more_text": "También le falta el comprobante."},
                                                  previous_bot=offer), {})
    assert "comprobante" not in said(d) and d.messages[0]["response"] == "utter_anything_else"

async def test_repeat_resends_text_and_payload() -> None:
    before = [{"text": "Anote su folio: 1 2 3 4, 5 6 7 8.", "custom": {"expect": {"kind": "yes_no"},
                                                                       "question": "readback"}}]
    d = CollectingDispatcher()
    await ActionRepeat().run(d, tracker("repita", "repeat", previous_bot=before), {})
    assert d.messages[0]["text"] == before[0]["text"] and d.messages[0]["custom"]["question"] == "readback"
    d2 = CollectingDispatcher()
    await ActionRepeat().run(d2, tracker("repita", "repeat", previous_bot=before, active_loop="status_form"), {})
    assert d2.messages == []      # inside a form the form asks again by itself


async def test_yes_to_readback_repeats_and_no_to_anything_else_hangs_up() -> None:
    readback = [{"text": "Anote su folio: 1 2 3 4, 5 6 7 8.", "custom": {"question": "readback"}}]
    d = CollectingDispatcher()
    await ActionYesNo().run(d, tracker("sí", "affirm", previous_bot=readback), {})
    assert d.messages[0]["text"] == readback[0]["text"]
    d2 = CollectingDispatcher()
    await ActionYesNo().run(d2, tracker("no", "deny", previous_bot=[
        {"text": "¿Le ayudo con algo más?", "custom": {"question": "anything_else"}}]), {})
    assert d2.messages[0]["response"] == "utter_goodbye"


async def test_third_miss_in_a_row_goes_to_an_agent() -> None:
    t = tracker("mmm", "nlu_fallback")
    t.events[1:1] = [{"event": "user", "text": "x", "parse_data": {"intent": {"name": "nlu_fallback"}}},
                    {"event": "user", "text": "y", "parse_data": {"intent": {"name": "nlu_fallback"}}}]
    d = CollectingDispatcher()
    await ActionVeraturFallback().run(d, t, {})
    assert d.messages[0]["custom"]["transfer"] is True
    assert d.messages[0]["custom"]["transfer_reason"] == "no_match"
    d1 = CollectingDispatcher()
    await ActionVeraturFallback().run(d1, tracker("mmm", "nlu_fallback"), {})
    assert d1.messages[0]["response"] == "utter_please_rephrase"


# -- status --------------------------------------------------------------------------------------------

@pytest.fixture
def opened(case_service: CaseService) -> tuple[str, str]:
    case = case_service.open_case("acta-nacimiento-copia", "web",
                                  citizen=CitizenInfo("Ana Prueba", curp="PEPA900101MVZRRN09"))
    return case.case.folio, case.pin


def words(digits: str) -> str:
    names = "cero uno dos tres cuatro cinco seis siete ocho nueve".split()
    return " ".join(names[int(d)] for d in digits)


async def test_folio_said_as_words_is_checked_before_any_lookup(resources: Resources,
                                                                  opened: tuple[str, str]) -> None:
    folio, _ = opened
    form = ValidateStatusForm(resources)
    d = CollectingDispatcher()
    assert await form.validate_folio(words(folio), d, tracker(words(folio), "inform_number"), {}) == {"folio": folio}
    wrong = folio[:-1] + str((int(folio[-1]) + 1) % 10)     # one digit misheard: the Damm check catches it
    d2 = CollectingDispatcher()
    assert await form.validate_folio(wrong, d2, tracker(wrong, "inform_number"), {}) == {"folio": None}
    assert "no es válido" in said(d2)


async def test_right_pin_and_right_curp_end_say_the_status(resources: Resources, opened: tuple[str, str]) -> None:
    folio, pin = opened
    form = ValidateStatusForm(resources)
    for answer in (words(pin), "erre ene cero nueve"):
        d = CollectingDispatcher()
        t = tracker(answer, "inform_number", slots={"folio": folio}, metadata={"caller_number": caller_number()})
        result = await form.validate_verification(answer, d, t, {})
        assert result["status_result"] == "ok" and result["case_folio"] == folio
        assert "Estado:" in said(d) and "portal web" in said(d)


async def test_three_wrong_verifications_lock_the_folio_and_say_nothing(resources: Resources,
                                                                        opened: tuple[str, str]) -> None:
    folio, pin = opened
    wrong = "0000" if pin != "0000" else "1111"
    form = ValidateStatusForm(resources)
    caller = caller_number()
    texts = []
    for _ in range(3):
        d = CollectingDispatcher()
        result = await form.validate_verification(wrong, d, tracker(wrong, "inform_number", slots={"folio": folio},
                                                                    metadata={"caller_number": caller}), {})
        texts.append(said(d))
    assert result == {"verification": "locked", "status_result": "locked"}
    assert "dos intentos" in texts[0] and "un intento" in texts[1]
    d = CollectingDispatcher()     # even the right PIN is refused now, and nothing about the case is said
    result = await form.validate_verification(pin, d, tracker(pin, "inform_number", slots={"folio": folio},
                                                              metadata={"caller_number": caller}), {})
    assert result["status_result"] == "locked" and "Estado" not in said(d)
    d2 = CollectingDispatcher()
    await ActionStatusReport().run(d2, tracker(pin, "inform_number", slots={"status_result": "locked"}), {})
    assert d2.messages[0]["response"] == "utter_status_locked"
    d3 = CollectingDispatcher()
    await ActionYesNo().run(d3, tracker("sí", "affirm", previous_bot=[
        {"text": "bloqueado", "custom": {"question": "agent_offer", "offer_reason": "verification_locked"}}]), {})
    assert d3.messages[0]["custom"]["transfer_reason"] == "verification_locked"


async def test_unknown_folio_is_a_clear_answer_and_a_retry(resources: Resources) -> None:
    from case_bridge.folio import damm_digit
    payload = str(uuid.uuid4().int)[:7]
    unknown = payload + damm_digit(payload)
    d = CollectingDispatcher()
    result = await ValidateStatusForm(resources).validate_verification(
        "1234", d, tracker("1234", "inform_number", slots={"folio": unknown},
                           metadata={"caller_number": caller_number()}), {})
    assert result == {"folio": None, "verification": None}
    assert "No encontré un trámite con ese folio" in said(d)


async def test_one_call_cannot_walk_through_folios_with_changing_caller_numbers(resources: Resources,
                                                                              opened: tuple[str, str]) -> None:
    """The caller number is whatever the From header claims: the call itself counts the failed verifications (issue
    13), so after CALL_MAX_FAILURES in one call even a right PIN is refused in it and the agent is offered."""
    from case_bridge.folio import damm_digit
    from case_bridge.ratelimit import CALL_MAX_FAILURES
    folio, pin = opened
    call_id = f"walk-{uuid.uuid4().hex}@test"
    form = ValidateStatusForm(resources)
    results = []
    for _ in range(CALL_MAX_FAILURES):
        payload = str(uuid.uuid4().int)[:7]
        meta = {"caller_number": caller_number(), "call_id": call_id}
        results.append(await form.validate_verification("1234", CollectingDispatcher(), tracker(
            "1234", "inform_number", slots={"folio": payload + damm_digit(payload)}, metadata=meta), {}))
    assert results[0] == {"folio": None, "verification": None}
    assert results[-1] == {"verification": "locked", "status_result": "locked"}
    d = CollectingDispatcher()
    result = await form.validate_verification(pin, d, tracker(pin, "inform_number", slots={"folio": folio}, metadata={
        "caller_number": caller_number(), "call_id": call_id}), {})
    assert result["status_result"] == "locked" and "Estado" not in said(d)
    result = await form.validate_verification(pin, CollectingDispatcher(), tracker(pin, "inform_number", slots={
        "folio": folio}, metadata={"caller_number": caller_number(), "call_id": f"next-{call_id}"}), {})
    assert result["status_result"] == "ok"                     # the next call may verify


async def test_zero_at_the_folio_prompt_means_agent(resources: Resources) -> None:
    result = await ValidateStatusForm(resources).validate_folio("0", CollectingDispatcher(),
                                                                tracker("/dtmf", "dtmf"), {})
    assert result["status_result"] == "transfer"


# -- starting a procedure by phone ---------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "text", "value"), [
    ("curp", "pe e pe a nueve cero cero uno cero uno eme ve zeta erre erre ene cero nueve", "PEPA900101MVZRRN09"),
    ("curp", "PEPA900101MVZRRN09", "PEPA900101MVZRRN09"),
    ("curp", "no me la sé", None),
    ("full_name", "ana pérez lópez", "Ana Pérez López"),
    ("full_name", "ana", None),
    ("plate", "ye ka ele uno dos tres cuatro", "YKL1234"),
    ("digits", "dos mil quince", "2015"),
    ("date", "el uno de enero de mil novecientos noventa", "el uno de enero de mil novecientos noventa"),
    ("email", "ana punto perez arroba correo punto mx", "ana.perez@correo.mx"),
])
def test_parse_field(kind: str, text: str, value: str | None) -> None:
    field = PhoneField(name="x", kind=kind, prompt="¿?")  # type: ignore[arg-type]
    assert parse_field(field, text, "inform") == value


async def test_start_form_walks_the_catalog_fields(resources: Resources) -> None:
    form = ValidateStartForm(resources)
    d = CollectingDispatcher()
    got = await form.validate_start_tramite("el acta de nacimiento", d, tracker("el acta de nacimiento",
                                                                                 "inform_tramite"), {})
    assert got["start_tramite"] == "acta-nacimiento-copia" and got["start_field"] == "curp"
    slots = {"start_tramite": "acta-nacimiento-copia", "start_field": "curp", "start_answers": {}}
    got = await form.validate_field_answer("PEPA900101MVZRRN09", CollectingDispatcher(),
                                           tracker("PEPA900101MVZRRN09", "inform_number", slots=slots), {})
    assert got == {"field_answer": None, "start_field": "nombre_completo",
                   "start_answers": {"curp": "PEPA900101MVZRRN09"}}
    cancelled = await form.validate_field_answer("no, mejor no", CollectingDispatcher(),
                                                 tracker("no, mejor no", "deny", slots=slots), {})
    assert cancelled == {"field_answer": "cancelado", "confirm_start": False}
    not_by_phone = next(t for t in resources.tramites.tramites if t.phone_start is None)
    d2 = CollectingDispatcher()
    got = await form.validate_start_tramite(not_by_phone.name, d2, tracker(not_by_phone.name, "inform_tramite"), {})
    assert got["start_tramite"] is None and "no se puede iniciar por teléfono" in said(d2)


async def test_open_case_reads_back_folio_and_pin_digit_by_digit(resources: Resources,
                                                                 case_service: CaseService) -> None:
    slots = {"start_tramite": "acta-nacimiento-copia", "confirm_start": True,
             "start_answers": {"curp": "LOAP850505MVZPRN07", "nombre_completo": "Ana Pérez López",
                               "fecha_nacimiento": "1 de enero de 1990", "municipio_registro": "Xalapa"}}
    d = CollectingDispatcher()
    events = await ActionOpenCase(resources).run(d, tracker("sí", "affirm", slots=slots,
                                                            metadata={"caller_number": caller_number()}), {})
    folio = slots_of(events)["case_folio"]
    case = case_service.find_case(folio)
    assert case is not None and case.created_channel == "phone" and case.citizen_name == "Ana Pérez López"
    text = said(d)
    spoken = f"{' '.join(folio[:4])}, {' '.join(folio[4:])}"
    assert text.count(spoken) == 2          # the folio is read twice, digit by digit
    assert "Su NIP es: " in text and customs(d)[-1]["question"] == "readback"
    redacted = customs(d)[-1]["redacted"]
    assert "Su NIP es: *, *, *, *" in redacted and spoken in redacted     # the transcript keeps no PIN
    assert customs(d)[-1]["case_folio"] == folio


async def test_declined_confirmation_opens_nothing(resources: Resources) -> None:
    d = CollectingDispatcher()
    await ActionOpenCase(resources).run(d, tracker("no", "deny", slots={"start_tramite": "acta-nacimiento-copia",
                                                                        "confirm_start": False}), {})
    assert d.messages[0]["response"] == "utter_start_cancelled"
