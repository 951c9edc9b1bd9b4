"""The one shared unit of work under every topic of the case record: sessions, transactions, row loaders.

Every topic module (cases, calls, escalation queue, staff, catalog, the agent desk) reaches the tables only through
these public methods, so connection failures, optimistic-lock retries and row locks are handled in one place.
"""
from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.exc import StaleDataError

from case_bridge import folio as folios
from case_bridge.db import READ_ONLY_OPTION, make_sessionmaker
from case_bridge.errors import CallNotFound, CaseNotFound, DatabaseUnavailable, StaleCase
from case_bridge.models import CallRecord, Case, NodeSecret
from case_bridge.ratelimit import AttemptLimiter
from case_bridge.snapshots import case_view
from case_bridge.views import CaseView
from foundation.logs import kv

log = logging.getLogger("case_bridge.unit_of_work")

T = TypeVar("T")
STALE_RETRIES = 8
MAX_TEXT = 4000


class UnitOfWork:
    """Sessions and transactions over one engine; thread-safe, one per process (inside `CaseService`)."""

    def __init__(self, engine: Engine, *, redis_url: str | None = None, ratelimit_prefix: str = "veratur") -> None:
        self.engine = engine
        self._sessions = make_sessionmaker(engine)
        # same pool; on PostgreSQL reads skip the BEGIN/ROLLBACK round trips (SQLite keeps its BEGIN IMMEDIATE)
        # SQLite reads take a deferred BEGIN (case_bridge.db): in WAL mode they block no writer
        self._read_engine = (engine.execution_options(isolation_level="AUTOCOMMIT")
                             if engine.dialect.name == "postgresql" else
                             engine.execution_options(**{READ_ONLY_OPTION: True}))
        self.limiter = AttemptLimiter(redis_url, self._sessions, prefix=ratelimit_prefix)
        self._pin_key: bytes | None = None

    def close(self) -> None:
        self.limiter.close()
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose connection-level failures surface as DatabaseUnavailable."""
        try:
            with self._sessions() as session:
                yield session
        except (OperationalError, InterfaceError) as exc:
            raise DatabaseUnavailable(str(exc.orig or exc).splitlines()[0]) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise DatabaseUnavailable(str(exc.orig or exc).splitlines()[0]) from exc
            raise

    @contextmanager
    def reader(self) -> Iterator[Connection]:
        """A read-only Core connection (autocommit on PostgreSQL), with the same error mapping as `session`."""
        try:
            with self._read_engine.connect() as conn:
                yield conn
        except (OperationalError, InterfaceError) as exc:
            raise DatabaseUnavailable(str(exc.orig or exc).splitlines()[0]) from exc

    def write(self, work: Callable[[Session], T]) -> T:
        """Run `work` in a transaction; on an optimistic-lock conflict re-read and run it again."""
        for attempt in range(STALE_RETRIES):
            try:
                with self.session() as s, s.begin():
                    return work(s)
            except StaleDataError:
                log.info(kv(event="case_write_conflict", attempt=attempt + 1))
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # de-synchronize the writers that collided
        raise StaleCase("el caso cambia demasiado rápido; intente de nuevo")

    def pin_secret(self, s: Session) -> bytes:
        """The node-wide key idempotent case openings derive their PIN from (created once, shared by processes)."""
        if self._pin_key is None:
            row = s.get(NodeSecret, "pin_derivation")
            if row is None:
                row = NodeSecret(name="pin_derivation", value=secrets.token_hex(32))
                try:
                    with s.begin_nested():
                        s.add(row)
                except IntegrityError:   # another process created it first
                    row = s.get(NodeSecret, "pin_derivation")
                    assert row is not None
            self._pin_key = bytes.fromhex(row.value)
        return self._pin_key


def load_case(s: Session, folio: str, *, for_view: bool = False) -> Case:
    q = select(Case).where(Case.folio == folios.normalize(folio))
    if not for_view:
        # Writers take the row lock on PostgreSQL so they queue instead of colliding; the version column still
        # catches any writer that read without it (and a form's expected_version).
        q = q.with_for_update()
    else:
        q = q.options(selectinload(Case.tramite), selectinload(Case.citizen), selectinload(Case.history),
                      selectinload(Case.interactions))
    case = s.execute(q).scalar_one_or_none()
    if case is None:
        raise CaseNotFound(folio)
    return case


def load_call(s: Session, call_id: str) -> CallRecord:
    call = s.execute(select(CallRecord).where(CallRecord.sip_call_id == call_id)).scalar_one_or_none()
    if call is None:
        raise CallNotFound(call_id)
    return call


def case_snapshot(s: Session, folio: str) -> CaseView:
    return case_view(load_case(s, folio, for_view=True))
