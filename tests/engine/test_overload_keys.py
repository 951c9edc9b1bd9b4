"""The keypad fallback of an overloaded recognizer fits the prompt (ivr.call.overload.keypad_question): for each kind
of question the dialogue really asks (its prompts from dialogs/domain.yml and its actions, parsed the engine's way),
the keys offered are ones the dialogue's key handling (action_dtmf_menu) gives that meaning to at that point; and a
real session says them when a city question's decode is dropped, and counts the hold and the drop in the call's
figures (ivr.call.stats, sent to the call-detail record)."""
from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import yaml
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from dialogs.actions.control import ActionDtmfMenu
from dialogs.actions.resources import Resources, load_resources
from dialogs.actions.tramites import ActionTramiteInfo
from foundation.paths import REPO_ROOT
from ivr.call.overload import CITY_KEYS, FREE_KEYS, key_sentences, keypad_question
from ivr.call.session import SessionPhrases
from ivr.dialogue.interface import DialogueReply, Expect
from ivr.dialogue.rasa import parse_messages
from testkit.sounds import silence, speech
from tests.engine.test_overload import (  # noqa: F401  (pool, _speech_vad_loaded: its fixtures, used here too)
    BYE,
    Call,
    _speech_vad_loaded,
    free,
    pool,
)

P = SessionPhrases()
LEAD, MENU = P.speech_busy, P.dtmf_menu
DOMAIN = yaml.safe_load((REPO_ROOT / "dialogs" / "domain.yml").read_text())


def prompt(name: str) -> DialogueReply:
    """A domain response as the engine receives it (text + custom payload through the webhook parser)."""
    variant = DOMAIN["responses"][name][0]
    return parse_messages([{"text": variant["text"], "custom": variant.get("custom")}])


def asked(reply: DialogueReply) -> tuple[str, ...]:
    return keypad_question(reply.expect, " ".join(reply.texts), lead=LEAD, key_menu=MENU)


def keys_offered(sentence: str) -> set[str]:
    words = {"uno": "1", "dos": "2", "tres": "3", "cero": "0", "nueve": "9"}
    found = re.findall(r"\b(?:marque|o|,)\s+(\d|uno|dos|tres|cero|nueve)\b", sentence, re.IGNORECASE)
    return {words.get(k.lower(), k) for k in found}


@pytest.fixture(scope="module")
def catalogs() -> Resources:
    return load_resources(with_cases=False)


def tracker(text: str, intent: str, *, entities: list[dict[str, Any]] | None = None,
            slots: dict[str, Any] | None = None, previous_bot: list[dict[str, Any]] | None = None) -> Tracker:
    latest = {"text": text, "intent": {"name": intent, "confidence": 1.0}, "entities": entities or [], "metadata": {}}
    events: list[dict[str, Any]] = [{"event": "user", "text": "hola", "parse_data": {"intent": {"name": "greet"}}}]
    for message in previous_bot or []:
        events.append({"event": "bot", "text": message.get("text"), "data": {"custom": message.get("custom")}})
    events.append({"event": "user", "text": text, "parse_data": latest})
    return Tracker("overload-keys", dict(slots or {}), latest, events, False, None, {}, "action_listen")


async def press(catalogs: Resources, keys: str, after: dict[str, Any], slots: dict[str, Any] | None = None
                ) -> CollectingDispatcher:
    """The dialogue's answer to `keys` pressed right after the bot message `after`."""
    d = CollectingDispatcher()
    await ActionDtmfMenu(catalogs).run(d, tracker(f'/dtmf{{"digits":"{keys}"}}', "dtmf",
                                                  entities=[{"entity": "digits", "value": keys}], slots=slots,
                                                  previous_bot=[after]), {})
    return d


# -- each kind of question ----------------------------------------------------------------------------------------

async def test_a_city_question_offers_repeat_and_agent_and_those_keys_do_that(catalogs: Resources) -> None:
    city = prompt("utter_ask_city")
    assert city.expect.kind == "city" and not key_sentences(city.texts[-1])    # it names no keys itself
    assert asked(city) == (LEAD, CITY_KEYS)
    assert keys_offered(CITY_KEYS) == {"9", "0"}
    variant = DOMAIN["responses"]["utter_ask_city"][0]
    shown = {"text": variant["text"], "custom": variant["custom"]}
    again = await press(catalogs, "9", shown)
    assert again.messages[0]["text"] == variant["text"]                  # the city question, said again
    assert again.messages[0]["custom"]["expect"]["kind"] == "city"       # with its city grammar
    agent = await press(catalogs, "0", shown)
    assert agent.messages[0]["response"] == "utter_transfer"


async def test_an_open_question_offers_the_main_menu_said_as_such(catalogs: Resources) -> None:
    tramite = prompt("utter_ask_tramite")
    assert tramite.expect.kind == "free" and not key_sentences(tramite.texts[-1])
    assert asked(tramite) == (LEAD, FREE_KEYS)
    assert "menú principal" in FREE_KEYS and keys_offered(FREE_KEYS) == {"1", "2", "3", "0"}
    variant = DOMAIN["responses"]["utter_ask_tramite"][0]
    shown = {"text": variant["text"], "custom": variant["custom"]}
    # the main menu's keys mean the main menu at an open question: 1 tourism, 2 trámites, 3 status, 0 an agent
    assert (await press(catalogs, "1", shown)).messages[0]["response"] == "utter_ask_city"
    assert (await press(catalogs, "2", shown)).messages[0]["response"] == "utter_ask_tramite"
    assert (await press(catalogs, "0", shown)).messages[0]["response"] == "utter_transfer"
    # an open question with no expectation at all (kind none) gets the same
    assert keypad_question(Expect(kind="none"), "Con gusto.", lead=LEAD, key_menu=MENU) == (LEAD, FREE_KEYS)


async def test_a_disambiguation_names_its_own_keys_with_puede_marcar(catalogs: Resources) -> None:
    d = CollectingDispatcher()
    events = await ActionTramiteInfo(catalogs).run(
        d, tracker("¿qué necesito para sacar la licencia?", "ask_tramite_requirements",
                   entities=[{"entity": "tramite", "value": "licencia"}]), {})
    reply = parse_messages([{"text": m.get("text"), "custom": m.get("custom")} for m in d.messages])
    assert reply.expect.kind == "free" and "También puede marcar uno para" in reply.texts[-1]
    lead, keys = asked(reply)
    # its own options, not the main menu (where 2 would be "trámites" and 3 the status form)
    assert lead == LEAD and keys.startswith("Marque uno para ") and " dos para " in keys
    assert "turismo" not in keys
    slots = {e["name"]: e["value"] for e in events if e.get("event") == "slot"}
    second = slots["tramite_choices"][1]
    picked = await press(catalogs, "2", {"text": d.messages[-1]["text"], "custom": d.messages[-1]["custom"]},
                         slots=slots)
    assert "necesita" in " ".join(m.get("text") or "" for m in picked.messages)
    assert catalogs.tramites.get(second).label in keys


def test_yes_no_digits_and_menu_keep_their_keys() -> None:
    folio = prompt("utter_ask_folio")           # names its keys: "márquelo en el teclado y termine con ... gato"
    assert asked(folio)[1].startswith("Márquelo en el teclado")
    greeting = prompt("utter_greet")            # names the main menu's keys itself
    assert asked(greeting) == (LEAD, "Marque uno para turismo, dos para trámites, tres para el estado de su "
                                     "trámite, o cero para un asesor.")
    rephrase = prompt("utter_please_rephrase")  # "También puede marcar uno para turismo ..."
    assert asked(rephrase)[1].startswith("Marque uno para turismo, dos para trámites")
    words_only = Expect(kind="menu", phrases=("turismo", "trámites", "estado de mi trámite"))
    assert keypad_question(words_only, "Dígame en qué le ayudo: turismo, información de trámites o el estado de su "
                                       "trámite.", lead=LEAD, key_menu=MENU) == (LEAD, MENU)
    assert keypad_question(Expect(kind="yes_no"), "¿Es correcto?", lead=LEAD, key_menu=MENU) == (
        LEAD, "Marque 1 para sí o 2 para no.")
    assert keypad_question(Expect(kind="digits", max_digits=4, terminator="*"), "Dígame su NIP.", lead=LEAD,
                           key_menu=MENU) == (LEAD, "Marque los dígitos en el teclado y termine con la tecla "
                                                    "asterisco.")


# -- a real session -----------------------------------------------------------------------------------------------

async def test_a_dropped_city_answer_gets_the_city_keys_and_the_call_counts_it(pool: ThreadPoolExecutor  # noqa: F811
                                                                               ) -> None:
    city = prompt("utter_ask_city")
    call = Call(city, [free("Xalapa le espera.", intent="inform_city"), BYE], ["xalapa"], pool, final_delay_s=3.0,
                max_wait_ms=300, max_wait_keypad_ms=1000)
    await call.wait_prompt_done(0)
    await call.leg.say(speech("안녕하세요") + silence(400))
    await call.wait_prompts(3)
    assert call.texts()[1] == P.one_moment
    assert call.texts()[2] == f"{P.speech_busy} {CITY_KEYS}"
    assert (call.session.stats.asr_holds, call.session.stats.asr_dropped) == (1, 1)
    await call.wait_prompt_done(2)
    call.leg.press("9")
    await call.wait_prompts(4)
    assert [(t.text, t.dtmf) for t in call.dialogue.turns] == [(None, "9")]     # the key went to the dialogue
    await asyncio.sleep(2.0)      # the dropped utterance's decode ends now: it must not answer anything
    assert [(t.text, t.dtmf) for t in call.dialogue.turns] == [(None, "9")]
    summary = call.session.stats.summary(call.session.turn_latencies)
    assert (summary["asr_holds"], summary["asr_dropped"], summary["dtmf_turns"]) == (1, 1, 1)
    call.leg.hang_up()
    await call.result()
