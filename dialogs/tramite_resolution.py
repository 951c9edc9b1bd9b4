"""Which trámite a caller's words mean: the entity values caught, then the words of the whole turn.

One implementation for the two places that need it: the dialogue's actions (`dialogs.actions.tramites`, which
add the conversation's state: an open choice, a follow-up) and the NLU's catalog entity extractor
(`dialogs.catalog_entities`), so what Rasa reports as the `tramite` entity is what the dialogue would answer about.
No Rasa imports: both venvs use it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from dialogs.catalog import TramiteCatalog, TramiteMatch, TramiteResolution
from dialogs.catalog_match import normalize
from dialogs.catalog_schema import Tramite
from dialogs.catalog_search import close_candidates, search

Resolved = tuple[Tramite | None, list[TramiteMatch]]
"""(the trámite meant, or None with the candidates to ask among; both empty: nothing fits)."""

CUES: tuple[re.Pattern[str], ...] = (
    re.compile(r"\b(perd\w*|rob\w*|extravi\w*|repon\w*|reposicion|duplicado)\b"),
    re.compile(r"\b(vencid\w*|renov\w*|canje)\b"),
    re.compile(r"\b(baja)\b"),
)
"""Words that pick one of several entries of a family: a loss or theft (reposición), a renewal, a cancellation."""


def narrowed(text: str, matches: list[TramiteMatch]) -> list[TramiteMatch]:
    """The candidates whose names carry the cue the caller said ("se me perdió la licencia" -> reposición)."""
    plain = normalize(text)
    for cue in CUES:
        if cue.search(plain):
            fit = [m for m in matches if any(cue.search(normalize(p)) for p in m.tramite.phrases)]
            if fit:
                return fit
    return matches


def searched(catalog: TramiteCatalog, text: str) -> list[TramiteMatch]:
    """The entries the caller's everyday words mean (dialogs.catalog_search: BM25 over names and synonyms, the
    phone vocabulary table, misheard words), as the candidates to choose among; one when it is clear."""
    return [TramiteMatch(c.tramite, c.score, c.phrase) for c in close_candidates(search(catalog, text))]


def decided(catalog: TramiteCatalog, found: TramiteResolution, plain: str) -> Resolved:
    """One trámite from the name index's outcome; when the names tie ("la licencia"), a cue word or the meaning
    of the whole turn ("se me perdió", "para mi troca") may still pick one, else the caller is asked."""
    if found.best is not None:
        return found.best, []
    candidates = narrowed(plain, list(found.matches))
    if len(candidates) == 1:
        return candidates[0].tramite, []
    meant = searched(catalog, plain) if plain else []
    if len(meant) == 1:
        return meant[0].tramite, []
    return None, candidates


def from_values(catalog: TramiteCatalog, values: Iterable[str], plain: str) -> Resolved | None:
    """What the entity values name, decided with the help of the whole turn (the caller may have said more than
    the entity caught: "licencia de chofer" vs "licencia"). A value that names one entry outright wins over
    one that names a family ("mi registro para la licencia de automovilista": the licence, not "registro"),
    unless it matched less well (a stem near "expediente" must not beat a plain "licencia");
    None when no value names anything (a stray word tagged as a trámite)."""
    return from_resolutions(catalog, [catalog.resolve(value) for value in values], plain)


def from_resolutions(catalog: TramiteCatalog, resolutions: Sequence[TramiteResolution], plain: str
                     ) -> Resolved | None:
    """`from_values` for values already resolved through the catalog (each `catalog.resolve(value)`)."""
    named = [found for found in resolutions if not found.not_found]
    if not named:
        return None
    top = max(f.matches[0].score for f in named)
    found = next((f for f in named if f.best is not None and f.matches[0].score >= top), named[0])
    if found.best is None and plain:
        fuller = catalog.resolve(plain, among=[m.tramite.id for m in found.matches])
        if fuller.best is not None or fuller.ambiguous:
            found = fuller
    return decided(catalog, found, plain)


def from_words(catalog: TramiteCatalog, plain: str) -> Resolved:
    """What the words of the turn name (the name index first, then the everyday-words search)."""
    if not plain:
        return None, []
    found = catalog.resolve(plain)
    if not found.not_found:
        return decided(catalog, found, plain)
    meant = searched(catalog, plain)
    if meant:
        return (meant[0].tramite, []) if len(meant) == 1 else (None, meant)
    return None, []
