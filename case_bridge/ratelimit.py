"""Counting failed folio+PIN verifications, with lockout: Redis first, the database when Redis is down.
(The same counters also cap how many cases one client opens through the open API: keys `open:<client>`.)

Two counters are kept for every attempt: one per folio (3 failures lock the folio for `LOCKOUT_S`, whoever tries)
and one per client (a caller number or an IP address; from `CLIENT_MAX_FAILURES` per window on, its lookups are
slowed by `client_delay_s`, never refused, so someone walking through many folios is slowed without locking out
the citizens who share the address). Redis holds them so every web node and IVR worker shares the same count. If Redis can't be
reached, the same counters live in the `verification_attempts` table (the fallback is logged); counts taken during
a Redis outage are not merged back, which at worst grants a few extra attempts once — never unlimited ones.

Across addresses and calls, what bounds guessing one case's 4-digit PIN is the folio lock: each new lock of the
same folio less than `LOCK_MEMORY_S` after the previous one lasts twice as long as the one before (15 min, 30 min, 1 h ... at most
`MAX_LOCKOUT_S`), so a botnet gets about 20 guesses a day instead of 288 (issue 13). A verified lookup does not
forget the earlier locks (the attacker must not be able to rely on the citizen resetting them); staff's reset does.
On the phone, a third counter is kept per call (`call:<call id>`): `CALL_MAX_FAILURES` failed verifications end
verifying in that call, whatever folios were tried and whatever caller number the call claims.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from case_bridge.models import VerificationAttempt, utcnow
from foundation.logs import kv

log = logging.getLogger("case_bridge.ratelimit")

FOLIO_MAX_FAILURES = 3
CLIENT_MAX_FAILURES = 10
CALL_MAX_FAILURES = 5             # failed verifications in one phone call, over all folios tried in it
OPEN_MAX_PER_WINDOW = 60          # cases one client may open through the unauthenticated API per window
# Staff sign-in (case_bridge.web.staff): `login:<user>@<address>` locks after CLIENT_MAX_FAILURES (only that pair:
# an outsider cannot lock a colleague elsewhere out), `login-from:<address>` after this many across usernames
# (password spraying from one address).
LOGIN_ADDRESS_MAX_FAILURES = 30
# A client (an address, a caller number) is never locked out of verifying: behind a carrier NAT or the web's proxy
# that is everyone. From CLIENT_MAX_FAILURES failures in the window on, each of its lookups is answered after a
# growing delay (client_delay_s): 1 s, doubling every 5 failures, at most CLIENT_MAX_DELAY_S. The folio lock stays.
CLIENT_MAX_DELAY_S = 10.0
NEVER = 1 << 62


def client_delay_s(failures: int) -> float:
    """How long a lookup by a client with `failures` recent failures is held before its answer."""
    if failures < CLIENT_MAX_FAILURES:
        return 0.0
    return min(2.0 ** ((failures - CLIENT_MAX_FAILURES) / 5), CLIENT_MAX_DELAY_S)
WINDOW_S = 15 * 60
LOCKOUT_S = 15 * 60
MAX_LOCKOUT_S = 24 * 3600
LOCK_MEMORY_S = 24 * 3600        # how long a folio's earlier locks count towards the length of its next one


def lockout_s(key: str, locks_before: int) -> int:
    """How long the lock set now on `key` lasts, after `locks_before` earlier locks of it within LOCK_MEMORY_S:
    folio locks double each time (a PIN guessed across many addresses); other keys always LOCKOUT_S."""
    if not key.startswith("folio:"):
        return LOCKOUT_S
    return int(min(LOCKOUT_S * 2 ** min(locks_before, 16), MAX_LOCKOUT_S))
REDIS_TIMEOUT_S = 0.25
# After a Redis failure the counters go straight to the database for this long instead of each command waiting
# REDIS_TIMEOUT_S again: with Redis blackholed (answering nothing) a denied lookup paid the wait four times (the
# check, then the folio, client and call counters), 1.07 s of dead air on the phone; with the pause, once per pause
# at most (tests/chaos/test_storage_outage.py). Counting meanwhile is the database fallback's, as during the outage.
REDIS_RETRY_S = 2.0

# The lockout check of every status lookup, in one command: for each (lock key, failure key) pair, the lock's TTL
# and the failure count. One EVALSHA instead of a 4-command pipeline: one request to encode and one reply to parse.
CHECK_SCRIPT = """
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = redis.call('TTL', KEYS[i])
  out[#out + 1] = tonumber(redis.call('GET', KEYS[i + 1]) or '0') or 0
end
return out
"""


@dataclass(frozen=True, slots=True)
class Lock:
    locked: bool
    retry_after_s: int = 0
    failures: int = 0


class AttemptLimiter:
    """Failure counters keyed by strings like `folio:12345678` or `client:10.0.0.1`."""

    def __init__(self, redis_url: str | None, session_factory: Callable[[], Session], prefix: str = "veratur") -> None:
        self._redis = (redis.Redis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S,
                                            socket_connect_timeout=REDIS_TIMEOUT_S) if redis_url else None)
        self._check = self._redis.register_script(CHECK_SCRIPT) if self._redis is not None else None
        self._sessions = session_factory
        self._prefix = prefix
        self.redis_url = redis_url
        self.last_backend = "redis" if self._redis else "database"
        self._redis_down_until = 0.0          # monotonic; Redis is not asked before then (REDIS_RETRY_S)

    @property
    def redis_available(self) -> bool:
        """Redis is configured and not in its pause after a failure: the counters are asked there first."""
        return self._redis is not None and time.monotonic() >= self._redis_down_until

    def mark_unavailable(self, exc: Exception) -> None:
        """Redis failed (here or on another client of the same counters, the web's lean one): use the database
        for REDIS_RETRY_S."""
        self._fallback(exc)

    @property
    def prefix(self) -> str:
        """The Redis key prefix (one per node, or per test): other shared web state uses it too."""
        return self._prefix

    def check_keys(self, keys: list[str]) -> list[str]:
        """The Redis keys `CHECK_SCRIPT` reads for `keys` (also used by the async status lookup)."""
        return [f"{self._prefix}:{kind}:{key}" for key in keys for kind in ("lock", "fail")]

    @staticmethod
    def parse_check(raw: list[int]) -> list[Lock]:
        return [Lock(int(ttl) > 0, max(int(ttl), 0), int(fails)) for ttl, fails in zip(raw[::2], raw[1::2],
                                                                                          strict=True)]

    def _limit(self, key: str) -> int:
        if key.startswith("folio:"):
            return FOLIO_MAX_FAILURES
        if key.startswith("login-from:"):
            return LOGIN_ADDRESS_MAX_FAILURES
        if key.startswith("client:"):
            return NEVER                       # counted for client_delay_s, never locked
        if key.startswith("call:"):
            return CALL_MAX_FAILURES
        return OPEN_MAX_PER_WINDOW if key.startswith("open:") else CLIENT_MAX_FAILURES

    # -- queries ------------------------------------------------------------------------------------------
    def check(self, key: str) -> Lock:
        """Whether `key` is locked now (without counting anything)."""
        return self.check_many([key])[0]

    def check_many(self, keys: list[str]) -> list[Lock]:
        """`check` for several keys in one Redis round trip (the status lookup's hot path)."""
        if self._check is not None and self.redis_available:
            try:
                raw = self._check(keys=self.check_keys(keys))
                self.last_backend = "redis"
                return self.parse_check(raw)
            except redis.RedisError as exc:
                self._fallback(exc)
        return [self._db_check(key) for key in keys]

    def fail(self, key: str) -> Lock:
        """Count one failure; lock the key when it reaches its limit."""
        if self._redis is not None and self.redis_available:
            try:
                fail_key = f"{self._prefix}:fail:{key}"
                pipe = self._redis.pipeline()
                pipe.incr(fail_key)
                pipe.expire(fail_key, WINDOW_S, nx=True)
                failures = int(pipe.execute()[0])
                if failures >= self._limit(key):
                    seconds = self._redis_lock(key)
                    self._redis.delete(fail_key)
                    self.last_backend = "redis"
                    return Lock(True, seconds, failures)
                self.last_backend = "redis"
                return Lock(False, 0, failures)
            except redis.RedisError as exc:
                self._fallback(exc)
        return self._db_fail(key)

    def _redis_lock(self, key: str) -> int:
        assert self._redis is not None
        history = f"{self._prefix}:locks:{key}"
        pipe = self._redis.pipeline()
        pipe.incr(history)
        pipe.expire(history, LOCK_MEMORY_S)
        seconds = lockout_s(key, int(pipe.execute()[0]) - 1)
        self._redis.set(f"{self._prefix}:lock:{key}", 1, ex=seconds)
        return seconds

    def lock(self, key: str) -> Lock:
        """Lock `key` now, whatever its count (a call whose caller number is already being slowed)."""
        if self._redis is not None and self.redis_available:
            try:
                seconds = self._redis_lock(key)
                self._redis.delete(f"{self._prefix}:fail:{key}")
                self.last_backend = "redis"
                return Lock(True, seconds, 0)
            except redis.RedisError as exc:
                self._fallback(exc)
        return self._db_fail(key, force=True)

    def hit(self, key: str) -> Lock:
        """Count one use of a rate-limited action (same counter as `fail`)."""
        return self.fail(key)

    def succeed(self, key: str) -> None:
        """A correct PIN clears the failure count (not an active lock)."""
        if self._redis is not None and self.redis_available:
            try:
                self._redis.delete(f"{self._prefix}:fail:{key}")
                self.last_backend = "redis"
                return
            except redis.RedisError as exc:
                self._fallback(exc)
        with self._sessions() as s, s.begin():
            row = s.get(VerificationAttempt, key)
            if row is not None and not _locked(row, utcnow()):
                s.delete(row)

    def reset(self, key: str) -> None:
        """Lift a lock (staff action after checking the citizen's identity)."""
        if self._redis is not None:
            try:
                self._redis.delete(f"{self._prefix}:fail:{key}", f"{self._prefix}:lock:{key}",
                                   f"{self._prefix}:locks:{key}")
            except redis.RedisError as exc:
                self._fallback(exc)
        with self._sessions() as s, s.begin():
            for row_key in (key, f"locks:{key}"):
                row = s.get(VerificationAttempt, row_key)
                if row is not None:
                    s.delete(row)

    # -- database fallback --------------------------------------------------------------------------------
    def _fallback(self, exc: Exception) -> None:
        if self.last_backend != "database":
            log.warning(kv(event="ratelimit_fallback", backend="database", error=type(exc).__name__))
        self.last_backend = "database"
        self._redis_down_until = time.monotonic() + REDIS_RETRY_S

    def _db_check(self, key: str) -> Lock:
        now = utcnow()
        with self._sessions() as s:
            row = s.get(VerificationAttempt, key)
            if row is None:
                return Lock(False)
            if _locked(row, now):
                assert row.locked_until is not None
                return Lock(True, int((row.locked_until - now).total_seconds()) + 1, row.failures)
            return Lock(False, 0, row.failures)

    def _db_fail(self, key: str, *, force: bool = False) -> Lock:
        now = utcnow()
        with self._sessions() as s, s.begin():
            row = _row_for_update(s, key, now, WINDOW_S)
            row.failures += 1
            if force or row.failures >= self._limit(key):
                # the lock history: a row `locks:<key>` whose count is the number of locks within LOCK_MEMORY_S
                history = _row_for_update(s, f"locks:{key}", now, LOCK_MEMORY_S)
                seconds = lockout_s(key, history.failures)
                history.failures, history.window_started_at = history.failures + 1, now   # memory from the last lock
                row.locked_until = now + timedelta(seconds=seconds)
                return Lock(True, seconds, row.failures)
            return Lock(False, 0, row.failures)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


def _row_for_update(s: Session, key: str, now: datetime, window_s: int) -> VerificationAttempt:
    """The counter row of `key`, locked for this transaction; a new window once the last one ended."""
    row = s.execute(select(VerificationAttempt).where(VerificationAttempt.key == key)
                    .with_for_update()).scalar_one_or_none()
    if row is None:
        row = VerificationAttempt(key=key, failures=0, window_started_at=now)
        s.add(row)
        s.flush()
    elif not _locked(row, now) and (row.locked_until is not None
                                    or now - row.window_started_at > timedelta(seconds=window_s)):
        row.failures, row.window_started_at, row.locked_until = 0, now, None
    return row


def _locked(row: VerificationAttempt, now: datetime) -> bool:
    return row.locked_until is not None and row.locked_until > now
