"""Server-side end of staff sessions. Session cookies are signed, not stored, so a copy of one used to stay valid
after logout for up to 8 hours (issue 13). Each staff user has a "not before" time: a session signed in earlier
is refused. Logging out sets it (every session of that user ends: the cookie may have been copied anywhere), and
so can an administrator (`end_all`). Kept in Redis so every web process sees it, for the session lifetime (older
sessions expire anyway); a process also remembers what it set itself, which covers a Redis outage on that
process, and logs the outage."""
from __future__ import annotations

import logging
import time

import redis

from foundation.logs import kv

log = logging.getLogger("case_bridge.web.revocations")

REDIS_TIMEOUT_S = 0.25


class Revocations:
    def __init__(self, redis_url: str | None, prefix: str, lifetime_s: int) -> None:
        self._redis = (redis.Redis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S,
                                            socket_connect_timeout=REDIS_TIMEOUT_S) if redis_url else None)
        self._prefix = prefix
        self._lifetime_s = lifetime_s
        self._local: dict[int, float] = {}

    def _key(self, staff_id: int) -> str:
        return f"{self._prefix}:staff-not-before:{staff_id}"

    def end_all(self, staff_id: int) -> None:
        """Every session of `staff_id` signed in until now is refused from now on."""
        now = time.time()
        self._local[staff_id] = now
        if self._redis is not None:
            try:
                self._redis.set(self._key(staff_id), repr(now), ex=self._lifetime_s)
            except redis.RedisError as exc:
                log.warning(kv(event="session_revocation_redis_down", op="set", error=type(exc).__name__))

    def not_before(self, staff_id: int) -> float:
        local = self._local.get(staff_id, 0.0)
        if self._redis is None:
            return local
        try:
            raw = self._redis.get(self._key(staff_id))
        except redis.RedisError as exc:
            log.warning(kv(event="session_revocation_redis_down", op="get", error=type(exc).__name__))
            return local
        try:
            shared = float(raw) if raw is not None else 0.0
        except ValueError:
            shared = 0.0
        return max(local, shared)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
