"""A SYNTHETIC trámite catalog of any size (900 by default), for tests and benchmarks only.

The entries are invented combinations ("Permiso temporal de apiario") under invented agencies; the file says
`synthetic: true` and every id starts with `sint-`. It exists to prove that the real schema, loader and lookups
hold at the size of the state's full catalog. Never ship it as data and never read it to a caller.

    python -m dialogs.catalog_gen --count 900 --out var/catalog/tramites-900.yml
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

import yaml

from dialogs.catalog_match import normalize

SYNTHETIC_PREFIX = "sint-"
DEFAULT_COUNT = 900

_KINDS = ("Permiso", "Licencia", "Constancia", "Certificado", "Registro", "Renovación de permiso",
          "Reposición de constancia", "Baja de registro", "Inscripción", "Autorización", "Dictamen", "Copia certificada")
_OBJECTS = ("pesca deportiva", "transporte escolar", "anuncio espectacular", "establecimiento comercial",
            "obra menor", "evento público", "venta de alimentos", "pozo de agua", "taller mecánico", "vivero",
            "apiario", "granja acuícola", "ruta de carga", "quema agrícola", "hospedaje rural", "guía de turistas",
            "mercado regional", "feria ganadera", "aprovechamiento forestal", "banco de arena", "servicio de grúa",
            "ambulancia privada", "estación de servicio", "panteón privado", "rastro municipal", "farmacia",
            "escuela particular", "guardería", "gimnasio", "estacionamiento público")
_QUALIFIERS = ("", "temporal", "para persona moral")
_REQUIREMENTS = ("Identificación oficial con fotografía.", "CURP.", "Comprobante de domicilio reciente.",
                 "Acta constitutiva, si es persona moral.", "Croquis de ubicación.", "El pago de derechos.",
                 "Fotografías del lugar.", "Dictamen de protección civil.", "Constancia de situación fiscal.",
                 "Solicitud por escrito.")
_CHANNELS = ("web", "office", "kiosk")


def _name(kind: str, obj: str, qualifier: str) -> str:
    return f"{kind} {qualifier + ' ' if qualifier else ''}de {obj}".replace("  ", " ")


def _slug(text: str) -> str:
    return normalize(text).replace(" ", "-")


def generate_catalog(count: int = DEFAULT_COUNT, seed: int = 0) -> dict[str, Any]:
    """The document of a synthetic catalog with `count` trámites (deterministic for a given seed)."""
    combos = [(k, o, q) for k in _KINDS for o in _OBJECTS for q in _QUALIFIERS]
    if count > len(combos):
        raise ValueError(f"a lo más {len(combos)} trámites sintéticos distintos")
    rng = random.Random(seed)
    rng.shuffle(combos)
    agencies = [{"id": f"{SYNTHETIC_PREFIX}dependencia-{i}", "name": f"Dependencia sintética {i}",
                 "spoken_name": f"la dependencia sintética {i}"} for i in range(1, 21)]
    tramites = []
    for index, (kind, obj, qualifier) in enumerate(combos[:count]):
        name = _name(kind, obj, qualifier)
        channels_start = sorted(rng.sample(_CHANNELS, rng.randint(1, 3)))
        channels_finish = sorted(rng.sample(_CHANNELS, rng.randint(1, 3)))
        entry: dict[str, Any] = {
            "id": SYNTHETIC_PREFIX + _slug(name),
            "name": name,
            "spoken_name": name.lower(),
            "synonyms": _synonyms(kind, obj, qualifier),
            "category": obj,
            "agency": agencies[index % len(agencies)]["id"],
            "requirements": rng.sample(_REQUIREMENTS, rng.randint(2, 5)),
            "cost": _cost(rng),
            "where": f"En las oficinas de {agencies[index % len(agencies)]['spoken_name']}.",
            "channels_start": channels_start,
            "channels_finish": channels_finish,
        }
        if index % 4 == 0:
            entry["channels_start"] = ["phone", *channels_start]
            entry["phone_start"] = {
                "fields": [
                    {"name": "curp", "kind": "curp", "prompt": "Dígame su CURP, letra por letra."},
                    {"name": "nombre_completo", "kind": "full_name", "prompt": "¿Cuál es su nombre completo?"},
                ],
                "next_step": "Con su folio y su PIN, termine el trámite en el portal web o en la oficina.",
            }
        if index % 7 == 0:
            entry["hours"] = "De lunes a viernes, en horario de oficina."
        tramites.append(entry)
    return {"schema_version": 1, "synthetic": True, "agencies": agencies, "tramites": tramites}


def _synonyms(kind: str, obj: str, qualifier: str) -> list[str]:
    words = kind.lower().split()
    out = [f"{words[0]} de {obj}", f"{obj} {qualifier}".strip(), f"tramitar {words[0]} de {obj}"]
    if qualifier:
        out.append(f"{words[0]} {qualifier} de {obj}")
    unique: dict[str, str] = {}
    for synonym in out:
        unique.setdefault(normalize(synonym), synonym)
    return list(unique.values())


def _cost(rng: random.Random) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.2:
        return {"kind": "free", "spoken": "No tiene costo."}
    if roll < 0.5:
        amount = rng.randrange(100, 5000, 50)
        return {"kind": "fixed", "amount_mxn": amount, "spoken": f"Cuesta {amount} pesos, dato sintético."}
    return {"kind": "by_law", "spoken": "El costo lo fija la ley de derechos vigente; dato sintético."}


def write_catalog(path: Path | str, count: int = DEFAULT_COUNT, seed: int = 0) -> Path:
    """Write a synthetic catalog as YAML at `path` (with a header that says what it is)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    body = yaml.dump(generate_catalog(count, seed), Dumper=dumper, allow_unicode=True, sort_keys=False, width=120)
    header = ("# SINTÉTICO: catálogo generado por dialogs/catalog_gen.py para pruebas y mediciones.\n"
              "# No son trámites reales. No se publica ni se lee a quien llama.\n")
    path.write_text(header + body, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(write_catalog(args.out, args.count, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
