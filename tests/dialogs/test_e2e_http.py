"""Whole conversations over HTTP against a real `rasa run` + action server (trained model, real catalogs,
case bridge on SQLite): every tourism topic of every city with follow-ups, city switching, trámite
information with disambiguation, status with right and wrong verification, opening a case by phone."""
from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from dialogs.actions.resources import Resources
from dialogs.actions.spoken import MAX_WORDS, short_item
from tests.dialogs.conftest import caller_number
from veratur.rasa_server import RasaStack

pytestmark = [pytest.mark.rasa, pytest.mark.slow]


class Conversation:
    """One caller: each `say` is a REST turn with the engine's metadata; returns texts and payloads."""

    def __init__(self, stack: RasaStack) -> None:
        self.url = stack.url
        self.id = f"test-{uuid.uuid4().hex[:12]}"
        self.caller = caller_number()
        self.client = httpx.Client(timeout=30)

    def say(self, message: str) -> tuple[str, list[dict[str, Any]]]:
        resp = self.client.post(f"{self.url}/webhooks/rest/webhook", json={
            "sender": self.id, "message": message,
            "metadata": {"call_id": self.id, "caller_number": self.caller, "channel": "phone"}})
        resp.raise_for_status()
        messages = resp.json()
        text = " ".join(m["text"] for m in messages if "text" in m)
        return text, [m["custom"] for m in messages if "custom" in m]

    def slot(self, name: str) -> Any:
        return self.client.get(f"{self.url}/conversations/{self.id}/tracker").json()["slots"].get(name)


def low(text: str) -> str:
    return text.lower()


def test_every_topic_of_every_city_with_follow_ups(rasa_stack: RasaStack, catalogs: Resources) -> None:
    for city in catalogs.cities.cities:
        talk = Conversation(rasa_stack)
        text, _ = talk.say(f"¿qué hay que ver en {city.name}?")
        assert low(city.attractions[0].name) in low(text), (city.id, text)
        text, _ = talk.say("¿y qué se come ahí?")
        assert low(city.foods[0].name) in low(text), (city.id, text)
        text, _ = talk.say("¿y cuándo son sus fiestas?")
        assert low(city.festivals[0].name) in low(text), (city.id, text)
        text, _ = talk.say("¿cómo llego?")
        route = city.access.from_xalapa or city.access.from_veracruz
        assert route is not None and low(route.roads[0]) in low(text), (city.id, text)
        text, _ = talk.say("¿dónde pido informes turísticos?")
        assert low(city.tourist_info.spoken[:40]) in low(text), (city.id, text)
        assert talk.slot("city") == city.id


def test_switching_city_and_mishearings(rasa_stack: RasaStack, catalogs: Resources) -> None:
    talk = Conversation(rasa_stack)
    talk.say("¿qué se come en Jalapa?")
    assert talk.slot("city") == "xalapa"
    text, _ = talk.say("¿y en el puerto?")
    veracruz = catalogs.cities.get("veracruz")
    assert veracruz is not None and low(veracruz.foods[0].name) in low(text)
    talk.say("¿qué hay que ver en el Tajín?")
    assert talk.slot("city") == "papantla"
    talk.say("¿y en Boca?")
    assert talk.slot("city") == "boca-del-rio"


def test_greeting_menu_and_keys(rasa_stack: RasaStack) -> None:
    talk = Conversation(rasa_stack)
    text, payloads = talk.say("/greet")
    assert "Bienvenido" in text and payloads[-1]["expect"]["kind"] == "menu"
    text, payloads = talk.say('/dtmf{"digits":"1"}')
    assert "ciudad" in text and payloads[-1]["expect"]["kind"] == "city"
    text, _ = talk.say("Catemaco")
    assert "Catemaco" in text
    text, payloads = talk.say('/dtmf{"digits":"0"}')
    assert payloads[-1].get("transfer") is True


def test_tramite_information_with_disambiguation(rasa_stack: RasaStack, catalogs: Resources) -> None:
    talk = Conversation(rasa_stack)
    text, payloads = talk.say("¿qué necesito para sacar la licencia?")
    assert "¿Cuál trámite busca" in text and payloads[-1]["question"] == "disambiguation"
    text, _ = talk.say("la de chofer")
    assert talk.slot("tramite") == "licencia-chofer"
    chofer = catalogs.tramites.get("licencia-chofer")
    assert chofer is not None and low(short_item(chofer.requirements[0])) in low(text)
    text, _ = talk.say("¿y cuánto cuesta?")
    assert chofer.cost.spoken.split(".")[0] in text
    text, _ = talk.say("¿dónde se hace?")
    assert chofer.where.split(".")[0] in text
    text, payloads = talk.say("requisitos del acta")           # a new ambiguous name, answered with a key
    choices = talk.slot("tramite_choices")
    assert choices and payloads[-1]["question"] == "disambiguation"
    talk.say('/dtmf{"digits":"2"}')
    assert talk.slot("tramite") == choices[1]


@pytest.fixture
def case(case_service: CaseService) -> tuple[str, str]:
    opened = case_service.open_case("licencia-renovacion", "web",
                                    citizen=CitizenInfo("Luis Prueba", curp="GOML800202HVZMRS05"))
    return opened.case.folio, opened.pin


def spoken(digits: str) -> str:
    names = "cero uno dos tres cuatro cinco seis siete ocho nueve".split()
    return " ".join(names[int(d)] for d in digits)


def test_status_with_right_verification(rasa_stack: RasaStack, case: tuple[str, str]) -> None:
    folio, pin = case
    talk = Conversation(rasa_stack)
    text, payloads = talk.say("quiero saber el estado de mi trámite")
    assert payloads[-1]["expect"] == {"kind": "digits", "max_digits": 8, "terminator": "#"}
    text, payloads = talk.say(spoken(folio))                    # digit by digit, as words
    assert payloads[-1]["expect"]["max_digits"] == 4
    text, payloads = talk.say(spoken(pin))
    assert "Estado:" in text and len(text.split()) <= MAX_WORDS + 8     # + "¿Le ayudo con algo más?" or the offer
    assert any(p.get("case_folio") == folio for p in payloads)
    # the same case by keypad, verified with the end of the CURP
    talk2 = Conversation(rasa_stack)
    talk2.say('/dtmf{"digits":"3"}')
    talk2.say(f'/dtmf{{"digits":"{folio}"}}')
    text, _ = talk2.say("erre ese cero cinco")                # last 4 of GOML800202HVZMRS05
    assert "Estado:" in text, text


def test_a_folio_said_with_the_request_is_not_asked_for_again(rasa_stack: RasaStack, case: tuple[str, str]) -> None:
    folio, pin = case
    talk = Conversation(rasa_stack)
    # one breath, the recognizer's way (no accents, numbers as words, "un" as an article before it)
    text, payloads = talk.say(f"hola me dice en que va mi tramite tengo un numero de folio es el {spoken(folio)}")
    assert payloads[-1]["expect"]["max_digits"] == 4, text     # straight to the NIP
    assert talk.slot("folio") == folio
    text, _ = talk.say(spoken(pin))
    assert "Estado:" in text, text
    # figures in the middle of the turn; a PIN-length number in the request is not taken for the folio
    talk2 = Conversation(rasa_stack)
    text, payloads = talk2.say(f"quiero revisar el estatus, folio {folio[:4]} {folio[4:]} por favor")
    assert payloads[-1]["expect"]["max_digits"] == 4, text
    talk3 = Conversation(rasa_stack)
    text, payloads = talk3.say("quiero saber cómo va mi trámite, mi nip es 1234")
    assert payloads[-1]["expect"]["max_digits"] == 8, text     # the folio is still asked


def test_wrong_verification_three_times_locks_and_offers_an_agent(rasa_stack: RasaStack,
                                                                   case: tuple[str, str]) -> None:
    folio, pin = case
    wrong = "0000" if pin != "0000" else "1111"
    talk = Conversation(rasa_stack)
    talk.say("estado de mi trámite")
    texts = []
    for _ in range(3):
        talk.say(f"{folio[:4]} {folio[4:]}")                     # in groups, as figures
        text, payloads = talk.say(wrong)
        texts.append(text)
    assert "dos intentos" in texts[0] and "un intento" in texts[1]
    assert "bloqueado" in texts[2] and "Estado" not in texts[2]
    assert payloads[-1]["question"] == "agent_offer"
    text, payloads = talk.say("sí")
    assert payloads[-1].get("transfer") is True and payloads[-1]["transfer_reason"] == "verification_locked"
    # locked even with the right PIN now
    talk2 = Conversation(rasa_stack)
    talk2.say("estado de mi trámite")
    talk2.say(folio)
    text, _ = talk2.say(pin)
    assert "bloqueado" in text and "Estado" not in text


def test_unknown_and_misheard_folio(rasa_stack: RasaStack) -> None:
    from case_bridge.folio import damm_digit
    talk = Conversation(rasa_stack)
    talk.say("estado de mi trámite")
    text, _ = talk.say("uno dos tres")
    assert "ocho dígitos" in text
    text, _ = talk.say("1 2 3 4 5 6 7 8")
    assert "no es válido" in text
    payload = str(uuid.uuid4().int)[:7]               # a fresh folio: failure counters outlive a test run
    unknown = payload + damm_digit(payload)
    talk.say(unknown)
    text, payloads = talk.say("1234")
    assert "No encontré un trámite con ese folio" in text and payloads[-1]["expect"]["max_digits"] == 8


def test_open_a_case_by_phone_with_folio_read_back(rasa_stack: RasaStack, case_service: CaseService) -> None:
    talk = Conversation(rasa_stack)
    text, _ = talk.say("quiero iniciar un trámite por teléfono")
    text, _ = talk.say("la constancia de antecedentes penales")
    assert "Vamos a iniciar" in text
    text, _ = talk.say("erre o ele a ocho ocho cero tres cero tres eme ve zeta erre de ele cero uno")
    text, _ = talk.say("Rosa López Martínez")
    text, _ = talk.say("para un trabajo")
    assert "¿Confirma" in text and "Rosa López Martínez" in text
    text, payloads = talk.say("sí")
    folio = next(p["case_folio"] for p in payloads if p.get("case_folio"))
    assert text.count(f"{' '.join(folio[:4])}, {' '.join(folio[4:])}") == 2
    assert payloads[-1]["question"] == "readback" and payloads[-1]["expect"]["kind"] == "yes_no"
    opened = case_service.find_case(folio)
    assert opened is not None and opened.created_channel == "phone" and opened.citizen_name == "Rosa López Martínez"
    again, _ = talk.say("repítame el folio por favor")
    assert f"{' '.join(folio[:4])}, {' '.join(folio[4:])}" in again
    again, _ = talk.say("sí")
    assert f"{' '.join(folio[:4])}, {' '.join(folio[4:])}" in again
    text, _ = talk.say("no")
    assert "algo más" in text


def test_procedure_named_in_the_request_is_not_asked_again(rasa_stack: RasaStack) -> None:
    talk = Conversation(rasa_stack)
    text, _ = talk.say("quiero iniciar el trámite de constancia de antecedentes penales por teléfono")
    assert "Vamos a iniciar" in text and "CURP" in text
    text, _ = talk.say("no, mejor no")
    assert "algo más" in text and talk.slot("start_tramite") is None


def test_agent_goodbye_and_out_of_scope(rasa_stack: RasaStack) -> None:
    talk = Conversation(rasa_stack)
    text, payloads = talk.say("cuéntame un chiste")
    assert "no le puedo ayudar" in text
    text, payloads = talk.say("quiero hablar con un asesor")
    assert payloads[-1].get("transfer") is True
    text, payloads = Conversation(rasa_stack).say("adiós")
    assert payloads[-1].get("hangup") is True


def test_spoken_style_questions_and_closing(rasa_stack: RasaStack, catalogs: Resources) -> None:
    """Phone-style turns through the real NLU: a filler opening, a processing-time question, a city with words
    around it, thanks that close after the offer, and an explicit goodbye that hangs up."""
    talk = Conversation(rasa_stack)
    text, _ = talk.say("oiga, una pregunta, ¿en cuánto tiempo me responden una solicitud de información pública?")
    assert talk.slot("tramite") == "solicitud-informacion" and "diez días hábiles" in text, text
    text, _ = talk.say("pues mire, ¿qué se come allá por Catemaco?")
    catemaco = catalogs.cities.get("catemaco")
    assert catemaco is not None and low(catemaco.foods[0].name) in low(text), text
    text, payloads = talk.say("gracias")
    assert "algo más" in text and not payloads[-1].get("hangup")
    text, payloads = talk.say("gracias")
    assert payloads[-1].get("hangup") is True
    text, payloads = Conversation(rasa_stack).say("eso es todo, muchas gracias, hasta luego")
    assert payloads[-1].get("hangup") is True


def test_keypad_transfer_announces_the_handoff_once(rasa_stack: RasaStack) -> None:
    """0 at the menu: the engine says the handoff after the dialogue's words (ivr.call.escalation), so the dialogue
    must not announce it too: a keypad caller heard "Le comunico con un asesor" and then "Le comunico con un
    agente"."""
    from ivr.call.escalation import EscalationPhrases
    talk = Conversation(rasa_stack)
    talk.say("/greet")
    text, payloads = talk.say('/dtmf{"digits":"0"}')
    assert payloads[-1].get("transfer") is True
    heard = f"{text} {EscalationPhrases().handoff}"          # what the engine plays, in its order
    assert low(heard).count("le comunico") == 1, heard
    text, payloads = talk.say("quiero hablar con un asesor")     # the spoken request: the same rule
    assert payloads[-1].get("transfer") is True and "le comunico" not in low(text), text


def test_after_the_status_a_number_or_a_key_is_not_a_missing_menu_option(rasa_stack: RasaStack,
                                                                        case: tuple[str, str]) -> None:
    """After the status reply the caller said the PIN again (a number, read as inform_number): it was answered
    "Esa opción no existe", an answer to a key press. A key 1/2 to "¿Quiere que le diga lo demás?" is a yes/no."""
    folio, pin = case
    talk = Conversation(rasa_stack)
    talk.say('/dtmf{"digits":"3"}')
    talk.say(f'/dtmf{{"digits":"{folio}"}}')
    text, payloads = talk.say(f'/dtmf{{"digits":"{pin}"}}')
    assert "Estado:" in text, text
    if payloads[-1].get("question") == "more":
        text, _ = talk.say('/dtmf{"digits":"2"}')
        assert "opción no existe" not in text and "algo más" in text, text
    text, _ = talk.say(spoken(pin))
    assert "opción no existe" not in text, text
    text, payloads = talk.say(f"oiga, quiero saber cómo va mi trámite, mi folio es {spoken(folio)}")
    # inform_number: the folio is taken from the words and the NIP asked; check_status: the form asks the folio
    assert "opción no existe" not in text and payloads[-1]["expect"]["max_digits"] in (4, 8), text


def test_veratur_chat_say_mode(rasa_stack: RasaStack) -> None:
    import subprocess
    import sys

    from foundation.paths import REPO_ROOT
    result = subprocess.run([sys.executable, "-m", "veratur.cli", "chat", "--url", rasa_stack.url,
                             "--say", "¿qué se come en Xico?", "--say", ":0"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "portal> Bienvenido" in result.stdout and "Xico" in result.stdout
    assert "intención=ask_food" in result.stdout and "transfer" in result.stdout
