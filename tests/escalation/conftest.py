"""Fixtures of the escalation tests: a migrated database per backend (SQLite file, fresh PostgreSQL database),
a CaseService over it with the test trámites (testkit.db's factory, databases of their own), and the desk."""
from __future__ import annotations

import pytest

from case_bridge.escalation import EscalationDesk
from case_bridge.service import CaseService
from testkit.db import REDIS_URL, database_fixtures, unique

__all__ = ["REDIS_URL", "unique"]

_fixtures = database_fixtures("esc", sqlite_name="esc_sqlite_database", pg_name="esc_pg_database")
esc_sqlite_database = _fixtures["esc_sqlite_database"]
esc_pg_database = _fixtures["esc_pg_database"]
db_url = _fixtures["db_url"]
svc = _fixtures["svc"]


@pytest.fixture
def desk(svc: CaseService) -> EscalationDesk:
    return EscalationDesk(svc)
