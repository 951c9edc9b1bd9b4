"""Catalog lookup latency: the real catalogs against a synthetic 900-entry trámite catalog.

Prints load time and p50 / p95 / max per lookup (find_city, find_festivals, find_tramites, get) for each catalog.
The goal behind it: a dialogue action answers in < 20 ms, so a lookup should cost well under 1 ms.

    .venv/bin/python bench/catalog.py [--rounds 200] [--count 900]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dialogs.catalog import load_cities, load_tramites  # noqa: E402
from dialogs.catalog_gen import write_catalog  # noqa: E402

CITY_QUERIES = ("¿qué hay que ver en Papantla?", "que se come en jalapa", "como llego a catemaco desde xalapa",
                "boca del rio", "el puerto de tuxpan", "coate pec", "katemako", "hola buenas tardes")
FESTIVAL_QUERIES = ("¿cuándo es la feria de la Candelaria?", "cuando es la feria en coatepec", "la xiqueñada")
REAL_TRAMITE_QUERIES = ("¿qué necesito para sacar la licencia?", "licencia de chofer", "renovar mi licencia",
                        "acta de nacimiento", "carta de no antecedentes penales", "me robaron las placas",
                        "licencia de motosiclista", "hola buenas tardes")
SYNTHETIC_TRAMITE_QUERIES = ("permiso de apiario", "constancia temporal de farmacia", "licencia", "gimnasio",
                             "licensia de guarderia", "copia certificada de panteon privado para persona moral",
                             "registro", "hola buenas tardes")


def measure(fn: Callable[[str], object], queries: Sequence[str], rounds: int) -> list[float]:
    """Milliseconds per call, every query `rounds` times (one warm-up round first)."""
    for query in queries:
        fn(query)
    times = []
    for _ in range(rounds):
        for query in queries:
            start = time.perf_counter()
            fn(query)
            times.append((time.perf_counter() - start) * 1000)
    return times


def report(label: str, times: list[float]) -> None:
    ordered = sorted(times)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    print(f"{label:<42} n={len(times):>6}  p50={statistics.median(times):7.3f} ms  p95={p95:7.3f} ms  "
          f"max={ordered[-1]:7.3f} ms")


T = TypeVar("T")


def timed_load(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = fn()
    return value, (time.perf_counter() - start) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="catalog lookup latency")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--count", type=int, default=900, help="entries in the synthetic catalog")
    args = parser.parse_args(argv)

    cities, ms = timed_load(load_cities)
    print(f"load cities.yml ({len(cities)} cities)".ljust(42), f"{ms:8.1f} ms")
    real, ms = timed_load(load_tramites)
    print(f"load tramites.yml ({len(real)} trámites)".ljust(42), f"{ms:8.1f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_catalog(Path(tmp) / "synthetic.yml", args.count)
        synthetic, ms = timed_load(lambda: load_tramites(path))
    print(f"load synthetic ({len(synthetic)} trámites)".ljust(42), f"{ms:8.1f} ms")
    print()
    report("find_city (12 cities)", measure(cities.find_city, CITY_QUERIES, args.rounds))
    report("find_festivals", measure(cities.find_festivals, FESTIVAL_QUERIES, args.rounds))
    report(f"find_tramites real ({len(real)})", measure(real.find_tramites, REAL_TRAMITE_QUERIES, args.rounds))
    report(f"find_tramites synthetic ({len(synthetic)})",
           measure(synthetic.find_tramites, SYNTHETIC_TRAMITE_QUERIES, args.rounds))
    ids = [t.id for t in synthetic.tramites[:: max(1, len(synthetic) // 20)]]
    report(f"get(id) synthetic ({len(synthetic)})", measure(synthetic.get, ids, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
