"""Action latency: each custom action run against hand-built trackers, with the real catalogs and with a
synthetic 900-entry trámite catalog (dialogs/catalog_gen.py). Prints p50 / p95 / max per action.

Goal: < 20 ms per action. Two views: the action code in-process (catalog lookups, text), and the same actions
through a real `veratur actions` server over HTTP (JSON tracker in, events out) — what Rasa waits for. The
status lookup includes the case bridge on a real SQLite database (PIN hash check included).

    .venv/bin/python bench/actions.py [--rounds 300] [--count 900] [--turns 100]

`--turns N` also starts a real `rasa run` + action server (cached model) and times N whole caller turns through
the engine's client (ivr.dialogue.rasa: webhook + intent parse), the latency a caller adds to ASR and TTS.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rasa_sdk import Tracker  # noqa: E402
from rasa_sdk.executor import CollectingDispatcher  # noqa: E402

from dialogs.actions.control import ActionDtmfMenu  # noqa: E402
from dialogs.actions.resources import Resources  # noqa: E402
from dialogs.actions.status import ValidateStatusForm  # noqa: E402
from dialogs.actions.tourism import ActionTourismAnswer  # noqa: E402
from dialogs.actions.tramites import ActionTramiteInfo  # noqa: E402
from dialogs.catalog import load_cities, load_tramites  # noqa: E402
from dialogs.catalog_gen import write_catalog  # noqa: E402


def tracker(text: str, intent: str, entities: list[dict[str, str]] | None = None,
            slots: dict[str, Any] | None = None) -> Tracker:
    latest = {"text": text, "intent": {"name": intent, "confidence": 1.0}, "entities": entities or [],
              "metadata": {"caller_number": "2280000000"}}
    events = [{"event": "user", "text": text, "parse_data": latest}]
    return Tracker("bench", dict(slots or {}), latest, events, False, None, {}, "action_listen")


def cases_for(res: Resources) -> dict[str, Callable[[], Awaitable[Any]]]:
    tourism = ActionTourismAnswer(res)
    info = ActionTramiteInfo(res)
    menu = ActionDtmfMenu(res)
    first = res.tramites.tramites[0]
    word = first.name.split()[0]
    return {
        "tourism: attractions (city named)": lambda: tourism.run(CollectingDispatcher(), tracker(
            "¿qué hay que ver en Papantla?", "ask_attractions", [{"entity": "city", "value": "Papantla"}]), {}),
        "tourism: follow-up (slot city)": lambda: tourism.run(CollectingDispatcher(), tracker(
            "¿y qué se come ahí?", "ask_food", slots={"city": "xico"}), {}),
        "tourism: festival by name": lambda: tourism.run(CollectingDispatcher(), tracker(
            "¿cuándo es la feria de la Candelaria?", "ask_festivals"), {}),
        "trámite: by full name": lambda: info.run(CollectingDispatcher(), tracker(
            f"¿qué necesito para {first.name}?", "ask_tramite_requirements",
            [{"entity": "tramite", "value": first.name}]), {}),
        "trámite: ambiguous word": lambda: info.run(CollectingDispatcher(), tracker(
            f"requisitos de {word}", "ask_tramite_requirements", [{"entity": "tramite", "value": word}]), {}),
        "trámite: follow-up cost": lambda: info.run(CollectingDispatcher(), tracker(
            "¿y cuánto cuesta?", "ask_tramite_cost", slots={"tramite": first.id}), {}),
        "dtmf menu key": lambda: menu.run(CollectingDispatcher(), tracker(
            '/dtmf{"digits":"2"}', "dtmf", [{"entity": "digits", "value": "2"}]), {}),
    }


async def measure(fn: Callable[[], Awaitable[Any]], rounds: int) -> list[float]:
    await fn()   # warm-up
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(len(ordered) * 0.95) - 1)]


def line(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    return (f"  {name:<38} p50 {statistics.median(ordered):7.3f} ms   p95 {p95(samples):7.3f} ms   "
            f"max {ordered[-1]:7.3f} ms")


HTTP_CASES = [
    ("action_tourism_answer", "¿qué hay que ver en Papantla?", "ask_attractions",
     [{"entity": "city", "value": "Papantla"}], {}),
    ("action_tourism_answer", "¿y qué se come ahí?", "ask_food", [], {"city": "xico"}),
    ("action_tramite_info", "¿qué necesito para sacar la licencia?", "ask_tramite_requirements",
     [{"entity": "tramite", "value": "licencia"}], {}),
    ("action_tramite_info", "¿y cuánto cuesta?", "ask_tramite_cost", [], {"tramite": "licencia-chofer"}),
    ("action_dtmf_menu", '/dtmf{"digits":"1"}', "dtmf", [{"entity": "digits", "value": "1"}], {}),
]


def http_samples(tramites_path: Path | None, rounds: int, tmp: Path) -> dict[str, list[float]]:
    """The actions through a real action server process (rasa-sdk webhook), as Rasa calls them."""
    import os
    import subprocess

    import httpx
    import yaml

    from veratur.rasa_server import free_port, stop_process, wait_http

    domain = yaml.safe_load((REPO / "dialogs" / "domain.yml").read_text(encoding="utf-8"))
    port = free_port()
    env = dict(os.environ, VERATUR__DATABASE__URL=f"sqlite:///{tmp / 'http.db'}")
    if tramites_path is not None:
        env["VERATUR_TRAMITES_CATALOG"] = str(tramites_path)
    proc = subprocess.Popen([sys.executable, "-m", "veratur.cli", "--log-level", "WARNING", "actions", "--port",
                             str(port)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    out: dict[str, list[float]] = {}
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, 120, "the action server")
        with httpx.Client(timeout=10) as client:
            for action, text, intent, entities, slots in HTTP_CASES:
                t = tracker(text, intent, entities, slots)
                body = {"next_action": action, "sender_id": "bench", "version": "3.6.21", "domain": domain,
                        "tracker": {"sender_id": "bench", "slots": t.slots, "latest_message": t.latest_message,
                                    "events": t.events, "paused": False, "followup_action": None,
                                    "active_loop": {}, "latest_action_name": "action_listen"}}
                client.post(f"http://127.0.0.1:{port}/webhook", json=body).raise_for_status()
                samples = []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    client.post(f"http://127.0.0.1:{port}/webhook", json=body).raise_for_status()
                    samples.append((time.perf_counter() - t0) * 1000)
                out[f"{action} ({intent})"] = samples
    finally:
        stop_process(proc)  # type: ignore[arg-type]
    return out


async def status_samples(res: Resources, rounds: int, tmp: Path) -> tuple[list[float], list[float]]:
    from case_bridge.migrate import upgrade
    from case_bridge.service import CaseService
    from case_bridge.views import CitizenInfo
    from dialogs.catalog_seed import seed_catalog

    url = f"sqlite:///{tmp / 'bench.db'}"
    upgrade(url)
    svc = CaseService.from_url(url, redis_url="redis://127.0.0.1:6379/0", ratelimit_prefix=f"bench-{uuid.uuid4()}")
    seed_catalog(svc)
    opened = svc.open_case("acta-nacimiento-copia", "web", citizen=CitizenInfo("Bench", curp="PEPA900101MVZRRN09"))
    form = ValidateStatusForm(Resources(res.cities, res.tramites, svc))
    folio, pin = opened.case.folio, opened.pin
    folio_t = tracker(folio, "inform_number")
    pin_t = tracker(pin, "inform_number", slots={"folio": folio})
    folio_ms = await measure(lambda: form.validate_folio(folio, CollectingDispatcher(), folio_t, {}), rounds)
    verify_ms = await measure(lambda: form.validate_verification(pin, CollectingDispatcher(), pin_t, {}),
                              max(20, rounds // 10))
    svc.close()
    return folio_ms, verify_ms


TURN_SCRIPT = ("¿qué hay que ver en Papantla?", "¿y qué se come ahí?", "¿y en Xico?", "¿cómo llego?",
               "¿qué necesito para sacar la licencia?", "la de chofer", "¿y cuánto cuesta?", "gracias")


async def turn_samples(turns: int) -> list[float]:
    from ivr.call.leg import CallInfo
    from ivr.dialogue.interface import CallerTurn, TurnContext
    from ivr.dialogue.rasa import RasaDialogueFactory
    from veratur.rasa_server import RasaStack
    from veratur.training import ensure_model

    samples: list[float] = []
    with RasaStack(ensure_model()) as stack:
        factory = RasaDialogueFactory(stack.url, timeout_s=10.0)
        try:
            call = 0
            while len(samples) < turns:
                call += 1
                call_id = f"bench-{uuid.uuid4().hex[:8]}"
                ctx = TurnContext(call_id=call_id, case_folio=None, caller_number="2280000000")
                dialogue = factory(CallInfo(call_id=call_id, caller="2280000000", called="bench", node="bench"))
                await dialogue.start(ctx)
                for text in TURN_SCRIPT:
                    t0 = time.perf_counter()
                    reply = await dialogue.turn(ctx, CallerTurn(text=text))
                    samples.append((time.perf_counter() - t0) * 1000)
                    assert not reply.fallback
        finally:
            await factory.aclose()
    return samples[:turns]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--count", type=int, default=900)
    parser.add_argument("--turns", type=int, default=0, help="also time N whole turns through a real Rasa")
    args = parser.parse_args()
    cities = load_cities()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_catalog(Path(tmp) / "tramites-synthetic.yml", count=args.count)
        t0 = time.perf_counter()
        synthetic = load_tramites(path)
        load_s = time.perf_counter() - t0
        catalogs = {"real": Resources(cities, load_tramites(), None),
                    f"synthetic {len(synthetic)}": Resources(cities, synthetic, None)}
        print(f"synthetic catalog of {len(synthetic)} trámites loaded in {load_s * 1000:.0f} ms")
        worst = 0.0
        for label, res in catalogs.items():
            print(f"{label} catalog ({len(res.tramites)} trámites), {args.rounds} rounds per action:")
            for name, fn in cases_for(res).items():
                samples = await measure(fn, args.rounds)
                worst = max(worst, p95(samples))
                print(line(name, samples))
        for label, source in (("real", None), (f"synthetic {len(synthetic)}", path)):
            print(f"{label} catalog through `veratur actions` over HTTP (webhook round trip):")
            for name, samples in http_samples(source, args.rounds, Path(tmp)).items():
                worst = max(worst, p95(samples))
                print(line(name, samples))
        folio_ms, verify_ms = await status_samples(catalogs["real"], args.rounds, Path(tmp))
        print("status form (case bridge on SQLite):")
        print(line("folio check (Damm, no database)", folio_ms))
        print(line("verification + status_for (PIN hash)", verify_ms))
    print(f"worst action p95: {worst:.2f} ms (goal < 20 ms)")
    if args.turns:
        print(f"whole caller turns through rasa run + actions (ivr.dialogue.rasa), {args.turns} turns:")
        print(line("turn (webhook + /model/parse)", await turn_samples(args.turns)))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
