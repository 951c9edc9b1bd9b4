"""The case bridge's schema migrations (Alembic scripts in `case_bridge/migrations`; no alembic.ini needed: the
config is built here). The `veratur db` command is `veratur/db_cli.py`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from case_bridge.kiosks import KioskDevice  # noqa: F401  (its table is in Base.metadata)
from case_bridge.models import Base

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def schema_diff(engine: Engine) -> list[Any]:
    """What autogenerate would change to make the database match the models ([] when they agree)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))
