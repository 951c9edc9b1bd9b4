"""`veratur db ...`: the case bridge's schema and seed data.

    veratur db upgrade                 apply the Alembic migrations (SQLite default or PostgreSQL from config)
    veratur db check                   exit 1 if the database is not at head or the models and schema disagree
    veratur db create-user NAME --role clerk|agent|admin [--password-stdin]
    veratur db seed [--demo]           load the trámite catalog (dialogs/catalog.py); --demo adds a demo case
    veratur db purge                   delete call details and transcripts past retention.* (open cases kept)
"""
from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from case_bridge.db import make_engine
from case_bridge.migrate import alembic_config, schema_diff, upgrade
from foundation.config import Settings

if TYPE_CHECKING:
    from case_bridge.service import CaseService


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="db_command", required=True)
    sub.add_parser("upgrade", help="apply migrations up to head")
    sub.add_parser("check", help="fail if models and migrations disagree")
    user = sub.add_parser("create-user", help="create a staff user (agent, clerk, supervisor or admin)")
    user.add_argument("username")
    user.add_argument("--role", required=True, choices=["agent", "clerk", "supervisor", "admin"])
    user.add_argument("--name", default="", help="display name")
    user.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    pw = sub.add_parser("set-password", help="change a staff user's password (their sessions end)")
    pw.add_argument("username")
    pw.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    off = sub.add_parser("deactivate-user", help="deactivate a staff user (their sessions end at once)")
    off.add_argument("username")
    seed = sub.add_parser("seed", help="load the trámite catalog into the database")
    seed.add_argument("--demo", action="store_true", help="also create a demo citizen and case (prints folio+PIN)")
    sub.add_parser("purge", help="delete call details and transcripts older than retention.* (case_bridge.retention)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    url = settings.database_url
    if args.db_command == "upgrade":
        upgrade(url)
        print("db: schema at head")
        return 0
    if args.db_command == "check":
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
            head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
            if current != head:
                print(f"db: schema at {current or 'nothing'}, migrations at {head}: run `veratur db upgrade`",
                      file=sys.stderr)
                return 1
            diff = schema_diff(engine)
        finally:
            engine.dispose()
        if diff:
            print("db: models and migrations disagree:", file=sys.stderr)
            for item in diff:
                print(f"  {item}", file=sys.stderr)
            return 1
        print("db: models and migrations agree")
        return 0

    from case_bridge.errors import CaseBridgeError
    from case_bridge.service import CaseService

    upgrade(url)
    svc = CaseService.from_settings(settings)
    try:
        if args.db_command == "purge":
            return purge_now(settings, svc)
        if args.db_command in ("create-user", "set-password", "deactivate-user"):
            try:
                if args.db_command == "deactivate-user":
                    svc.set_active(args.username, False)
                    print(f"db: user {args.username} deactivated; their sessions have ended")
                    return 0
                if args.password_stdin:
                    password = sys.stdin.readline().rstrip("\n")
                else:
                    password = getpass.getpass("contraseña: ")
                if args.db_command == "set-password":
                    svc.set_password(args.username, password)
                    print(f"db: password of {args.username} changed; their earlier sessions have ended")
                    return 0
                user = svc.create_staff(args.username, password, args.role, args.name)
            except CaseBridgeError as exc:
                print(f"db: {exc}", file=sys.stderr)
                return 2
            print(f"db: user {user.username} ({user.role}) created")
            return 0
        from dialogs.catalog_seed import seed_catalog, seed_demo

        count, source = seed_catalog(svc)
        print(f"db: {count} trámites loaded from {source}")
        if args.demo:
            folio, pin = seed_demo(svc)
            print(f"db: demo case folio={folio} PIN={pin} (made-up demo data, not a citizen's)")
        return 0
    finally:
        svc.close()


def purge_now(settings: Settings, svc: CaseService) -> int:
    from datetime import UTC, datetime

    from case_bridge.retention import purge

    r = settings.retention
    result = purge(svc.uow, now=datetime.now(UTC), call_records_days=r.call_records_days,
                   transcripts_days=r.transcripts_days)
    print(f"db: purged {result.calls} calls older than {r.call_records_days} days and {result.turns} transcript"
          f" turns (transcripts kept {r.transcripts_days} days; calls of open cases kept)")
    return 0
