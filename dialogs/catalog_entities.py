"""City and trámite entities from the catalogs, replacing DIET's guesses: the catalogs are the source of truth.

DIET tags spans by their shape, so on phone turns it also tags stray words ("una", "para", "Perdí mi") as a
trámite, the starting point of a trip as a second city, and splits one trámite into pieces. The catalogs
already know every name, synonym and frequent mis-hearing (`dialogs.catalog`), and the dialogue resolves what
the caller meant with them (`dialogs.tramite_resolution`). This module gives the NLU the same answer, so the
parse result carries one entity per thing meant, with its catalog id as the value:

- `city`: every city the name index finds in the turn, except the starting point of a trip ("desde Xalapa"),
  which becomes `origin_city` (so a slot filled from `city` keeps the destination). DIET's city spans that the
  index did not see are kept only when their value names a city.
- `tramite`: DIET's values resolved through the catalog with the whole turn's help; failing that, and only on a
  trámite question, the words of the turn. One id when the turn decides one; when it names a family ("la
  licencia") the caught words stay as the value, so the dialogue asks which one. Values naming nothing are
  dropped.
Other entities (digits) pass through untouched. Pure functions over dicts shaped like Rasa's entities, so the
engine's tests run them without Rasa; `dialogs/catalog_nlu/component.py` is the Rasa wrapper.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dialogs.catalog import CityCatalog, TramiteCatalog
from dialogs.catalog_match import tokens
from dialogs.tramite_resolution import from_resolutions, from_words

EXTRACTOR = "CatalogEntityExtractor"
ORIGIN_ENTITY = "origin_city"
TRAMITE_INTENTS = frozenset({
    "ask_tramite_info", "ask_tramite_requirements", "ask_tramite_cost", "ask_tramite_where", "ask_tramite_hours",
    "ask_tramite_duration", "ask_tramite_online", "inform_tramite", "start_tramite",
})
"""Intents on which the words of the turn are searched for a trámite even when DIET caught no span."""

Entity = dict[str, Any]


def _folded(ch: str) -> str:
    decomposed = unicodedata.normalize("NFKD", ch.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def token_spans(text: str) -> list[tuple[int, int]] | None:
    """Character (start, end) of each word `dialogs.catalog_match.tokens` sees in `text`, or None when the two
    do not line up (an exotic character): callers then use the whole text as the span."""
    spans: list[tuple[int, int]] = []
    start = None
    for i, ch in enumerate(text):
        word_char = any(c.isascii() and c.isalnum() for c in _folded(ch))
        if word_char and start is None:
            start = i
        elif not word_char and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(text)))
    return spans if len(spans) == len(tokens(text)) else None


@dataclass(frozen=True)
class CatalogEntities:
    cities: CityCatalog
    tramites: TramiteCatalog

    def entities(self, text: str, intent: str | None, extracted: Sequence[Entity]) -> list[Entity]:
        """The turn's entities: DIET's non-catalog ones as they are, then the catalog's cities and trámite."""
        if not text or text.startswith("/"):
            return list(extracted)
        kept = [e for e in extracted if e.get("entity") not in ("city", "tramite", ORIGIN_ENTITY)]
        spans = token_spans(text)
        return kept + self._cities(text, spans, extracted) + self._tramite(text, intent, spans, extracted)

    # ------------------------------------------------------------------------------------------- cities
    def _cities(self, text: str, spans: list[tuple[int, int]] | None, extracted: Sequence[Entity]) -> list[Entity]:
        mentions = self.cities.mentions(text)
        out: list[Entity] = []
        seen: set[tuple[str, str]] = set()
        # as find_city: the city asked about is the first that is not the starting point, else the first one
        target = next((m for m in mentions if not m.origin), mentions[0]) if mentions else None
        for m in mentions:
            name = ORIGIN_ENTITY if m.origin and m is not target else "city"
            if (name, m.key) in seen:
                continue
            seen.add((name, m.key))
            start, end = _char_span(text, spans, m.start, m.end)
            out.append(_entity(name, m.key, start, end, text))
        covered = [(e["start"], e["end"]) for e in out]
        for e in extracted:
            if e.get("entity") != "city" or _overlaps(e, covered):
                continue
            city = self.cities.get(str(e.get("value"))) or self.cities.find_city(str(e.get("value") or ""))
            if city is not None and not {("city", city.id), (ORIGIN_ENTITY, city.id)} & seen:
                seen.add(("city", city.id))
                out.append(_entity("city", city.id, int(e.get("start", 0)), int(e.get("end", len(text))), text))
        return out

    # ----------------------------------------------------------------------------------------- trámites
    def _tramite(self, text: str, intent: str | None, spans: list[tuple[int, int]] | None,
                 extracted: Sequence[Entity]) -> list[Entity]:
        caught = [e for e in extracted if e.get("entity") == "tramite" and e.get("value")]
        found = [self.tramites.resolve(str(e["value"])) for e in caught]     # once: decision and spans
        resolved = from_resolutions(self.tramites, found, text)
        if resolved is None and (caught or intent in TRAMITE_INTENTS):
            resolved = from_words(self.tramites, text)
        if resolved is None:
            return []
        tramite, candidates = resolved
        named = [(e, f) for e, f in zip(caught, found, strict=True) if not f.not_found]
        useful = [e for e, _ in named]
        if tramite is not None:
            # the span: the words that name this entry, else all that named something, else the whole turn
            naming = [e for e, f in named if any(m.tramite.id == tramite.id for m in f.matches)]
            start, end = _union(naming or useful, len(text))
            return [_entity("tramite", tramite.id, start, end, text)]
        if candidates and useful:   # a family ("la licencia"): the words caught, for the dialogue to ask
            first = useful[0]
            return [_entity("tramite", str(first["value"]), int(first.get("start", 0)),
                            int(first.get("end", len(text))), text)]
        return []


def _entity(name: str, value: str, start: int, end: int, text: str) -> Entity:
    return {"entity": name, "start": start, "end": end, "value": value, "text": text[start:end],
            "extractor": EXTRACTOR, "confidence_entity": 1.0}


def _char_span(text: str, spans: list[tuple[int, int]] | None, first: int, last: int) -> tuple[int, int]:
    if spans is None or not spans:
        return 0, len(text)
    first = min(first, len(spans) - 1)
    last = max(first + 1, min(last, len(spans)))
    return spans[first][0], spans[last - 1][1]


def _overlaps(e: Entity, covered: list[tuple[int, int]]) -> bool:
    start, end = int(e.get("start", 0)), int(e.get("end", 0))
    return any(start < c_end and c_start < end for c_start, c_end in covered)


def _union(entities: Sequence[Entity], length: int) -> tuple[int, int]:
    if not entities:
        return 0, length
    return min(int(e.get("start", 0)) for e in entities), max(int(e.get("end", length)) for e in entities)
