"""Fixtures of the case-bridge tests: a migrated database per backend per run (SQLite file, fresh PostgreSQL
database on 127.0.0.1:5432 dropped afterwards) and a service with its own Redis key prefix per test, all from
testkit.db's one factory."""
from __future__ import annotations

from testkit.db import (
    PG_ADMIN,
    REDIS_URL,
    TEST_TRAMITES,
    create_pg_database,
    database_fixtures,
    drop_pg_database,
    pg_url,
)

__all__ = ["PG_ADMIN", "REDIS_URL", "TEST_TRAMITES", "create_pg_database", "drop_pg_database", "pg_url"]

_fixtures = database_fixtures("cb")
sqlite_database = _fixtures["sqlite_database"]
pg_database = _fixtures["pg_database"]
db_url = _fixtures["db_url"]
svc = _fixtures["svc"]
