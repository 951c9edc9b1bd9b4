"""Case databases for tests and benches: one factory for SQLite and PostgreSQL.

`database_fixtures(prefix)` builds an area's fixtures: session-scoped migrated databases (a SQLite file, a fresh
PostgreSQL database on 127.0.0.1:5432 dropped at the end), `db_url` parametrized over both backends, and `svc`,
a CaseService with the test trámites and its own Redis rate-limit prefix per test. Migrating once per session
and backend is what makes the many database tests cheap."""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from case_bridge.migrate import upgrade
from case_bridge.service import CaseService
from case_bridge.views import TramiteInfo

REDIS_URL = "redis://127.0.0.1:6379/0"
"""The Redis every test uses (rate limits, Rasa's tracker store); keys are prefixed per test."""
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"

TEST_TRAMITES = (
    TramiteInfo("licencia_conducir", "Licencia de conducir", "Secretaría de Seguridad Pública",
                ("phone", "web", "office", "kiosk", "call_center"), ("office",),
                ("Identificación oficial", "Comprobante de domicilio"), ("Delegación Xalapa", "Delegación Veracruz")),
    TramiteInfo("acta_nacimiento", "Copia certificada de acta de nacimiento", "Registro Civil",
                ("phone", "web", "office", "kiosk"), ("web", "office"), ("CURP",), ("Registro Civil Xalapa",)),
    TramiteInfo("solo_oficina", "Trámite sólo en oficina", "Dependencia", ("office",), ("office",), (), ()),
)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def create_pg_database(prefix: str = "cb_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_url(name: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def migrated_sqlite(path: Path) -> str:
    url = f"sqlite:///{path}"
    upgrade(url)
    return url


def migrated_postgres(prefix: str) -> Iterator[str]:
    """A fresh migrated PostgreSQL database (its URL), dropped when the generator is closed."""
    name = create_pg_database(prefix)
    try:
        upgrade(pg_url(name))
        yield pg_url(name)
    finally:
        drop_pg_database(name)


def case_service(url: str, prefix: str, *, redis_url: str | None = REDIS_URL,
                 tramites: tuple[TramiteInfo, ...] = TEST_TRAMITES) -> CaseService:
    """A CaseService on `url` with `tramites` upserted and its own rate-limit key prefix."""
    service = CaseService.from_url(url, redis_url=redis_url, ratelimit_prefix=unique(f"{prefix}-"))
    if tramites:
        service.upsert_tramites(tramites)
    return service


def database_fixtures(prefix: str, *, sqlite_name: str = "sqlite_database", pg_name: str = "pg_database"
                      ) -> dict[str, Callable[..., Any]]:
    """The fixtures of one test area, to be bound in its conftest:

        globals().update(database_fixtures("esc", sqlite_name="esc_sqlite_database", pg_name="esc_pg_database"))

    gives `<sqlite_name>`, `<pg_name>` (session), `db_url` (sqlite, postgres) and `svc`."""

    @pytest.fixture(scope="session", name=pg_name)
    def pg_database() -> Iterator[str]:
        yield from migrated_postgres(f"{prefix}_test")

    @pytest.fixture(scope="session", name=sqlite_name)
    def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
        return migrated_sqlite(tmp_path_factory.mktemp(prefix) / "case_bridge.db")

    @pytest.fixture(name="db_url", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
    def db_url(request: pytest.FixtureRequest) -> str:
        return str(request.getfixturevalue(sqlite_name if request.param == "sqlite" else pg_name))

    @pytest.fixture(name="svc")
    def svc(db_url: str) -> Iterator[CaseService]:
        service = case_service(db_url, prefix)
        yield service
        service.close()

    return {pg_name: pg_database, sqlite_name: sqlite_database, "db_url": db_url, "svc": svc}
