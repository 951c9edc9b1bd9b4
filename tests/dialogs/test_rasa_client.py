"""`ivr.dialogue.rasa.RasaDialogue`: payload parsing, turns against the real Rasa stack, and the fall back to the
DTMF menu when Rasa is down or slower than dialogue.timeout_s (a stub HTTP server is the seam for "slow")."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from ivr.call.leg import CallInfo
from ivr.dialogue.interface import CallerTurn, Expect, TurnContext
from ivr.dialogue.rasa import (
    FALLBACK_NOTICE,
    RasaDialogueFactory,
    caller_message,
    dtmf_message,
    parse_messages,
)
from tests.dialogs.conftest import caller_number
from veratur.rasa_server import RasaStack, free_port


def ctx(call_id: str = "call-1@test") -> TurnContext:
    return TurnContext(call_id=call_id, case_folio=None, caller_number=caller_number())


def info(call_id: str = "call-1@test") -> CallInfo:
    return CallInfo(call_id=call_id, caller="2280000000", called="veratur", node="test")


# -- pure parsing -----------------------------------------------------------------------------------------

def test_dtmf_convention() -> None:
    assert dtmf_message("12#") == '/dtmf{"digits":"12#"}'
    assert dtmf_message('1"}x') == '/dtmf{"digits":"1"}'          # nothing but keys gets through
    assert caller_message(CallerTurn(dtmf="3", event="dtmf")) == '/dtmf{"digits":"3"}'
    assert caller_message(CallerTurn(event="no_input")) == "/repeat"
    assert caller_message(CallerTurn(text="/restart")) == "restart"   # speech is never an intent message


def test_parse_messages_merges_texts_and_payloads() -> None:
    reply = parse_messages([
        {"recipient_id": "x", "text": "Listo."},
        {"recipient_id": "x", "custom": {"expect": {"kind": "free"}, "case_folio": "43023959"}},
        {"recipient_id": "x", "text": "¿Quiere que le repita?"},
        {"recipient_id": "x", "custom": {"expect": {"kind": "yes_no", "phrases": ["sí", "no"], "max_digits": 1}}},
    ])
    assert reply.texts == ("Listo.", "¿Quiere que le repita?")
    assert reply.expect == Expect(kind="yes_no", phrases=("sí", "no"), max_digits=1, terminator="#")
    assert reply.case_folio == "43023959" and not reply.transfer and not reply.hangup


def test_parse_messages_keeps_secrets_out_of_the_transcript_and_passes_the_transfer_reason() -> None:
    reply = parse_messages([
        {"text": "Su NIP es: 1, 2, 3, 4."},
        {"custom": {"expect": {"kind": "yes_no"}, "redacted": "Su NIP es: *, *, *, *."}},
        {"text": "Le comunico con un asesor."},
        {"custom": {"expect": {"kind": "none"}, "transfer": True, "transfer_reason": "verification_locked"}},
    ])
    assert reply.texts[0] == "Su NIP es: 1, 2, 3, 4."
    assert reply.transcript_texts == ("Su NIP es: *, *, *, *.", "Le comunico con un asesor.")
    assert reply.transfer and reply.transfer_reason == "verification_locked"
    assert parse_messages([{"text": "Hola"}]).transcript_texts is None


def test_parse_messages_tolerates_bad_payloads() -> None:
    reply = parse_messages([{"text": "Hola"}, {"custom": {"expect": {"kind": "telepathy", "max_digits": "x"}}},
                            {"custom": "nonsense"}, "garbage", {"custom": {"transfer": "yes", "hangup": True}}])
    assert reply.texts == ("Hola",) and reply.expect == Expect() and reply.transfer is False and reply.hangup


# -- against the real Rasa ------------------------------------------------------------------------------

@pytest.mark.rasa
@pytest.mark.slow
async def test_turns_against_the_real_rasa(rasa_stack: RasaStack) -> None:
    factory = RasaDialogueFactory(rasa_stack.url, timeout_s=10.0)
    try:
        dialogue = factory(info("rc-1@test"))
        c = ctx("rc-1@test")
        greeting = await dialogue.start(c)
        assert "Bienvenido" in greeting.texts[0] and greeting.expect.kind == "menu" and not greeting.fallback
        assert greeting.intent == "greet"
        reply = await dialogue.turn(c, CallerTurn(dtmf="1", event="dtmf"))
        assert reply.expect.kind == "city" and "Xalapa" in reply.expect.phrases and reply.intent == "dtmf"
        reply = await dialogue.turn(c, CallerTurn(text="qué se come en papantla", confidence=0.8))
        assert reply.intent == "ask_food" and reply.intent_confidence is not None and reply.intent_confidence > 0.5
        assert "Papantla" in reply.texts[0]
        reply = await dialogue.turn(c, CallerTurn(text="quiero hablar con un asesor"))
        assert reply.transfer and reply.expect.kind == "none"
        await dialogue.end(c)
    finally:
        await factory.aclose()


# -- fallback ---------------------------------------------------------------------------------------------

async def test_rasa_down_falls_back_to_the_menu(caplog: pytest.LogCaptureFixture) -> None:
    factory = RasaDialogueFactory(f"http://127.0.0.1:{free_port()}", timeout_s=2.0)   # nothing listens there
    try:
        dialogue = factory(info())
        c = ctx()
        with caplog.at_level(logging.WARNING, logger="ivr.dialogue.rasa"):
            greeting = await dialogue.start(c)
        assert greeting.fallback and greeting.expect.kind == "menu"
        assert greeting.texts == (factory.menu.greeting, factory.menu.menu)
        assert "dialogue fallback" in caplog.text and "call_id=call-1@test" in caplog.text
        reply = await dialogue.turn(c, CallerTurn(dtmf="0", event="dtmf"))
        assert reply.fallback and reply.transfer
    finally:
        await factory.aclose()


@pytest.fixture
async def stub_rasa() -> AsyncIterator[tuple[str, dict[str, float]]]:
    """A stand-in for a Rasa that answers the greeting, then becomes slower than the timeout."""
    delays = {"webhook": 0.0}

    async def webhook(request: web.Request) -> web.Response:
        await asyncio.sleep(delays["webhook"])
        return web.json_response([{"recipient_id": "x", "text": "Hola desde Rasa."},
                                  {"recipient_id": "x", "custom": {"expect": {"kind": "free"}}}])

    async def parse(request: web.Request) -> web.Response:
        return web.json_response({"intent": {"name": "greet", "confidence": 0.99}})

    app = web.Application()
    app.router.add_post("/webhooks/rest/webhook", webhook)
    app.router.add_post("/model/parse", parse)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}", delays
    await runner.cleanup()


async def test_slow_rasa_mid_call_falls_back_within_the_timeout(stub_rasa: tuple[str, dict[str, float]]) -> None:
    url, delays = stub_rasa
    factory = RasaDialogueFactory(url, timeout_s=0.5)
    try:
        dialogue = factory(info())
        c = ctx()
        greeting = await dialogue.start(c)
        assert greeting.texts == ("Hola desde Rasa.",) and not greeting.fallback and greeting.intent == "greet"
        delays["webhook"] = 3.0
        started = time.monotonic()
        reply = await dialogue.turn(c, CallerTurn(text="qué hay en xalapa"))
        assert time.monotonic() - started < 1.5            # the caller is not left in dead air
        assert reply.fallback and reply.texts[0] == FALLBACK_NOTICE and factory.menu.menu in reply.texts
        delays["webhook"] = 0.0                            # Rasa is back, but this call stays on the menu
        reply = await dialogue.turn(c, CallerTurn(dtmf="1", event="dtmf"))
        assert reply.fallback
    finally:
        await factory.aclose()
