"""dialogs.catalog_search on the real catalog and on the 900-entry synthetic one (precision is measured in
bench/catalog_search.py; these pin the behaviours the actions rely on)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dialogs.catalog import TramiteCatalog, load_tramites
from dialogs.catalog_gen import write_catalog
from dialogs.catalog_search import (
    Candidate,
    close_candidates,
    disambiguation_question,
    search,
    with_article,
)


@pytest.fixture(scope="module")
def real() -> TramiteCatalog:
    return load_tramites()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> TramiteCatalog:
    path = write_catalog(Path(tmp_path_factory.mktemp("catalog")) / "tramites-900.yml", count=900)
    return load_tramites(path)


@pytest.mark.parametrize(("said", "expected"), [
    ("me robaron las placas del carro", "placas-reposicion"),
    ("oiga quiero dar de baja mi coche", "placas-baja"),
    ("compré una camioneta usada y quiero ponerla a mi nombre", "cambio-propietario"),
    ("se me perdio la licencia de manejo", "licencia-reposicion"),
    ("se me venció la licencia", "licencia-renovacion"),
    ("quiero apostiyar mi titulo", "apostilla"),               # a misheard word
    ("quiero saber si una casa tiene hipoteca", "certificado-libertad-gravamen"),
    ("nos queremos casar por el civil", "matrimonio-civil"),
])
def test_everyday_words_find_the_entry(real: TramiteCatalog, said: str, expected: str) -> None:
    hits = search(real, said)
    assert hits and hits[0].tramite.id == expected, [(h.tramite.id, h.score) for h in hits]
    assert 0 < hits[0].score <= 1


def test_nothing_fits_gives_no_candidate(real: TramiteCatalog) -> None:
    assert search(real, "cuanto cuesta una pizza hawaiana") == []
    assert search(real, "") == []
    assert search(real, None) == []
    assert search(real, "   ") == []


def test_an_entry_id_resolves_directly(real: TramiteCatalog) -> None:
    hits = search(real, "tenencia")
    assert hits[0].tramite.id == "tenencia"
    direct = search(real, "acta-nacimiento-copia")
    assert [(c.tramite.id, c.score) for c in direct] == [("acta-nacimiento-copia", 1.0)]


def test_k_bounds_the_results_best_first(real: TramiteCatalog) -> None:
    hits = search(real, "acta", k=5)
    assert 1 < len(hits) <= 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(search(real, "acta", k=1)) == 1


def test_a_family_word_asks_which_one(real: TramiteCatalog) -> None:
    close = close_candidates(search(real, "la licencia"))
    assert len(close) > 1 and all(c.tramite.id.startswith("licencia") for c in close)
    question = disambiguation_question(close)
    assert question.startswith("¿Se refiere ") and " o " in question and question.endswith("?")


def test_a_clear_answer_does_not_ask(real: TramiteCatalog) -> None:
    assert len(close_candidates(search(real, "constancia de antecedentes penales"))) == 1


def test_spoken_question_articles() -> None:
    assert with_article("acta de nacimiento") == "el acta de nacimiento"
    assert with_article("copia certificada del acta") == "la copia certificada del acta"
    assert with_article("placas nuevas") == "las placas nuevas"
    assert with_article("registro de nacimiento") == "el registro de nacimiento"
    assert with_article("renovar una licencia") == "renovar una licencia"


def test_question_between_two_and_three(real: TramiteCatalog) -> None:
    def labelled(tramite_id: str, label: str) -> Candidate:
        entry = real.get(tramite_id)
        assert entry is not None
        return Candidate(entry.model_copy(update={"short_label": label}), 0.8, label)

    copy, fix = labelled("acta-nacimiento-copia", "copia certificada del acta"), labelled("aclaracion-acta",
                                                                                         "aclaración del acta")
    assert disambiguation_question([copy, fix]) == \
        "¿Se refiere a la copia certificada del acta o a la aclaración del acta?"
    plates = labelled("placas-alta", "alta de placas")
    assert disambiguation_question([copy, fix, plates]) == \
        "¿Se refiere a la copia certificada del acta, a la aclaración del acta o al alta de placas?"
    assert disambiguation_question([copy]) == "¿Se refiere a la copia certificada del acta?"
    assert disambiguation_question([]) == "¿Qué trámite busca?"


@pytest.mark.parametrize(("said", "expected"), [
    ("quiero el permiso para tener colmenas de abejas", "sint-permiso-de-apiario"),
    ("ocupo la licencia para abrir una gasolinera para mi empresa", "sint-licencia-para-persona-moral-de-estacion-de-servicio"),
    ("perdi la constancia de mi gimasio", "sint-reposicion-de-constancia-de-gimnasio"),
])
def test_synthetic_catalog_by_meaning(synthetic: TramiteCatalog, said: str, expected: str) -> None:
    ids = [c.tramite.id for c in search(synthetic, said, k=3)]
    assert expected in ids, ids


def test_a_misheard_word_ranks_the_same_in_every_process() -> None:
    """A misheard word can tie between two catalog words ("casar": "casa" and "casarse"); the tie is broken by
    the words themselves, not by set order, which changes with the hash seed of the process."""
    code = ("from dialogs.catalog import load_tramites\nfrom dialogs.catalog_search import search\n"
            "print(search(load_tramites(), 'nos queremos casar por el civil')[0].tramite.id)")
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip()
            for seed in (1, 2, 3)}
    assert seen == {"matrimonio-civil"}
