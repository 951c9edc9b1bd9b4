"""The citizen status lookup (folio + PIN) on the event loop: the web tier's hot path on PostgreSQL.

`Cases.status_for(..., timeline=False)` does the same in a worker thread. Run from aiohttp, that costs a thread
hop per request, and the loop thread then waits for the GIL while worker threads run SQLAlchemy code (the p99 of
100 ms measured in issue 19). Here, on the loop itself: one Redis EVALSHA for both lockout counters (the script
`ratelimit.CHECK_SCRIPT`, sent by the lean client `resp.LeanRedis`), one statement on a small pool of autocommit psycopg async connections (prepared by
psycopg after a few uses), the PIN through `hashing.VERIFIED_PINS` (as the synchronous path does).

Only the common case is re-implemented here: an unlocked key and a correct PIN. Everything that changes state,
and every rare path, is the synchronous service's code run in a thread, so the guarantees are the same code's:
a failed verification (`Cases.count_denial`: counting, locking), clearing an earlier failure count
(`Cases.clear_failures`), and Redis being unreachable (the whole lookup by `Cases.status_for`, whose counters then
live in the database).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from redis.exceptions import RedisError
from sqlalchemy.dialects import postgresql

from case_bridge import folio as folios
from case_bridge.cases import check_pin, client_throttle, locked_result, verification_keys
from case_bridge.db import PG_CONNECT_TIMEOUT_S, PG_STATEMENT_TIMEOUT_MS
from case_bridge.errors import DatabaseUnavailable, InvalidInput
from case_bridge.folio import MalformedFolio
from case_bridge.ratelimit import CHECK_SCRIPT, REDIS_TIMEOUT_S
from case_bridge.resp import LeanRedis
from case_bridge.service import CaseService
from case_bridge.snapshots import STATUS_BY_FOLIO, status_view
from case_bridge.views import StatusResult
from foundation.logs import kv

log = logging.getLogger("case_bridge.status_lookup")

POOL_SIZE = 4
"""Connections per web process for lookups. One query takes ~0.3 ms of database time, so 4 in flight serve several
thousand lookups/s; more would only queue inside PostgreSQL (see docs/web-tier.md for the whole connection count)."""

_COMPILED = STATUS_BY_FOLIO.compile(dialect=postgresql.dialect(paramstyle="pyformat"))  # type: ignore[no-untyped-call]
_SQL = str(_COMPILED)
_PARAMS = dict(_COMPILED.params)     # the subquery's LIMIT 1 is a bound parameter too
_TIMES = ("appointment_at", "created_at", "updated_at", "at")
_CHECK_SHA = hashlib.sha1(CHECK_SCRIPT.encode()).hexdigest()


class _Pool:
    """A few autocommit async connections, opened on demand. A broken one is dropped (and the read retried once
    on a new one by the caller), so a database restart costs no errors and no per-checkout ping."""

    def __init__(self, conninfo: str, size: int) -> None:
        self._conninfo = conninfo
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(size)

    async def fetchone(self, sql: str, params: dict[str, Any]) -> Any:
        """One row of `sql` on an idle connection (a plain method: an async context manager per lookup cost
        two more generator frames and their exception plumbing on the hot path)."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_S, row_factory=namedtuple_row,
                options=f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS} -c timezone=UTC")
            try:
                row = await (await conn.execute(sql, params)).fetchone()
            except BaseException:
                await conn.close()
                raise
            if not conn.closed:
                self._idle.append(conn)
            return row

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().close()


class StatusLookup:
    """One per web process (per event loop); `for_service` gives None where it doesn't apply (SQLite, no Redis)."""

    def __init__(self, service: CaseService, conninfo: str, redis_url: str,
                 check_keys: Callable[[list[str]], list[str]]) -> None:
        self._service = service
        self._pool = _Pool(conninfo, POOL_SIZE)
        self._redis = LeanRedis(redis_url, REDIS_TIMEOUT_S)
        self._check_keys = check_keys

    @classmethod
    def for_service(cls, service: CaseService) -> StatusLookup | None:
        limiter = service.limiter
        if service.engine.dialect.name != "postgresql" or not limiter.redis_url:
            return None
        if not LeanRedis.supports(limiter.redis_url):    # rediss:// (TLS): the thread path's redis-py
            return None
        conninfo = service.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return cls(service, conninfo, limiter.redis_url, limiter.check_keys)

    async def close(self) -> None:
        await self._pool.close()
        await self._redis.close()

    async def status(self, folio_text: str, *, pin: str, client: str | None) -> StatusResult:
        """What `service.status_for(folio_text, pin=pin, client=client, timeline=False)` answers."""
        try:
            folio = folios.normalize(folio_text)
        except MalformedFolio as exc:
            return StatusResult("malformed", message=str(exc))
        if not pin:
            raise InvalidInput("se necesita el PIN o los últimos 4 caracteres de la CURP")
        keys = verification_keys(folio, client)
        if not self._service.limiter.redis_available:      # in its pause after a failure: not waited for again
            return await asyncio.to_thread(self._service.status_for, folio, pin=pin, client=client, timeline=False)
        # The lock check goes out first and the row is read while Redis answers; the row is looked at only once
        # the check says the keys are not locked.
        check = self._redis.evalsha(CHECK_SCRIPT, _CHECK_SHA, self._check_keys(keys))
        try:
            row = await self._read(folio)
        except BaseException:
            check.close()
            raise
        try:
            locks = self._service.limiter.parse_check(await check)
        except (RedisError, OSError) as exc:
            log.warning(kv(event="status_lookup_redis_down", error=type(exc).__name__))
            self._service.limiter.mark_unavailable(exc)
            return await asyncio.to_thread(self._service.status_for, folio, pin=pin, client=client, timeline=False)
        if any(lock.locked for lock in locks):
            return locked_result(locks)
        if not check_pin(pin, row.pin_hash if row is not None else None):
            return await asyncio.to_thread(self._service.count_denial, folio, keys)
        if any(lock.failures for lock in locks):
            await asyncio.to_thread(self._service.clear_failures, keys, locks)
        return StatusResult("ok", case=status_view(_utc(row)), throttle_s=client_throttle(keys, locks))

    async def _read(self, folio: str) -> Any:
        for attempt in (1, 2):
            try:
                return await self._pool.fetchone(_SQL, {**_PARAMS, "folio": folio})
            except psycopg.OperationalError as exc:
                # a connection the server closed (restart, idle timeout): once more on a fresh one
                if attempt == 2:
                    raise DatabaseUnavailable(str(exc).splitlines()[0] if str(exc) else "database") from exc
        raise AssertionError("unreachable")


def _utc(row: Any) -> Any:
    """The row with the UTC datetimes the ORM's UtcDateTime would give (psycopg already returns JSON decoded).
    One `_replace` of the four times: a wrapper whose `__getattr__` converted on each of status_view's 28 reads
    cost ~19 us a lookup (profile in docs/web-tier.md)."""
    return row._replace(**{name: value.astimezone(UTC) for name in _TIMES
                           if isinstance(value := getattr(row, name), datetime)})
