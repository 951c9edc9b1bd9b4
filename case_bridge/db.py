"""Engines and sessions for the case bridge, tuned per backend.

SQLite (the embedded default) is shared by several processes on one node (web, IVR workers, action server): WAL,
a busy timeout and BEGIN IMMEDIATE let them take turns instead of failing. PostgreSQL connections fail fast (connect timeout) so a
call whose database went away falls back to the outbox within seconds, and pooled connections are pinged before use
so one restart of the server doesn't surface as errors forever.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_S = 15.0
PG_CONNECT_TIMEOUT_S = 3
PG_STATEMENT_TIMEOUT_MS = 10_000
READ_ONLY_OPTION = "veratur_read_only"


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
                               **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None   # let SQLAlchemy's BEGIN below be the only one
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # Take the write lock up front: two deferred transactions that both read and then write would make
            # the second fail at once with SQLITE_BUSY (no busy wait applies); IMMEDIATE makes it wait its turn.
            # A read-only connection (UnitOfWork.reader) never writes: a deferred BEGIN, so a long read (the
            # dashboard) does not hold every writer (call closes, transcript turns) back for its duration.
            read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    return create_engine(
        url,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S,
                      "options": f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}"},
        **kwargs,
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # imported here: journeys needs the models, which the engine helpers above do not
    from case_bridge import journeys

    maker = sessionmaker(engine, expire_on_commit=False)
    journeys.install(maker)             # every write to a case's contacts recomputes its journey (same transaction)
    return maker
