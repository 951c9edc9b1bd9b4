"""Fixtures of the escalation tests: a migrated database per backend (SQLite file, fresh PostgreSQL database),
a CaseService over it with the test trámites, and staff users."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from case_bridge.escalation import EscalationDesk
from case_bridge.migrate import upgrade
from case_bridge.service import CaseService
from tests.case_bridge.conftest import TEST_TRAMITES, create_pg_database, drop_pg_database, pg_url

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def esc_pg_database() -> Iterator[str]:
    name = create_pg_database("esc_test")
    upgrade(pg_url(name))
    yield pg_url(name)
    drop_pg_database(name)


@pytest.fixture(scope="session")
def esc_sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("esc") / "veratur.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    name = "esc_sqlite_database" if request.param == "sqlite" else "esc_pg_database"
    return str(request.getfixturevalue(name))


@pytest.fixture
def svc(db_url: str) -> Iterator[CaseService]:
    service = CaseService.from_url(db_url, redis_url=REDIS_URL, ratelimit_prefix=f"esc-{uuid.uuid4().hex}")
    service.upsert_tramites(TEST_TRAMITES)
    yield service
    service.close()


@pytest.fixture
def desk(svc: CaseService) -> EscalationDesk:
    return EscalationDesk(svc)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"
