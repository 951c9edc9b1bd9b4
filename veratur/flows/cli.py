"""`veratur flows`: dialog-flow administration for scripted deployment.

    veratur flows validate [PATH] [--rasa]     check the live tree, a tree laid out like the repo, or one file
    veratur flows apply [--source DIR] -m MSG  validate, train, test, swap into Rasa, record a revision
    veratur flows rollback REV                 make revision REV live again (same checks; model from cache)
    veratur flows log [--audit] [--diff REV]   revisions (or the audit log, or one revision's diff)
"""
from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from foundation.config import Settings
from foundation.paths import REPO_ROOT
from veratur.flows.paths import PathRejected, is_editable, list_flow_files, sha256_bytes
from veratur.flows.service import Conflict, Edit, FlowService, Invalid
from veratur.flows.validation import Problem, errors_in
from veratur.training import TrainingError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=REPO_ROOT,
                        help="the project tree whose flow files are live (default: this checkout)")
    sub = parser.add_subparsers(dest="flows_command", metavar="ACTION", required=True)
    v = sub.add_parser("validate", help="validate flow files (exit 1 on errors)")
    v.add_argument("path", nargs="?", type=Path, help="a flow file, or a directory laid out like the repository")
    v.add_argument("--rasa", action="store_true", help="also run `rasa data validate` (~15 s)")
    a = sub.add_parser("apply", help="validate, train, test and swap the flow files into the running Rasa")
    a.add_argument("--source", type=Path, help="a directory laid out like the repository whose flow files to apply "
                   "(default: deploy the files as they are in the live tree)")
    a.add_argument("-m", "--message", default="", help="what changed and why")
    a.add_argument("--author", default=None, help="recorded author (default: the login name)")
    r = sub.add_parser("rollback", help="make an earlier revision live again")
    r.add_argument("revision", type=int)
    r.add_argument("--author", default=None)
    lg = sub.add_parser("log", help="list revisions")
    lg.add_argument("--audit", action="store_true", help="show the audit log instead")
    lg.add_argument("--diff", type=int, metavar="REV", help="print the diff of one revision")


def _print_problems(problems: list[Problem]) -> None:
    for p in problems:
        print(("ERROR " if p.severity == "error" else "aviso ") + str(p))


def _progress(stage: str, message: str) -> None:
    print(f"[{stage}] {message}", flush=True)


def _source_edits(service: FlowService, source: Path) -> list[Edit]:
    """The flow files of `source` that differ from the live tree, each based on the live file it replaces."""
    edits = []
    for flow in list_flow_files(source):
        if not is_editable(flow.path):
            continue
        text = (source / flow.path).read_bytes()
        live = service.live_root / flow.path
        current = live.read_bytes() if live.exists() else None
        if current != text:
            edits.append(Edit(flow.path, text.decode("utf-8"), sha256_bytes(current) if current is not None else None))
    return edits


def run(settings: Settings, args: argparse.Namespace) -> int:
    service = FlowService(settings, live_root=args.root.resolve())
    author = getattr(args, "author", None) or getpass.getuser()
    try:
        if args.flows_command == "validate":
            return _validate(service, args)
        if args.flows_command == "apply":
            edits = _source_edits(service, args.source.resolve()) if args.source else []
            result = service.apply(edits, author=author, message=args.message or "flows apply", progress=_progress)
            rev = result.revision
            print(f"revisión {rev.id if rev else '-'} en vivo; modelo {result.model.name}"
                  + ("" if result.swapped else " (Rasa no responde: se cargará al arrancar)"))
            for note in result.notes:
                print(f"nota: {note}")
            return 0
        if args.flows_command == "rollback":
            result = service.rollback(args.revision, author=author, progress=_progress)
            print(f"revisión {result.revision.id if result.revision else '-'} en vivo (= revisión {args.revision})")
            return 0
        return _log(service, args)
    except Conflict as exc:
        print(f"veratur flows: conflicto: {exc}", file=sys.stderr)
        return 3
    except Invalid as exc:
        _print_problems(exc.problems)
        print(f"veratur flows: rechazado en {exc.stage}; nada cambió en vivo", file=sys.stderr)
        return 1
    except (PathRejected, TrainingError, KeyError) as exc:
        print(f"veratur flows: {exc}", file=sys.stderr)
        return 1


def _validate(service: FlowService, args: argparse.Namespace) -> int:
    path: Path | None = args.path
    if path is None:
        problems = service.validate([], deep=args.rasa)
    elif path.is_dir():
        other = FlowService(service.settings, live_root=path.resolve(), store=service.store, rasa_url="")
        problems = other.validate([], deep=args.rasa)
    else:
        try:
            rel = path.resolve().relative_to(service.live_root.resolve()).as_posix()
        except ValueError:
            print(f"veratur flows: {path}: fuera de las carpetas de flujos del proyecto", file=sys.stderr)
            return 1
        if not path.is_file():
            print(f"veratur flows: {path}: no existe", file=sys.stderr)
            return 1
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            print(f"veratur flows: {path}: no es texto UTF-8", file=sys.stderr)
            return 1
        problems = service.validate([Edit(rel, text, None)], deep=args.rasa)
    _print_problems(problems)
    errors = errors_in(problems)
    print(f"{len(errors)} error(es), {len(problems) - len(errors)} aviso(s)")
    return 1 if errors else 0


def _log(service: FlowService, args: argparse.Namespace) -> int:
    if args.diff is not None:
        print(service.store.get(args.diff).diff, end="")
        return 0
    if args.audit:
        for entry in service.store.audit_log():
            print(f"{entry.time}  {entry.actor:<12} {entry.action:<18} {entry.detail}")
        return 0
    for rev in reversed(service.store.revisions()):
        print(f"{rev.id:>4}  {rev.created}  {rev.author:<12} {rev.kind:<9} {rev.message}  "
              f"[{', '.join(rev.changed[:4])}{' …' if len(rev.changed) > 4 else ''}]  {rev.model or ''}")
    return 0
