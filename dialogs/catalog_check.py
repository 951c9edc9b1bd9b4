"""`veratur catalog ...`: check, query and export the catalogs from the command line.

    veratur catalog validate [FILE ...] [--strict] [--json]   # default: nlu_data/cities.yml and tramites.yml
    veratur catalog find "¿qué necesito para la licencia?"      # what the lookups make of a sentence
    veratur catalog lookups --out nlu_data/train/x.yml [--no-synonyms]
    veratur catalog generate --count 900 --out var/catalog/tramites-900.yml   # SYNTHETIC, tests only

Also runnable without the configuration as `python -m dialogs.catalog_check ...`.
Exit status of `validate`: 0 clean, 1 errors (or warnings with --strict).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dialogs.catalog import (
    DEFAULT_CITIES_PATH,
    DEFAULT_TRAMITES_PATH,
    CatalogError,
    load_cities,
    load_tramites,
    validate_catalog_file,
    write_rasa_lookups,
)
from dialogs.catalog_gen import DEFAULT_COUNT, write_catalog


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = sub.add_parser("validate", help="report every problem with file:line:column, entry and key")
    check.add_argument("files", nargs="*", type=Path)
    check.add_argument("--strict", action="store_true", help="warnings (spoken style) also fail")
    check.add_argument("--json", action="store_true", help="one JSON list of problems, for the admin console")
    find = sub.add_parser("find", help="show the city, festival and trámite lookups for a sentence")
    find.add_argument("text")
    find.add_argument("--tramites", type=Path, default=None, help="another trámites file (e.g. a synthetic one)")
    lookups = sub.add_parser("lookups", help="write Rasa lookup tables (and synonyms) for cities and trámites")
    lookups.add_argument("--out", type=Path, required=True)
    lookups.add_argument("--no-synonyms", action="store_true")
    gen = sub.add_parser("generate", help="write a SYNTHETIC trámite catalog for tests and benchmarks")
    gen.add_argument("--count", type=int, default=DEFAULT_COUNT)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", type=Path, required=True)


def run(settings: Any, args: argparse.Namespace) -> int:
    """Entry point of the `veratur catalog` subcommand (`settings` is not needed: catalogs are plain files)."""
    try:
        if args.action == "validate":
            return _validate(args.files or [DEFAULT_CITIES_PATH, DEFAULT_TRAMITES_PATH], args.strict, args.json)
        if args.action == "find":
            return _find(args.text, args.tramites)
        if args.action == "lookups":
            print(write_rasa_lookups(args.out, synonyms=not args.no_synonyms))
            return 0
        print(write_catalog(args.out, args.count, args.seed))
        return 0
    except CatalogError as exc:
        print(exc, file=sys.stderr)
        return 1


def _validate(files: list[Path], strict: bool, as_json: bool) -> int:
    problems = [p for path in files for p in validate_catalog_file(path)]
    if as_json:
        print(json.dumps([asdict(p) for p in problems], ensure_ascii=False, indent=1))
    else:
        for problem in problems:
            print(problem)
        errors = sum(p.severity == "error" for p in problems)
        print(f"{len(files)} archivo(s): {errors} error(es), {len(problems) - errors} aviso(s)")
    failing = [p for p in problems if strict or p.severity == "error"]
    return 1 if failing else 0


def _find(text: str, tramites_path: Path | None) -> int:
    cities = load_cities()
    tramites = load_tramites(tramites_path)
    city, origin = cities.find_city(text), cities.find_origin(text)
    print(f"ciudad: {city.id if city else '-'}   origen: {origin.id if origin else '-'}")
    for festival in cities.find_festivals(text):
        print(f"fiesta: {festival.city.id} / {festival.festival.name} ({festival.score:.2f})")
    found = tramites.resolve(text)
    for match in found.matches:
        print(f"trámite: {match.tramite.id} ({match.score:.2f}, por {match.phrase!r})")
    if found.ambiguous:
        print(f"pregunta: {tramites.disambiguation_question(found.matches)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dialogs.catalog_check", description=__doc__.splitlines()[0]
                                     if __doc__ else None)
    add_arguments(parser)
    return run(None, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
