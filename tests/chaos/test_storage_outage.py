"""Storage outages during calls (issue 13): PostgreSQL cut (every connection reset, a stopped server) or blackholed
(connections open, nothing answered: a hung server or a partition) for a few seconds while a caller keeps taking
keypad turns, then back; Redis cut during a call and during folio + PIN lookups.

Real components: a real `veratur ivr --app engine` (keypad-only recognizer, espeak-ng prompts, the YAML menu with
short texts so turns are quick, the production recorder with its outbox) on a fresh PostgreSQL database and the
shared Redis, both reached through `testkit.tcpproxy.ChaosProxy`; the pjsua2 test caller (`veratur call`), which
times each turn from its last RFC 4733 digit to the first voiced frame of the reply. The lookups run the case
bridge's own code (the phone's `status_for` and the web tier's `StatusLookup`) against real PostgreSQL and Redis.

What a caller and the case need, asserted: the call is not dropped, every turn is answered with at most
DEAD_AIR_GOAL_S more than the turn before the outage took, and once the database is back every transcript turn
and the call record of that call are committed (turns lost = 0); a case committed before is still there. The
figures (dead air, turns written after the restore, time to recover) are printed."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml

from case_bridge.ratelimit import FOLIO_MAX_FAILURES, REDIS_RETRY_S
from case_bridge.status_lookup import StatusLookup
from testkit.db import REDIS_URL, TEST_TRAMITES, case_service, migrated_postgres
from testkit.ports import free_tcp_port
from testkit.tcpproxy import ChaosProxy
from testkit.worker import Worker, start_caller

pytestmark = [pytest.mark.sip, pytest.mark.timeout(180)]

DEAD_AIR_GOAL_S = 1.0          # the chaos goal (tests/chaos/test_in_dialog.py, tests/engine/test_rasa_stall.py)
OUTAGE_TURNS = 2               # keypad turns the caller takes while the database is away
KEYS = ["1", "2", "1", "2"]                      # turn 1 before, 2-3 during the outage, 4 after the restore
# The menu's shape (dialogs/menu.yml) with one-word texts: a turn takes ~2 s instead of ~10 s of speech.
SHORT_MENU = {
    "greeting": "Hola.", "menu": "Marque uno o dos.", "menu_short": "Marque uno o dos.",
    "anything_else": "¿Algo más?", "no_match": "No le entendí.", "goodbye": "Adiós.", "goodbye_words": ["adiós"],
    "options": [
        {"key": "1", "name": "tourism", "words": ["turismo"], "say": "Turismo."},
        {"key": "2", "name": "tramite_info", "words": ["trámites"], "say": "Trámites."},
        {"key": "3", "name": "tramite_status", "words": ["estado"], "say": "Marque su folio.", "collect_digits": 8},
        {"key": "0", "name": "agent", "words": ["agente"], "say": "Con gusto.", "transfer": True},
    ],
}


@dataclass
class Stack:
    worker: Worker
    pg: ChaosProxy
    redis: ChaosProxy
    db_url: str                 # direct, not through the relay: what the test reads the truth with
    tmp: Path

    def outbox_pending(self) -> float:
        return self.worker.metrics().get("veratur_outbox_pending", 0.0)

    def answered_turns(self) -> float:
        return self.worker.metrics().get("veratur_turn_latency_seconds_count", 0.0)


@pytest.fixture(scope="module")
def db_url() -> Iterator[str]:
    database = migrated_postgres("chaos")
    yield next(database)
    database.close()


@pytest.fixture(scope="module")
def redis() -> Iterator[ChaosProxy]:
    with ChaosProxy(6379) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, db_url: str, redis: ChaosProxy) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("storage-outage")
    menu = tmp / "menu.yml"
    menu.write_text(yaml.safe_dump(SHORT_MENU, allow_unicode=True), encoding="utf-8")
    with ChaosProxy(5432) as pg:
        worker = Worker(tmp, app="engine", env={
            "VERATUR__DATABASE__URL": pg.via(db_url), "VERATUR__REDIS__URL": redis.via(REDIS_URL),
            # keypad-only: no speech model to load (these turns are RFC 4733 digits)
            "VERATUR__ASR__MODEL": str(tmp / "no-model"), "VERATUR__ASR__WHISPER__MODEL": str(tmp / "no-model"),
            "VERATUR__ASR__ON_MISSING_MODEL": "keypad_only",
            # no Rasa: nothing listens there, so every turn is the menu's (and no other session's Rasa is used)
            "VERATUR__DIALOGUE__RASA_URL": f"http://127.0.0.1:{free_tcp_port()}",
            "VERATUR__DIALOGUE__MENU_PATH": str(menu),
        }).start()
        try:
            yield Stack(worker, pg, redis, db_url, tmp)
        finally:
            code = worker.stop()
    assert code == 0, worker.log()[-3000:]
    assert "Traceback" not in worker.log()          # no outage crashed anything in the worker, logged or not


def poll(what: str, predicate, timeout_s: float, every_s: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every_s)


def _pg(db_url: str) -> psycopg.Connection:
    return psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def last_call_id(db_url: str) -> int:
    with _pg(db_url) as conn:
        row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM call_records").fetchone()
    return int(row[0]) if row else 0


def latest_call(db_url: str, after_id: int) -> tuple[str, list[tuple[str, str]], object]:
    """The newest call record committed after record `after_id`: its Call-ID, its committed turns (speaker, text)
    and its end; ("", [], None) while there is none."""
    with _pg(db_url) as conn:
        row = conn.execute("SELECT id, sip_call_id, ended_at FROM call_records WHERE id > %s ORDER BY id DESC "
                           "LIMIT 1", (after_id,)).fetchone()
        if row is None:
            return "", [], None
        turns = conn.execute("SELECT speaker, text FROM transcript_turns WHERE call_id = %s ORDER BY at, id",
                             (row[0],)).fetchall()
    return row[1], [(s, t) for s, t in turns], row[2]


def caller_keys(turns: list[tuple[str, str]]) -> list[str]:
    return [t.removeprefix("[DTMF ").removesuffix("]") for s, t in turns if s == "caller"]


def outage_call(stack: Stack, outage: str, outage_s_min: float = 3.0) -> dict[str, object]:
    """One call: a turn, the database `outage` ('cut' or 'blackhole') for OUTAGE_TURNS turns (at least
    `outage_s_min`), the database back, one more turn (with Redis cut), hang up. Returns the figures."""
    run = stack.tmp / f"{outage}-{time.monotonic_ns()}"
    run.mkdir()
    go_outage, go_back = run / "outage", run / "back"
    case = case_service(stack.db_url, "chaos", redis_url=None, tramites=TEST_TRAMITES)
    try:
        opened = case.open_case("licencia_conducir", "web")             # committed before the outage
        before_turns, before_call = stack.answered_turns(), last_call_id(stack.db_url)
        steps = ["--dtmf", KEYS[0], "--until", str(go_outage)]
        steps += [a for key in KEYS[1:1 + OUTAGE_TURNS] for a in ("--dtmf", key)]
        steps += ["--until", str(go_back), "--dtmf", KEYS[-1]]
        proc = start_caller(stack.worker.uri, *steps, "--wait", "0.5", "--reply-timeout", "20")
        try:
            # the first turn (caller and portal) is committed: the call record exists, the outage starts now
            poll("turn 1 committed", lambda: len(latest_call(stack.db_url, before_call)[1]) >= 3, 30)
            getattr(stack.pg, outage)()
            out_at = time.monotonic()
            go_outage.touch()
            poll(f"{OUTAGE_TURNS} turns answered during the outage",
                 lambda: stack.answered_turns() >= before_turns + 1 + OUTAGE_TURNS, 60, 0.1)
            time.sleep(max(0.0, outage_s_min - (time.monotonic() - out_at)))
            in_outbox = stack.outbox_pending()
            committed_during = len(latest_call(stack.db_url, before_call)[1])
            stack.pg.restore()
            back_at = time.monotonic()
            outage_s = back_at - out_at
            stack.redis.cut()                   # the last turn with Redis away (the keypad path must not care)
            go_back.touch()
            poll("outbox drained", lambda: stack.outbox_pending() == 0, 30)
            recover_s = time.monotonic() - back_at
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            stack.redis.restore()
        assert proc.returncode == 0, err[-3000:]
        [result] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert result["status"] == 200, result
        latencies = [t["latency_ms"] for t in result["turns"] if t["kind"] == "dtmf"]
        assert len(latencies) == len(KEYS) and None not in latencies, result["turns"]   # every turn answered
        assert result["hangup_reason"] in ("", "local", "caller"), result["hangup_reason"]   # we hung up, not it

        call_id = str(result["call_id"])

        def closed() -> tuple[str, list[tuple[str, str]], object] | None:
            found = latest_call(stack.db_url, before_call)
            return found if found[0] == call_id and found[2] is not None else None

        _, turns, _ = poll("the call record closed", closed, 30)
        still = case.find_case(opened.case.folio)
    finally:
        case.close()
    figures = {"outage": outage, "outage_s": round(outage_s, 2), "baseline_turn_ms": round(latencies[0]),
               "outage_turns_ms": [round(x) for x in latencies[1:1 + OUTAGE_TURNS]],
               "dead_air_extra_ms": round(max(latencies[1:]) - latencies[0]),
               "in_outbox_at_restore": int(in_outbox), "committed_during_outage": committed_during,
               "turns_committed": len(turns), "recover_s": round(recover_s, 2)}
    print(f"\nPostgreSQL {outage} during a call: {figures}")
    # turns lost = 0: every key of the call, once and in order, each followed by the portal's reply
    assert caller_keys(turns) == KEYS, turns
    for i, (speaker, _) in enumerate(turns):
        if speaker == "caller":
            assert i + 1 < len(turns) and turns[i + 1][0] == "portal", turns
    assert still is not None and still.version == opened.case.version
    assert figures["dead_air_extra_ms"] < DEAD_AIR_GOAL_S * 1000, figures
    return figures


def test_postgres_cut_during_a_call(stack: Stack) -> None:
    outage_call(stack, "cut")


def test_postgres_blackhole_during_a_call(stack: Stack) -> None:
    outage_call(stack, "blackhole")


# ---- Redis: the lockout counters of folio + PIN verification ------------------------------------------------------
def guesses_until_locked(lookup, limit: int = 10) -> tuple[int, list[int]]:  # type: ignore[no-untyped-def]
    """Wrong PINs tried one after another until the answer is 'locked': how many were tried (the one that locks
    included), and how long each lookup took (ms). Any exception fails the test (the caller's turn must get an
    answer)."""
    took: list[int] = []
    for tried in range(1, limit + 1):
        t0 = time.monotonic()
        result = lookup("0000")
        took.append(round((time.monotonic() - t0) * 1000))
        if result.reason == "locked":
            return tried, took
        assert result.reason == "denied", result
    raise AssertionError(f"{limit} wrong PINs and still not locked: unlimited guessing")


@pytest.mark.parametrize("outage", ["cut", "blackhole"])
def test_redis_outage_during_status_lookups_fails_safe(db_url: str, redis: ChaosProxy, outage: str) -> None:
    """Folio + PIN lookups with Redis cut or blackholed: the phone's path (`status_for` with the caller number and
    the call, as the action server asks) and the web tier's (`StatusLookup` on the event loop). Designed fallback
    (case_bridge.ratelimit): the counters live in the database meanwhile, so a folio still locks after
    FOLIO_MAX_FAILURES wrong PINs and the right PIN is then refused too; no lookup raises. Counts of the outage
    are not merged back into Redis: after it a folio gets at most FOLIO_MAX_FAILURES more guesses, never more."""
    svc = case_service(db_url, "chaos-redis", redis_url=redis.via(REDIS_URL))
    try:
        phone, web = (svc.open_case("licencia_conducir", "phone") for _ in range(2))
        call_id = f"redis-{outage}-{time.monotonic_ns()}@test"

        def by_phone(pin: str, folio: str = phone.case.folio):  # type: ignore[no-untyped-def]
            return svc.status_for(folio, pin=pin, client="+522281112233", call=call_id, timeline=False)

        assert by_phone(phone.pin).reason == "ok" and svc.limiter.last_backend == "redis"
        getattr(redis, outage)()
        try:
            denied, took_phone = guesses_until_locked(by_phone)
            # the first failure paused Redis (REDIS_RETRY_S): the next commands went to the database directly
            assert svc.limiter.last_backend == "database" and not svc.limiter.redis_available
            right_pin_while_locked = by_phone(phone.pin).reason
            denied_web, took_web = asyncio.run(_web_guesses(svc, web))
        finally:
            redis.restore()
        assert (denied, right_pin_while_locked, denied_web) == (FOLIO_MAX_FAILURES, "locked", FOLIO_MAX_FAILURES)
        # after: Redis again, which never saw the outage's failures (the designed, bounded give-back)
        poll("Redis asked again", lambda: svc.limiter.redis_available, REDIS_RETRY_S + 1)
        after_folio = svc.open_case("licencia_conducir", "phone")
        assert by_phone(after_folio.pin, after_folio.case.folio).reason == "ok"
        assert svc.limiter.last_backend == "redis"
        denied_after, _ = guesses_until_locked(by_phone)
        assert denied_after <= FOLIO_MAX_FAILURES
        print(f"\nRedis {outage}: wrong PINs until the lock {denied} (phone) / {denied_web} (web), "
              f"right PIN then: {right_pin_while_locked}; each lookup took {took_phone} ms (phone), "
              f"{took_web} ms (web); after Redis is back {denied_after} more until the lock")
    finally:
        svc.close()


async def _web_guesses(svc, opened) -> tuple[int, list[int]]:  # type: ignore[no-untyped-def]
    lookup = StatusLookup.for_service(svc)
    assert lookup is not None
    try:
        took: list[int] = []
        for tried in range(1, 11):
            t0 = time.monotonic()
            result = await lookup.status(opened.case.folio, pin="0000", client="203.0.113.7")
            took.append(round((time.monotonic() - t0) * 1000))
            if result.reason == "locked":
                return tried, took
            assert result.reason == "denied", result
        raise AssertionError("10 wrong PINs on the web and still not locked")
    finally:
        await lookup.close()
