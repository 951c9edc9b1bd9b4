"""Fixtures of the case-bridge tests: a migrated database per backend per run (SQLite file, fresh PostgreSQL
database on 127.0.0.1:5432 dropped afterwards) and a service with its own Redis key prefix per test."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from case_bridge.migrate import upgrade
from case_bridge.service import CaseService
from case_bridge.views import TramiteInfo

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"

TEST_TRAMITES = (
    TramiteInfo("licencia_conducir", "Licencia de conducir", "Secretaría de Seguridad Pública",
                ("phone", "web", "office", "kiosk", "call_center"), ("office",),
                ("Identificación oficial", "Comprobante de domicilio"), ("Delegación Xalapa", "Delegación Veracruz")),
    TramiteInfo("acta_nacimiento", "Copia certificada de acta de nacimiento", "Registro Civil",
                ("phone", "web", "office", "kiosk"), ("web", "office"), ("CURP",), ("Registro Civil Xalapa",)),
    TramiteInfo("solo_oficina", "Trámite sólo en oficina", "Dependencia", ("office",), ("office",), (), ()),
)


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


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    name = create_pg_database()
    upgrade(pg_url(name))
    yield pg_url(name)
    drop_pg_database(name)


@pytest.fixture(scope="session")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("cb") / "case_bridge.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_database" if request.param == "sqlite" else "pg_database"
    return str(request.getfixturevalue(name))


@pytest.fixture
def svc(db_url: str) -> Iterator[CaseService]:
    service = CaseService.from_url(db_url, redis_url=REDIS_URL, ratelimit_prefix=f"test-{uuid.uuid4().hex}")
    service.upsert_tramites(TEST_TRAMITES)
    yield service
    service.close()
