"""Migrations and models agree, on SQLite and PostgreSQL; the `veratur db` commands work end to end."""
from __future__ import annotations

import io
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from case_bridge.db import make_engine
from case_bridge.migrate import alembic_config, schema_diff, upgrade
from case_bridge.service import CaseService
from foundation.paths import REPO_ROOT
from testkit.call_records import seed_known_calls

from .conftest import TEST_TRAMITES, create_pg_database, drop_pg_database, pg_url


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


def _figures(url: str) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """The rollup's rows and the journeys' rows, by plain SQL (valid at 0008 and at 0009)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rollup = {(str(h)[:19], node, kind, key, n, round(t, 3)) for h, node, kind, key, n, t in conn.execute(
                text("SELECT hour, node, kind, key, n, total FROM call_rollup"))}
            journeys = {tuple(r) for r in conn.execute(text("SELECT case_id, channel, gap_s FROM case_journeys"))}
    finally:
        engine.dispose()
    return rollup, journeys


def _scalar(url: str, sql: str) -> Any:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar_one()
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_0009_call_direction_down_and_up_with_callbacks(backend: str, tmp_path: Path) -> None:
    """A day with callbacks written at head, 0009 taken down (callbacks counted as calls received again, the pre-0009
    figures) and up again: the callbacks are found (summary / job Call-ID), one attempt per dialled job is kept,
    and the rebuilt rollup and journeys are exactly the ones the live writes had made."""
    name = create_pg_database("cb_mig9") if backend == "postgres" else None
    url = pg_url(name) if name else f"sqlite:///{tmp_path / 'm9.db'}"
    try:
        upgrade(url)
        svc = CaseService.from_url(url)
        try:
            svc.upsert_tramites(TEST_TRAMITES)
            known = seed_known_calls(svc, date(2021, 6, 7), callbacks=True)
        finally:
            svc.close()
        at_head = _figures(url)
        outbound = {known.ids[k] for k in "EFG"}
        assert {k for _, _, kind, k, _, _ in at_head[0] if kind == "direction"} == {"inbound", "outbound"}

        command.downgrade(alembic_config(url), "0008")
        engine = make_engine(url)
        try:
            assert "direction" not in {c["name"] for c in inspect(engine).get_columns("call_records")}
            assert "callback_attempts" not in inspect(engine).get_table_names()
        finally:
            engine.dispose()
        rollup, journeys = _figures(url)
        assert sum(n for _, _, kind, _, n, _ in rollup if kind == "disposition") == 8     # 5 received + 3 callbacks
        assert not {r for r in rollup if r[2] == "direction"}
        assert len({r[0] for r in journeys}) == len({r[0] for r in at_head[1]}) + 1     # the web case's callback

        upgrade(url)
        ids = ", ".join(f"'{i}'" for i in outbound)
        assert _scalar(url, f"SELECT count(*) FROM call_records WHERE direction = 'outbound' AND sip_call_id IN ({ids})") == 3
        assert _scalar(url, "SELECT count(*) FROM call_records WHERE direction = 'outbound'") == 3
        # the jobs kept only their last outcome before 0009: answered, failed, opt_out
        assert _scalar(url, "SELECT count(*) FROM callback_attempts") == 3
        assert _figures(url) == at_head
    finally:
        if name:
            drop_pg_database(name)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_0010_interaction_direction_down_and_up(backend: str, tmp_path: Path) -> None:
    """The callbacks' phone interactions are outbound at head; 0010 down and up again finds them from their call
    (call_records.direction) or, once retention unlinked the call, from the summary marker; the journeys rebuilt
    at each step are the live ones (down: 0009's rule, which counts an unlinked callback as the citizen's call)."""
    name = create_pg_database("cb_mig10") if backend == "postgres" else None
    url = pg_url(name) if name else f"sqlite:///{tmp_path / 'm10.db'}"
    try:
        upgrade(url)
        svc = CaseService.from_url(url)
        try:
            svc.upsert_tramites(TEST_TRAMITES)
            known = seed_known_calls(svc, date(2021, 6, 14), callbacks=True)
        finally:
            svc.close()
        outbound = ", ".join(f"'{known.ids[k]}'" for k in "EFG")
        linked = (f"SELECT count(*) FROM interactions i JOIN call_records c ON c.id = i.call_id "
                  f"WHERE c.sip_call_id IN ({outbound}) AND i.direction = 'outbound'")
        assert _scalar(url, linked) == 3
        assert _scalar(url, "SELECT count(*) FROM interactions WHERE direction = 'outbound'") == 3
        at_head = _figures(url)
        command.downgrade(alembic_config(url), "0009")
        engine = make_engine(url)
        try:
            assert "direction" not in {c["name"] for c in inspect(engine).get_columns("interactions")}
        finally:
            engine.dispose()
        assert _figures(url) == at_head                          # 0009 knew the callbacks through their calls
        upgrade(url)
        assert _scalar(url, linked) == 3 and _figures(url) == at_head

        # retention unlinks one callback's call: 0009's rule loses it, 0010's summary marker finds it again
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(text(f"UPDATE interactions SET call_id = NULL WHERE call_id = (SELECT id FROM "
                                  f"call_records WHERE sip_call_id = '{known.ids['F']}')"))   # the web case's
        finally:
            engine.dispose()
        command.downgrade(alembic_config(url), "0009")
        down = _figures(url)[1]
        assert down != at_head[1] and len({r[0] for r in down}) == len({r[0] for r in at_head[1]}) + 1
        upgrade(url)
        assert _scalar(url, "SELECT count(*) FROM interactions WHERE direction = 'outbound'") == 3
        assert _figures(url) == at_head
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
