"""The tourism and trámite catalogs as the dialogue uses them: load, validate, look up by what a caller said.

    cities = load_cities()                      # nlu_data/cities.yml, raises CatalogError naming file:line key
    city = cities.find_city("¿cómo llego a Catemaco desde Jalapa?")   # -> Catemaco (Jalapa is the origin)
    tramites = load_tramites()
    found = tramites.resolve("¿qué necesito para sacar la licencia?")
    if found.ambiguous: say(tramites.disambiguation_question(found.matches))
    problems = validate_catalog_file("nlu_data/tramites.yml")        # for the admin console / CI

Catalog objects are immutable and hold their indexes; build them once (at action-server start) and share them.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dialogs.catalog_match import Mention, NameIndex, RankedIndex, dedupe, normalize, speech_form, tokens
from dialogs.catalog_rasa import rasa_lookup_document, write_rasa_lookups
from dialogs.catalog_rules import check_cities, check_tramites
from dialogs.catalog_schema import (
    DEFAULT_MISSING_ITEMS_TEMPLATE,
    Agency,
    CitiesFile,
    City,
    Festival,
    Tramite,
    TramitesFile,
)
from dialogs.catalog_yaml import CatalogError, Parsed, Problem, parse_yaml, read_text, validate_model
from foundation.paths import REPO_ROOT

__all__ = [
    "CatalogError", "CityCatalog", "FestivalMatch", "Problem", "TramiteCatalog", "TramiteMatch", "TramiteResolution",
    "DEFAULT_CITIES_PATH", "DEFAULT_TRAMITES_PATH", "load_cities", "load_tramites", "validate_catalog_file",
    "write_rasa_lookups", "rasa_lookup_document", "spoken_list",
]

DEFAULT_CITIES_PATH = REPO_ROOT / "nlu_data" / "cities.yml"
DEFAULT_TRAMITES_PATH = REPO_ROOT / "nlu_data" / "tramites.yml"
RELATIVE_CUTOFF = 0.85
"""Matches scoring below this share of the best one are dropped; what remains above it is 'ambiguous'."""
MIN_SCORE = 0.3
"""Below this a match is noise (one common word out of a long sentence)."""
EXACT_SCORE = 0.999
"""A name or synonym said whole and nothing else: only other exact matches stay as alternatives."""
DISAMBIGUATION_OPTIONS = 3
"""A caller keeps about three options in mind; more are offered as 'u otro'."""


def spoken_list(items: Sequence[str], last_joiner: str = "y") -> str:
    """'a', 'a y b', 'a, b y c' — how a list is said aloud."""
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    joiner = last_joiner
    if last_joiner == "o" and normalize(items[-1]).startswith("o"):
        joiner = "u"
    elif last_joiner == "y" and normalize(items[-1]).startswith("i") and not normalize(items[-1]).startswith("ie"):
        joiner = "e"
    return f"{', '.join(items[:-1])} {joiner} {items[-1]}"


# ----------------------------------------------------------------------------------------------- cities

STATE_CONTEXTS: dict[str, Sequence[tuple[str, ...]]] = {
    "veracruz": (("estado", "de"), ("estado",), ("universidad",), ("gobierno", "de"), ("gobierno", "del", "estado", "de")),
}
"""'Veracruz' after these words means the state, not the port."""
GENERIC_CITY_NAMES = ("puerto", "el puerto")
"""Names that give way to a specific city said right after them: 'el puerto de Tuxpan' is Tuxpan."""


@dataclass(frozen=True, slots=True)
class FestivalMatch:
    """A festival that fits what the caller said, with its city."""

    city: City
    festival: Festival
    score: float


class CityCatalog:
    """The cities of the tourism line, with a name index over names, synonyms and frequent mis-hearings."""

    def __init__(self, cities: Sequence[City], source: str = "<memoria>"):
        self.cities: tuple[City, ...] = tuple(cities)
        self.source = source
        self._by_id = {c.id: c for c in self.cities}
        self._index = NameIndex(self._phrase_pairs(), STATE_CONTEXTS, GENERIC_CITY_NAMES)
        self._festivals = [(c, f) for c in self.cities for f in c.festivals]
        self._festival_index = RankedIndex([[f.name, *f.synonyms] for _, f in self._festivals])

    def _phrase_pairs(self) -> list[tuple[str, str]]:
        return [(p, c.id) for c in self.cities for p in (*c.phrases, c.id)]

    def __len__(self) -> int:
        return len(self.cities)

    def get(self, city_id: str) -> City | None:
        return self._by_id.get(city_id)

    def mentions(self, text: str | None) -> list[Mention]:
        """Every city named in `text`, in order, each marked `origin` when said after 'desde'."""
        return self._index.mentions(text) if text else []

    def find_city(self, text: str | None) -> City | None:
        """The city the caller asks about: the first one named that is not the starting point; else the first."""
        found = self.mentions(text)
        if not found:
            return None
        target = next((m for m in found if not m.origin), found[0])
        return self._by_id[target.key]

    def find_origin(self, text: str | None) -> City | None:
        """The city said as the starting point ('desde Xalapa'), if any."""
        found = next((m for m in self.mentions(text) if m.origin), None)
        return None if found is None else self._by_id[found.key]

    def find_festivals(self, text: str | None, city: City | None = None) -> list[FestivalMatch]:
        """Festivals that fit `text` ("¿cuándo es la Candelaria?"), best first, close competitors only.
        With a city (given, or named in `text`) only that city's festivals are considered."""
        if not text:
            return []
        said = self.mentions(text)
        city = city or self.find_city(text)
        allowed = None if city is None else {i for i, (c, _) in enumerate(self._festivals) if c.id == city.id}
        # city names are not festival words: "¿qué fiestas hay en Catemaco?" must not match "brujos de Catemaco"
        words = tokens(text)
        named = {i for m in said for i in range(m.start, m.end)}
        hits = self._festival_index.rank(" ".join(w for i, w in enumerate(words) if i not in named), allowed)
        if not hits or hits[0].score < MIN_SCORE:
            return []
        floor = EXACT_SCORE if hits[0].score >= EXACT_SCORE else max(MIN_SCORE, hits[0].score * RELATIVE_CUTOFF)
        return [FestivalMatch(*self._festivals[h.index], h.score) for h in hits if h.score >= floor]

    def spoken_names(self) -> list[str]:
        return [c.spoken_name for c in self.cities]

    def all_phrases(self) -> list[str]:
        """Names, synonyms and mis-hearings, deduplicated — for ASR phrase lists and Rasa lookup tables."""
        return dedupe(p for c in self.cities for p in c.phrases)

    def asr_phrases(self) -> list[str]:
        """Every city phrase as a recognizer writes it (lowercase, accents kept) — for Vosk phrase lists."""
        return sorted({speech_form(p) for p in self.all_phrases()} - {""})


# ----------------------------------------------------------------------------------------------- trámites


@dataclass(frozen=True, slots=True)
class TramiteMatch:
    """A trámite that fits what the caller said; `score` in [0, 1]; `phrase` is the name or synonym that fit."""

    tramite: Tramite
    score: float
    phrase: str


@dataclass(frozen=True, slots=True)
class TramiteResolution:
    """The outcome of a lookup: one clear trámite, several to choose among, or none."""

    matches: tuple[TramiteMatch, ...]

    @property
    def best(self) -> Tramite | None:
        return self.matches[0].tramite if len(self.matches) == 1 else None

    @property
    def ambiguous(self) -> bool:
        return len(self.matches) > 1

    @property
    def not_found(self) -> bool:
        return not self.matches


class TramiteCatalog:
    """The state's trámites with their agencies, an id index and a ranked name index."""

    def __init__(self, tramites: Sequence[Tramite], agencies: Sequence[Agency], source: str = "<memoria>",
                 missing_items_template: str = DEFAULT_MISSING_ITEMS_TEMPLATE, synthetic: bool = False):
        self.tramites: tuple[Tramite, ...] = tuple(tramites)
        self.agencies = {a.id: a for a in agencies}
        self.source = source
        self.synthetic = synthetic
        self.missing_items_template = missing_items_template
        self._by_id = {t.id: t for t in self.tramites}
        self._position = {t.id: i for i, t in enumerate(self.tramites)}
        self._index = RankedIndex([(*t.phrases, t.id) for t in self.tramites])

    def __len__(self) -> int:
        return len(self.tramites)

    def get(self, tramite_id: str) -> Tramite | None:
        return self._by_id.get(tramite_id)

    def agency_of(self, tramite: Tramite) -> Agency:
        return self.agencies[tramite.agency]

    def find_tramites(self, text: str | None, limit: int = 5,
                      among: Iterable[str] | None = None) -> list[TramiteMatch]:
        """Trámites that fit `text`, best first; only those close to the best are kept, so more than one
        result means the caller must choose. `among` restricts to earlier candidates (answer to a question)."""
        if not text:
            return []
        allowed = None if among is None else {self._position[i] for i in among if i in self._position}
        hits = self._index.rank(text, allowed, limit)
        if not hits or hits[0].score < MIN_SCORE:
            return []
        floor = EXACT_SCORE if hits[0].score >= EXACT_SCORE else max(MIN_SCORE, hits[0].score * RELATIVE_CUTOFF)
        return [TramiteMatch(self.tramites[h.index], h.score, h.phrase) for h in hits[:limit] if h.score >= floor]

    def resolve(self, text: str | None, among: Iterable[str] | None = None) -> TramiteResolution:
        """find_tramites as an outcome (one, several or none); an exact id resolves directly."""
        if not text:
            return TramiteResolution(())
        direct = self.get(text.strip())
        if direct is not None:
            return TramiteResolution((TramiteMatch(direct, 1.0, direct.id),))
        return TramiteResolution(tuple(self.find_tramites(text, among=among)))

    def disambiguation_question(self, matches: Sequence[TramiteMatch]) -> str:
        """A short spoken question offering at most three options."""
        labels = dedupe(m.tramite.label for m in matches)
        shown = labels[:DISAMBIGUATION_OPTIONS]
        if len(labels) > DISAMBIGUATION_OPTIONS:
            return f"¿Cuál trámite busca: {', '.join(shown)}, u otro?"
        return f"¿Cuál trámite busca: {spoken_list(shown, 'o')}?"

    def missing_items_text(self, tramite: Tramite, missing: Sequence[str]) -> str:
        """What the caller still has to bring, said with the entry's template (or the catalog default)."""
        template = tramite.missing_items_template or self.missing_items_template
        return template.format(tramite=tramite.spoken_name, faltantes=spoken_list(missing))

    def phone_startable(self) -> list[Tramite]:
        return [t for t in self.tramites if t.can_start_by_phone]

    def spoken_names(self) -> list[str]:
        return [t.spoken_name for t in self.tramites]

    def all_phrases(self) -> list[str]:
        """Names, spoken names, short labels and synonyms, deduplicated."""
        return dedupe(p for t in self.tramites for p in t.phrases)

    def asr_phrases(self) -> list[str]:
        """Every trámite phrase as a recognizer writes it (lowercase, accents kept) — for Vosk phrase lists."""
        return sorted({speech_form(p) for p in self.all_phrases()} - {""})

    def unique_synonyms(self) -> dict[str, str]:
        """Phrase -> trámite id for phrases that belong to exactly one trámite (safe as Rasa synonyms)."""
        owners: dict[str, set[str]] = {}
        first: dict[str, str] = {}
        for t in self.tramites:
            for phrase in t.phrases:
                key = normalize(phrase)
                owners.setdefault(key, set()).add(t.id)
                first.setdefault(key, phrase)
        return {first[k]: next(iter(v)) for k, v in owners.items() if len(v) == 1}


# ----------------------------------------------------------------------------------------------- loading


def _read(path: Path | str) -> tuple[str, Parsed | None, list[Problem]]:
    path = Path(path)
    file = _display(path)
    text, problems = read_text(path)
    if text is None:
        return file, None, problems
    parsed, problems = parse_yaml(text, file)
    return file, parsed, problems


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _validate(path: Path | str, kind: str | None = None) -> tuple[str, Any, list[Problem]]:
    file, parsed, problems = _read(path)
    if parsed is None:
        return file, None, problems
    if kind is None:
        data = parsed.data
        kind = "cities" if isinstance(data, dict) and "cities" in data else "tramites"
    if not isinstance(parsed.data, dict):
        return file, None, [*problems, Problem(file, "el documento debe ser un mapa con schema_version y "
                                                     f"{kind}", line=1, column=1)]
    if kind == "cities":
        model, errors = validate_model(CitiesFile, parsed, file)
        extra = check_cities(file, parsed, model) if model is not None else []
    else:
        model, errors = validate_model(TramitesFile, parsed, file)
        extra = check_tramites(file, parsed, model) if model is not None else []
    return file, model, [*problems, *errors, *extra]


def validate_catalog_file(path: Path | str) -> list[Problem]:
    """Every problem in a cities or trámites catalog file (kind told by its top-level key), errors and
    warnings, each with file, line, column, entry id and key. An empty list means the file is good."""
    return _validate(path)[2]


def load_cities(path: Path | str | None = None) -> CityCatalog:
    """Load and index the cities catalog; raise CatalogError (listing every error) if it is not valid."""
    file, model, problems = _validate(path or DEFAULT_CITIES_PATH, "cities")
    if model is None or any(p.severity == "error" for p in problems):
        raise CatalogError(problems)
    return CityCatalog(model.cities, source=file)


def load_tramites(path: Path | str | None = None) -> TramiteCatalog:
    """Load and index a trámites catalog; raise CatalogError (listing every error) if it is not valid."""
    file, model, problems = _validate(path or DEFAULT_TRAMITES_PATH, "tramites")
    if model is None or any(p.severity == "error" for p in problems):
        raise CatalogError(problems)
    return TramiteCatalog(model.tramites, model.agencies, source=file,
                          missing_items_template=model.missing_items_template, synthetic=model.synthetic)


ENV_CITIES = "VERATUR_CITIES_CATALOG"
ENV_TRAMITES = "VERATUR_TRAMITES_CATALOG"
"""Catalog files other than nlu_data/'s (tests, a node with its own catalogs), read by the action server; the
NLU's catalog entity extractor asks the action server, so both see the same names."""


def load_catalogs() -> tuple[CityCatalog, TramiteCatalog]:
    """Both catalogs, from $VERATUR_CITIES_CATALOG / $VERATUR_TRAMITES_CATALOG or nlu_data/."""
    return load_cities(os.environ.get(ENV_CITIES) or None), load_tramites(os.environ.get(ENV_TRAMITES) or None)
