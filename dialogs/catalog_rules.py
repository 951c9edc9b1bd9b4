"""Rules that span entries of a catalog file (unique ids and names, known agencies) and spoken-style warnings.

The pydantic schemas check each entry alone; these checks need the whole file. Every finding is a located
`Problem`, so an administrator sees file, line, entry and key.
"""
from __future__ import annotations

import re
from typing import Any

from dialogs.catalog_match import normalize
from dialogs.catalog_schema import CitiesFile, TramitesFile
from dialogs.catalog_yaml import Parsed, Problem, locate


def check_cities(file: str, parsed: Parsed, model: CitiesFile) -> list[Problem]:
    """Cross-entry rules: unique ids, and no name or synonym that points to two cities."""
    problems = duplicate_ids(file, parsed, "cities", [c.id for c in model.cities])
    owner: dict[str, str] = {}
    for i, city in enumerate(model.cities):
        for phrase in (*city.phrases, city.id):
            key = normalize(phrase).replace(" ", "")
            if key in owner and owner[key] != city.id:
                problems.append(locate(file, parsed, ("cities", i),
                                       f"el nombre {phrase!r} ya pertenece a la ciudad {owner[key]!r}"))
            owner.setdefault(key, city.id)
    return problems + spoken_style(file, parsed)


def check_tramites(file: str, parsed: Parsed, model: TramitesFile) -> list[Problem]:
    """Cross-entry rules: unique ids and names, agencies that exist."""
    problems = duplicate_ids(file, parsed, "agencies", [a.id for a in model.agencies])
    problems += duplicate_ids(file, parsed, "tramites", [t.id for t in model.tramites])
    agencies = {a.id for a in model.agencies}
    names: dict[str, str] = {}
    for i, t in enumerate(model.tramites):
        if t.agency not in agencies:
            problems.append(locate(file, parsed, ("tramites", i, "agency"),
                                   f"la dependencia {t.agency!r} no está en agencies"))
        key = normalize(t.name)
        if key in names and names[key] != t.id:
            problems.append(locate(file, parsed, ("tramites", i, "name"),
                                   f"el nombre ya lo usa el trámite {names[key]!r}"))
        names.setdefault(key, t.id)
    return problems + (spoken_style(file, parsed) if not model.synthetic else [])


def duplicate_ids(file: str, parsed: Parsed, section: str, ids: list[str]) -> list[Problem]:
    seen: dict[str, int] = {}
    problems = []
    for i, value in enumerate(ids):
        if value in seen:
            problems.append(locate(file, parsed, (section, i, "id"),
                                   f"id repetido (ya lo usa la entrada número {seen[value] + 1})"))
        seen.setdefault(value, i)
    return problems


SPOKEN_KEYS = frozenset({"spoken_name", "summary", "description", "when", "duration", "spoken", "prompt",
                         "next_step", "where", "requirements", "hours", "processing_time", "notes",
                         "short_label"})
"""Keys whose text is read aloud by the TTS."""
_ABBREVIATIONS = ("km", "kms", "hr", "hrs", "min", "av", "col", "no", "num", "aprox", "etc", "sr", "sra", "dr",
                  "lic", "ing", "carr", "fed", "edo", "mpio", "tel", "depto")


def spoken_style(file: str, parsed: Parsed) -> list[Problem]:
    """Warnings for spoken texts that TTS reads badly: digits and abbreviations with a dot."""
    abbreviation = re.compile(r"(?i)\b(?:" + "|".join(_ABBREVIATIONS) + r")\.")
    problems: list[Problem] = []

    def walk(value: Any, loc: tuple[str | int, ...], spoken: bool) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*loc, str(key)), str(key) in SPOKEN_KEYS)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*loc, i), spoken)
        elif isinstance(value, str) and spoken:
            if re.search(r"\d", value):
                problems.append(locate(file, parsed, loc, "texto hablado con cifras: escriba los números con "
                                                           "letra para que la voz los lea bien", "warning"))
            if abbreviation.search(value):
                problems.append(locate(file, parsed, loc, "texto hablado con abreviaturas: escriba la palabra "
                                                           "completa", "warning"))

    walk(parsed.data, (), False)
    return problems
