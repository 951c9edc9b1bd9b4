"""Guessing one case's PIN from many addresses or calls (issue 13): the per-address slowdown does nothing against a
botnet or a caller who changes the number it claims, so what bounds the guesses is per case and per call. Each new
lock of a folio within a day lasts twice as long as the one before (15 min, 30 min, 1 h, ...: ~20 guesses a day
instead of 288); one phone call gets 5 failed verifications over all the folios it tries; a caller number already
being slowed gets one per call. Real case service on SQLite and PostgreSQL, counters in Redis and in the database
fallback (no Redis)."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis

from case_bridge import folio as folios
from case_bridge.models import VerificationAttempt, utcnow
from case_bridge.ratelimit import (
    CALL_MAX_FAILURES,
    CLIENT_MAX_FAILURES,
    FOLIO_MAX_FAILURES,
    LOCKOUT_S,
    MAX_LOCKOUT_S,
    lockout_s,
)
from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo, StatusResult
from testkit.db import REDIS_URL, case_service


@pytest.fixture(params=["redis", "database"])
def counters(request: pytest.FixtureRequest, db_url: str) -> Iterator[CaseService]:
    """A service whose lockout counters live in Redis, or (no Redis configured) in the database fallback."""
    service = case_service(db_url, "guess", redis_url=REDIS_URL if request.param == "redis" else None)
    yield service
    service.close()


def let_lock_run_out(svc: CaseService, key: str) -> None:
    """What LOCKOUT_S of waiting does to the lock of `key` (its lock history stays, as it does in time)."""
    limiter = svc.limiter
    if limiter.redis_url:
        with redis.Redis.from_url(limiter.redis_url) as r:
            r.delete(f"{limiter.prefix}:lock:{key}")
    with svc.uow.session() as s, s.begin():
        row = s.get(VerificationAttempt, key)
        if row is not None and row.locked_until is not None:
            row.locked_until = utcnow() - timedelta(seconds=1)


def new_case(svc: CaseService) -> tuple[str, str]:
    opened = svc.open_case("acta_nacimiento", "phone", citizen=CitizenInfo("Rosa Díaz", curp="DIAR900101MVZZSS05"))
    return opened.case.folio, opened.pin


def wrong(pin: str) -> str:
    return "0000" if pin != "0000" else "1111"


def guess_from_many_addresses(svc: CaseService, folio: str, pin: str) -> StatusResult:
    result = None
    for _ in range(FOLIO_MAX_FAILURES):
        result = svc.status_for(folio, pin=wrong(pin), client=f"ip:203.0.113.{uuid.uuid4().int % 250}",
                                timeline=False)
    assert result is not None
    return result


def test_lock_lengths_double_and_are_bounded() -> None:
    lengths = [lockout_s("folio:12345678", n) for n in range(30)]
    assert lengths[:3] == [LOCKOUT_S, 2 * LOCKOUT_S, 4 * LOCKOUT_S]
    assert lengths == sorted(lengths) and lengths[-1] == MAX_LOCKOUT_S
    assert lockout_s("call:abc", 5) == LOCKOUT_S


def test_each_new_lock_of_a_folio_lasts_longer_whoever_guesses(counters: CaseService) -> None:
    folio, pin = new_case(counters)
    seen = []
    for _ in range(3):
        result = guess_from_many_addresses(counters, folio, pin)
        assert result.reason == "locked"
        seen.append(result.retry_after_s)
        refused = counters.status_for(folio, pin=pin, client="ip:198.51.100.7", timeline=False)
        assert refused.reason == "locked" and refused.case is None         # even the right PIN, while locked
        let_lock_run_out(counters, f"folio:{folio}")
    print(f"\nfolio lock lengths after 3, 6, 9 guesses from 9 addresses: {seen} s (was {[LOCKOUT_S] * 3})")
    assert seen[0] == LOCKOUT_S
    assert seen[1] >= 2 * LOCKOUT_S - 2 and seen[2] >= 4 * LOCKOUT_S - 2
    # the citizen gets in once the lock is over, and that does not forget the history
    assert counters.status_for(folio, pin=pin, client="ip:198.51.100.7", timeline=False).reason == "ok"
    assert guess_from_many_addresses(counters, folio, pin).retry_after_s >= 8 * LOCKOUT_S - 2
    # staff, having checked the citizen's identity, lift the lock and its history
    counters.reset_verification_lock(folio)
    assert counters.status_for(folio, pin=pin, timeline=False).reason == "ok"
    assert guess_from_many_addresses(counters, folio, pin).retry_after_s == LOCKOUT_S


def test_one_call_gets_a_few_failures_over_all_the_folios_it_tries(counters: CaseService) -> None:
    folio, pin = new_case(counters)
    call = f"guess-{uuid.uuid4().hex}@test"
    results = []
    for _ in range(CALL_MAX_FAILURES):     # a different unknown folio each time, each from another claimed number
        payload = str(uuid.uuid4().int)[:7]
        results.append(counters.status_for(payload + folios.damm_digit(payload), pin="1234",
                                           client=f"phone:228{uuid.uuid4().int % 10**7:07d}", call=call,
                                           timeline=False).reason)
    assert results == ["denied"] * (CALL_MAX_FAILURES - 1) + ["locked"]
    in_call = counters.status_for(folio, pin=pin, client="phone:2281112233", call=call, timeline=False)
    assert in_call.reason == "locked" and in_call.case is None
    other_call = counters.status_for(folio, pin=pin, client="phone:2281112233", call=f"other-{call}", timeline=False)
    assert other_call.reason == "ok"


def test_a_caller_number_being_slowed_gets_one_failure_per_call(counters: CaseService) -> None:
    number = f"phone:228{uuid.uuid4().int % 10**7:07d}"
    for _ in range(CLIENT_MAX_FAILURES):
        payload = str(uuid.uuid4().int)[:7]
        counters.status_for(payload + folios.damm_digit(payload), pin="1234", client=number,
                            call=f"walk-{uuid.uuid4().hex}", timeline=False)
    folio, pin = new_case(counters)
    call = f"slowed-{uuid.uuid4().hex}"
    first = counters.status_for(folio, pin=wrong(pin), client=number, call=call, timeline=False)
    assert first.reason == "locked" and first.throttle_s > 0
    # that call is done verifying; the folio itself is not locked by it (one failure of three)
    assert counters.status_for(folio, pin=pin, client=number, call=call, timeline=False).reason == "locked"
    assert counters.status_for(folio, pin=pin, client="ip:192.0.2.9", timeline=False).reason == "ok"
