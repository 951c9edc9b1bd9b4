"""Matching what a caller said (a Vosk transcript or typed text) against catalog names.

Built for voice: accents, case and punctuation are ignored; words the recognizer splits or joins
("coate pec", "bocadelrio") still match; a word one letter off (same first letter, six letters or more) is
corrected. Indexes are built once per catalog, so lookups cost the same on 12 or 900 entries.
"""
from __future__ import annotations

import heapq
import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_NON_WORD = re.compile(r"[^a-z0-9]+")
FUZZY_MIN_LEN = 6
"""Shorter words are too easily confused with ordinary Spanish words to correct them."""


def normalize(text: str) -> str:
    """Lowercase, without accents or punctuation, single spaces: 'Boca del Río,' -> 'boca del rio'."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NON_WORD.sub(" ", plain).strip()


_NON_LETTER = re.compile(r"[^\w]+|[\d_]+")


def speech_form(text: str) -> str:
    """How a recognizer writes a phrase: lowercase words, accents kept, no punctuation or digits
    ('¿Boca del Río?' -> 'boca del río'). For ASR phrase lists and grammars."""
    return " ".join(_NON_LETTER.sub(" ", text.casefold()).split())


def tokens(text: str) -> list[str]:
    return normalize(text).split()


def dedupe(items: Iterable[str]) -> list[str]:
    """Items in order, without repeats that differ only in accents, case or punctuation."""
    seen: set[str] = set()
    out = []
    for item in items:
        key = normalize(item)
        if key and key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _deletes(word: str) -> set[str]:
    """The word and every form of it with one letter removed (symmetric-delete neighbourhood)."""
    return {word} | {word[:i] + word[i + 1:] for i in range(len(word))}


class FuzzyWords:
    """Finds a known word within one edit of a given word, starting with the same letter."""

    def __init__(self, words: Iterable[str]):
        self._by_delete: dict[str, set[str]] = defaultdict(set)
        for word in words:
            if len(word) >= FUZZY_MIN_LEN:
                for form in _deletes(word):
                    self._by_delete[form].add(word)

    def candidates(self, word: str) -> set[str]:
        """Known words within one edit (insert, delete or substitute one letter) that start alike."""
        if len(word) < FUZZY_MIN_LEN - 1:
            return set()
        found: set[str] = set()
        for form in _deletes(word):
            found |= self._by_delete.get(form, set())
        return {w for w in found if w[0] == word[0] and abs(len(w) - len(word)) <= 1}

    def correct(self, word: str) -> str | None:
        found = self.candidates(word)
        # several equally close words: do not guess
        return next(iter(found)) if len(found) == 1 else None


# ----------------------------------------------------------------------------------------------- names (cities)


@dataclass(frozen=True, slots=True)
class Mention:
    """Where a name was found in the caller's words; `origin` when said as the starting point ("desde Xalapa")."""

    key: str
    start: int
    end: int
    origin: bool
    fuzzy: bool
    matched: str


ORIGIN_MARKERS = (("desde",), ("saliendo", "de"), ("salgo", "de"), ("vengo", "de"), ("voy", "desde"))


class NameIndex:
    """Exact-phrase index of names (city names, synonyms, mis-hearings) to a key, scanned longest-first."""

    def __init__(self, phrases: Iterable[tuple[str, str]], blocked_contexts: dict[str, Sequence[tuple[str, ...]]]
                 | None = None, generic: Iterable[str] = ()):
        self._compact: dict[str, str] = {}
        self._longest = 1
        for phrase, key in phrases:
            words = tokens(phrase)
            if words:
                self._compact.setdefault("".join(words), key)
                self._longest = max(self._longest, len(words) + 1)  # +1: the recognizer may split a word
        self._fuzzy = FuzzyWords(self._compact)
        self._blocked = {"".join(tokens(k)): v for k, v in (blocked_contexts or {}).items()}
        # generic names ("el puerto") give way to a specific one right after them ("el puerto de Tuxpan")
        self._generic = {"".join(tokens(g)) for g in generic}

    def conflicts(self, phrases: Iterable[tuple[str, str]]) -> list[tuple[str, str, str]]:
        """(phrase, key, other key) for phrases that normalize to a name already owned by another key."""
        owner: dict[str, str] = {}
        out = []
        for phrase, key in phrases:
            compact = "".join(tokens(phrase))
            if compact in owner and owner[compact] != key:
                out.append((phrase, key, owner[compact]))
            owner.setdefault(compact, key)
        return out

    def mentions(self, text: str) -> list[Mention]:
        words = tokens(text)
        found: list[Mention] = []
        i = 0
        while i < len(words):
            hit = self._match_at(words, i)
            if hit is None:
                i += 1
                continue
            key, end, fuzzy, compact = hit
            if not self._is_blocked(compact, words, i):
                found.append(Mention(key, i, end, self._is_origin(words, i), fuzzy, compact))
            i = end
        return [m for k, m in enumerate(found) if not self._gives_way(m, found[k + 1:k + 2], words)]

    def _gives_way(self, mention: Mention, following: list[Mention], words: list[str]) -> bool:
        if mention.matched not in self._generic or not following:
            return False
        nxt = following[0]
        return nxt.start == mention.end + 1 and words[mention.end] in ("de", "del")

    def _match_at(self, words: list[str], i: int) -> tuple[str, int, bool, str] | None:
        top = min(len(words), i + self._longest)
        for end in range(top, i, -1):
            compact = "".join(words[i:end])
            key = self._compact.get(compact)
            if key is not None:
                return key, end, False, compact
        for end in range(min(top, i + 2), i, -1):  # fuzzy only on one or two words: cheap and safe
            compact = "".join(words[i:end])
            near = self._fuzzy.candidates(compact)
            keys = {self._compact[w] for w in near}
            if len(keys) == 1:  # several near names are fine if they all mean the same city
                corrected = min(near)
                return self._compact[corrected], end, True, corrected
        return None

    def _is_blocked(self, compact: str, words: list[str], i: int) -> bool:
        return any(tuple(words[max(0, i - len(ctx)):i]) == ctx for ctx in self._blocked.get(compact, ()))

    @staticmethod
    def _is_origin(words: list[str], i: int) -> bool:
        return any(tuple(words[max(0, i - len(m)):i]) == m for m in ORIGIN_MARKERS)


# ----------------------------------------------------------------------------------------------- ranked (trámites)

STOPWORDS = frozenset("""
a al algo alguna algun ante aqui asi ayuda bien buenas buenos busco cada como con cual cuales cuando cuanto
cuanta cuesta cuestan de del donde el ella en entonces es esa ese eso esta este esto favor gracias hace hacer
hago hay hola informacion la las le les lo los me mi mis necesito o otra otro para pero podria por porfavor
puedo que quiero quisiera requisito requisitos sacar saber se ser si sobre solicitar su sus tambien tengo
tramitar tramite tramites tu un una uno unos unas usted y ya yo
""".split())


def stem(word: str) -> str:
    """Crude Spanish plural folding ('placas' -> 'placa', 'penales' -> 'penal'), applied to both sides alike."""
    if len(word) > 4 and word.endswith("es") and word[-3] in "lrndzj":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def content_words(text: str) -> list[str]:
    """The words that carry meaning, plural-folded. 'tipo a' stays one word ('tipoa'): the letter is the point."""
    words = tokens(text)
    out = []
    for i, word in enumerate(words):
        if word == "tipo" and i + 1 < len(words) and len(words[i + 1]) == 1:
            out.append("tipo" + words[i + 1])
        elif len(word) == 1 and i > 0 and words[i - 1] == "tipo":
            continue
        elif word not in STOPWORDS:
            out.append(stem(word))
    return out


PREFIX_LEN = 6
"""Spanish verb and noun forms of one idea share their first letters: divorciar / divorcio, renovar / renovación."""


@dataclass(frozen=True, slots=True)
class RankedHit:
    """An entry (by position) with its score in [0, 1] and the phrase of that entry that matched best."""

    index: int
    score: float
    phrase: str


ENTRY_WEIGHT = 0.5
"""How much "the entry explains all the caller's words" counts against "one of its names fits what was said".
A score of 1 means both are complete: every word explained and one name said whole, with nothing else."""


class RankedIndex:
    """Weighted word-overlap ranking of entries that each have several phrases (name, spoken name, synonyms).

    A word shared by many entries ("licencia", "acta") weighs less than a distinctive one ("chofer"), so
    "licencia" alone leaves several entries close together (ambiguous) while "licencia de chofer" has one winner.
    """

    def __init__(self, entries: Sequence[Sequence[str]]):
        self._phrases: list[tuple[int, str, frozenset[str]]] = []
        doc_freq: dict[str, int] = defaultdict(int)
        entry_words: list[set[str]] = []
        for index, phrases in enumerate(entries):
            seen: set[str] = set()
            for phrase in phrases:
                words = frozenset(content_words(phrase))
                if words:
                    self._phrases.append((index, phrase, words))
                    seen |= words
            for word in seen:
                doc_freq[word] += 1
            entry_words.append(seen)
        total = max(len(entries), 1)
        self._weight = {w: math.log(1.0 + total / df) for w, df in doc_freq.items()}
        self._postings: dict[str, list[int]] = defaultdict(list)
        self._phrase_weight: list[float] = []
        for pos, (_, _, words) in enumerate(self._phrases):
            self._phrase_weight.append(sum(self._weight[w] for w in words))
            for word in words:
                self._postings[word].append(pos)
        self._entry_postings: dict[str, list[int]] = defaultdict(list)
        for index, seen_words in enumerate(entry_words):
            for word in seen_words:
                self._entry_postings[word].append(index)
        self._fuzzy = FuzzyWords(self._weight)
        self._by_prefix: dict[str, str] = {}
        for word in sorted(self._weight, key=lambda w: (len(w), w)):  # the shortest form speaks for its family
            if len(word) >= PREFIX_LEN:
                self._by_prefix.setdefault(word[:PREFIX_LEN], word)

    def query_words(self, text: str) -> list[str]:
        """The caller's content words, each mapped to a catalog word when one letter off or of the same family."""
        out = []
        for word in content_words(text):
            if word not in self._weight:
                word = self._fuzzy.correct(word) or (
                    self._by_prefix.get(word[:PREFIX_LEN], word) if len(word) > PREFIX_LEN else word)
            out.append(word)
        return out

    def rank(self, text: str, among: set[int] | None = None, limit: int | None = None) -> list[RankedHit]:
        """Entries sharing words with `text`, best first (at most `limit`). Score: the share of the caller's words
        the entry explains (weighted by rarity), and how well its best phrase fits (explains the words, said whole)."""
        words = {w for w in self.query_words(text) if w in self._weight}
        if not words:
            return []
        query_weight = sum(self._weight[w] for w in words)
        # how much of what the caller said the entry explains, with all its phrases together
        explained: dict[int, float] = defaultdict(float)
        matched: dict[int, float] = defaultdict(float)
        for word in words:
            weight = self._weight[word]
            for index in self._entry_postings[word]:
                explained[index] += weight
            for pos in self._postings[word]:
                matched[pos] += weight
        # the entry's best-fitting phrase: it explains the caller's words and was said completely;
        # plain floats here, objects only for the results
        best: dict[int, tuple[float, int]] = {}
        for pos, weight in matched.items():
            index = self._phrases[pos][0]
            if among is not None and index not in among:
                continue
            fit = (weight / query_weight + weight / self._phrase_weight[pos]) / 2
            if index not in best or fit > best[index][0]:
                best[index] = (fit, pos)
        order = ((-(ENTRY_WEIGHT * explained[index] / query_weight + (1 - ENTRY_WEIGHT) * fit), index, pos)
                 for index, (fit, pos) in best.items())
        top = heapq.nsmallest(limit, order) if limit is not None else sorted(order)
        return [RankedHit(index, round(-neg, 4), self._phrases[pos][1]) for neg, index, pos in top]
