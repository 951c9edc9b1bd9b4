"""Migrations and models agree, on SQLite and PostgreSQL; the `veratur db` commands work end to end."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory

from case_bridge.db import make_engine
from case_bridge.migrate import alembic_config, schema_diff, upgrade
from case_bridge.service import CaseService
from foundation.paths import REPO_ROOT

from .conftest import create_pg_database, drop_pg_database, pg_url


def test_one_linear_history() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_upgrade_head_matches_models_and_downgrades(backend: str, tmp_path: Path) -> None:
    name = create_pg_database("cb_mig") if backend == "postgres" else None
    url = pg_url(name) if name else f"sqlite:///{tmp_path / 'm.db'}"
    try:
        upgrade(url)
        engine = make_engine(url)
        try:
            assert schema_diff(engine) == []          # alembic autogenerate would change nothing
        finally:
            engine.dispose()
        command.downgrade(alembic_config(url), "base")
        upgrade(url)                                   # and back up again, cleanly
    finally:
        if name:
            drop_pg_database(name)


def _veratur(*args: str, env_db: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    import os
    env = dict(os.environ, VERATUR__DATABASE__URL=env_db)
    return subprocess.run([sys.executable, "-m", "veratur.cli", *args], input=stdin, capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=120)


def test_db_cli_upgrade_check_create_user_seed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    behind = _veratur("db", "check", env_db=url)
    assert behind.returncode == 1 and "veratur db upgrade" in behind.stderr
    done = _veratur("db", "upgrade", env_db=url)
    assert done.returncode == 0, done.stderr
    done = _veratur("db", "check", env_db=url)
    assert done.returncode == 0 and "agree" in done.stdout
    done = _veratur("db", "create-user", "ventanilla1", "--role", "clerk", "--password-stdin", env_db=url,
                    stdin="una-clave-larga\n")
    assert done.returncode == 0, done.stderr
    again = _veratur("db", "create-user", "ventanilla1", "--role", "clerk", "--password-stdin", env_db=url,
                     stdin="una-clave-larga\n")
    assert again.returncode == 2 and "ya existe" in again.stderr
    short = _veratur("db", "create-user", "otro", "--role", "admin", "--password-stdin", env_db=url, stdin="corta\n")
    assert short.returncode == 2
    seeded = _veratur("db", "seed", "--demo", env_db=url)
    assert seeded.returncode == 0 and "demo case folio=" in seeded.stdout, seeded.stderr
    folio = seeded.stdout.split("folio=")[1].split()[0]
    pin = seeded.stdout.split("PIN=")[1].split()[0]
    svc = CaseService.from_url(url)
    try:
        assert svc.authenticate("ventanilla1", "una-clave-larga") is not None
        assert svc.status_for(folio, pin=pin).ok
        assert len(svc.list_tramites()) >= 2
    finally:
        svc.close()


def test_offline_sql_renders(capsys: pytest.CaptureFixture[str]) -> None:
    """`alembic upgrade --sql` works too (for DBAs who apply SQL by hand)."""
    cfg = alembic_config("postgresql+psycopg://postgres@127.0.0.1:5432/x")
    cfg.output_buffer = io.StringIO()
    command.upgrade(cfg, "head", sql=True)
    assert "CREATE TABLE cases" in cfg.output_buffer.getvalue()
