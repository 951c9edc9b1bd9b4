"""Alembic environment for the case bridge: the URL (or an open connection) comes from `case_bridge.migrate`."""
from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from case_bridge.db import make_engine
from case_bridge.kiosks import KioskDevice  # noqa: F401  (its table is in Base.metadata)
from case_bridge.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    # batch mode lets later migrations ALTER tables on SQLite (copy-and-move), a no-op on PostgreSQL
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True,
                      render_as_batch=connection.dialect.name == "sqlite")


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
