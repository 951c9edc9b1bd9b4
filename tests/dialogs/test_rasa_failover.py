"""Several Rasa servers behind the engine (dialogue.rasa_failover_urls): calls spread over them by Call-ID, a turn
whose server refuses the connection goes to the next, and the shared Redis tracker store carries the conversation
over, so a caller halfway through verifying a folio goes on where they were when their Rasa server dies.

The end-to-end test starts a second real Rasa + action server (B) next to the session's (A), both on the Redis
tracker and lock store as `veratur rasa` writes them, kills B with SIGKILL mid-conversation and checks that A
answers the next turn from the state B left. The stand-in servers are the seam for the ordering rules only."""
from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from ivr.call.leg import CallInfo
from ivr.dialogue.interface import CallerTurn, TurnContext
from ivr.dialogue.rasa import RasaDialogueFactory
from ivr.dialogue.rasa_servers import RasaServers
from testkit.db import REDIS_URL
from tests.dialogs.conftest import caller_number
from veratur.rasa_server import RasaStack, free_port, write_endpoints


def ctx(call_id: str) -> TurnContext:
    return TurnContext(call_id=call_id, case_folio=None, caller_number=caller_number())


def info(call_id: str) -> CallInfo:
    return CallInfo(call_id=call_id, caller="2280000000", called="veratur", node="test")


def call_starting_on(servers: RasaServers, url: str) -> str:
    """A Call-ID whose conversation starts on `url`."""
    while True:
        call_id = f"{uuid.uuid4().hex}@failover"
        if servers.order(call_id)[0] == url:
            return call_id


# -- the ordering rules -----------------------------------------------------------------------------------

def test_calls_spread_over_the_servers_and_stay_on_theirs() -> None:
    servers = RasaServers(["http://a:5005/", "http://b:5005", "http://c:5005"])
    assert servers.urls == ["http://a:5005", "http://b:5005", "http://c:5005"]
    firsts = [servers.order(f"call-{i}")[0] for i in range(300)]
    assert all(firsts.count(url) > 60 for url in servers.urls)          # each server takes a share of new calls
    assert servers.order("call-7") == servers.order("call-7")            # the same call, the same server
    order = servers.order("call-7", current="http://c:5005")
    assert order[0] == "http://c:5005" and sorted(order) == servers.urls  # a call stays where it is


def test_a_refusing_server_goes_last_until_it_may_be_back() -> None:
    now = [100.0]
    servers = RasaServers(["http://a", "http://b"], retry_after_s=10.0, clock=lambda: now[0])
    call = call_starting_on(servers, "http://a")
    servers.mark_down("http://a")
    assert servers.order(call) == ["http://b", "http://a"] and servers.is_down("http://a")
    now[0] += 10.5
    assert servers.order(call) == ["http://a", "http://b"]               # tried first again
    servers.mark_down("http://b")
    servers.mark_up("http://b")
    assert not servers.is_down("http://b")
    with pytest.raises(ValueError):
        RasaServers([])


def test_rasa_endpoints_share_trackers_and_locks_in_redis(tmp_path: Path) -> None:
    import yaml

    path = write_endpoints(5055, tmp_path, "redis://:s3cr%40t@10.0.0.5:6380/3")
    endpoints = yaml.safe_load(path.read_text(encoding="utf-8"))
    for store in ("tracker_store", "lock_store"):
        assert endpoints[store]["type"] == "redis" and endpoints[store]["url"] == "10.0.0.5"
        assert endpoints[store]["port"] == 6380 and endpoints[store]["db"] == 3
        assert endpoints[store]["password"] == "s3cr@t" and endpoints[store]["key_prefix"].isalnum()
    assert "lock_store" not in yaml.safe_load(write_endpoints(5056, tmp_path).read_text(encoding="utf-8"))


@pytest.fixture
async def standin() -> AsyncIterator[tuple[str, list[str]]]:
    """A stand-in REST channel that records which conversations reached it."""
    seen: list[str] = []

    async def webhook(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body["sender"])
        return web.json_response([{"text": "Hola."}, {"custom": {"expect": {"kind": "free"}}}])

    async def parse(request: web.Request) -> web.Response:
        return web.json_response({"intent": {"name": "greet", "confidence": 1.0}})

    app = web.Application()
    app.router.add_post("/webhooks/rest/webhook", webhook)
    app.router.add_post("/model/parse", parse)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_a_refused_connection_moves_the_turn_to_the_next_server(
        standin: tuple[str, list[str]]) -> None:
    url, seen = standin
    dead = f"http://127.0.0.1:{free_port()}"                  # nothing listens there: connection refused
    factory = RasaDialogueFactory([dead, url], timeout_s=2.0)
    try:
        call = call_starting_on(factory.servers, dead)
        dialogue = factory(info(call))
        greeting = await dialogue.start(ctx(call))
        assert greeting.texts == ("Hola.",) and not greeting.fallback and dialogue.server == url
        assert seen == [call] and factory.servers.is_down(dead)
        other = call_starting_on(RasaServers([dead, url]), dead)   # a new call skips the refusing server
        assert factory.servers.order(other)[0] == url
    finally:
        await factory.aclose()


async def test_every_server_refusing_means_the_keypad_menu() -> None:
    factory = RasaDialogueFactory([f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"],
                                  timeout_s=2.0)
    try:
        dialogue = factory(info("all-down@failover"))
        greeting = await dialogue.start(ctx("all-down@failover"))
        assert greeting.fallback and greeting.expect.kind == "menu"
    finally:
        await factory.aclose()


# -- real Rasa servers on the shared Redis tracker store ---------------------------------------------------

@pytest.fixture
def second_rasa(rasa_model: Path, cases_db: str, tmp_path_factory: pytest.TempPathFactory):
    """Rasa server B beside the session's A: same model, same case database, same Redis tracker and lock store."""
    env = dict(os.environ, VERATUR__DATABASE__URL=cases_db, VERATUR__REDIS__URL=REDIS_URL)
    stack = RasaStack(rasa_model, log_dir=tmp_path_factory.mktemp("rasa-b"), env=env, redis_url=REDIS_URL)
    stack.start()
    yield stack
    stack.stop()


def spoken(digits: str) -> str:
    names = "cero uno dos tres cuatro cinco seis siete ocho nueve".split()
    return " ".join(names[int(d)] for d in digits)


@pytest.mark.rasa
@pytest.mark.slow
async def test_a_killed_rasa_server_hands_the_conversation_to_the_other(
        rasa_stack: RasaStack, second_rasa: RasaStack, case_service: CaseService) -> None:
    opened = case_service.open_case("licencia-renovacion", "web",
                                    citizen=CitizenInfo("Ana Failover", curp="GOML800202HVZMRS05"))
    folio, pin = opened.case.folio, opened.pin
    factory = RasaDialogueFactory([second_rasa.url, rasa_stack.url], timeout_s=15.0)
    try:
        call = call_starting_on(factory.servers, second_rasa.url)
        dialogue, c = factory(info(call)), ctx(call)
        await dialogue.start(c)
        reply = await dialogue.turn(c, CallerTurn(text="quiero saber el estado de mi trámite"))
        assert dialogue.server == second_rasa.url and not reply.fallback
        assert reply.expect.kind == "digits" and reply.expect.max_digits == 8        # B asks for the folio
        reply = await dialogue.turn(c, CallerTurn(text=spoken(folio)))
        assert reply.expect.max_digits == 4 and dialogue.server == second_rasa.url   # ... and for the PIN

        assert second_rasa.rasa is not None
        os.killpg(second_rasa.rasa.pid, signal.SIGKILL)                             # B dies mid-verification
        second_rasa.rasa.wait(timeout=10)

        reply = await dialogue.turn(c, CallerTurn(dtmf=pin, event="dtmf"))
        assert dialogue.server == rasa_stack.url and not reply.fallback
        status = " ".join(reply.texts)
        assert "Estado:" in status and reply.case_folio == folio                    # A went on from B's state
    finally:
        await factory.aclose()
