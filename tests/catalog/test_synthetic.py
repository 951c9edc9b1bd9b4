"""The generated 900-entry catalog (synthetic, tests only) passes the real schema and answers like the real one."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dialogs.catalog import TramiteCatalog, load_tramites, validate_catalog_file
from dialogs.catalog_gen import SYNTHETIC_PREFIX, generate_catalog, main, write_catalog


@pytest.fixture(scope="module")
def path_900(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalog(tmp_path_factory.mktemp("catalog") / "tramites-900.yml", 900)


@pytest.fixture(scope="module")
def catalog_900(path_900: Path) -> TramiteCatalog:
    return load_tramites(path_900)


def test_it_is_clearly_marked_synthetic(path_900, catalog_900):
    text = path_900.read_text(encoding="utf-8")
    assert text.startswith("# SINTÉTICO")
    assert yaml.safe_load(text)["synthetic"] is True
    assert catalog_900.synthetic
    assert all(t.id.startswith(SYNTHETIC_PREFIX) for t in catalog_900.tramites)


def test_900_entries_pass_the_same_schema(path_900, catalog_900):
    assert validate_catalog_file(path_900) == []
    assert len(catalog_900) == 900
    assert len({t.id for t in catalog_900.tramites}) == 900
    assert len(catalog_900.phone_startable()) == 225


def test_generation_is_deterministic_and_bounded():
    assert generate_catalog(50, seed=3) == generate_catalog(50, seed=3)
    assert generate_catalog(50, seed=3) != generate_catalog(50, seed=4)
    with pytest.raises(ValueError):
        generate_catalog(100_000)


def test_lookups_on_900_entries(catalog_900):
    some = catalog_900.tramites[123]
    assert catalog_900.get(some.id) is some
    found = catalog_900.resolve(some.name)
    assert found.best is not None and found.best.id == some.id
    assert catalog_900.resolve(some.spoken_name.upper()).best is some
    broad = catalog_900.find_tramites("gimnasio")
    assert len(broad) > 1 and all("gimnasio" in m.tramite.name for m in broad)
    assert catalog_900.resolve("hola buenas tardes").not_found


def test_the_real_and_synthetic_catalogs_do_not_mix(catalog_900):
    real = load_tramites()
    assert not any(t.id.startswith(SYNTHETIC_PREFIX) for t in real.tramites)
    assert catalog_900.get("licencia-chofer") is None


def test_command_line(tmp_path, capsys):
    out = tmp_path / "t.yml"
    assert main(["--count", "30", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert len(load_tramites(out)) == 30
