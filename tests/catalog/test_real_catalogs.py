"""The shipped catalogs (nlu_data/cities.yml and tramites.yml) are valid and complete enough to answer callers."""
from __future__ import annotations

import re

import pytest

from dialogs.catalog import (
    DEFAULT_CITIES_PATH,
    DEFAULT_TRAMITES_PATH,
    CityCatalog,
    TramiteCatalog,
    load_cities,
    load_tramites,
    validate_catalog_file,
)
from dialogs.catalog_match import normalize

CITY_IDS = {"xalapa", "veracruz", "boca-del-rio", "coatepec", "xico", "papantla", "orizaba", "cordoba",
            "tlacotalpan", "catemaco", "coatzacoalcos", "tuxpan"}


@pytest.fixture(scope="module")
def cities() -> CityCatalog:
    return load_cities()


@pytest.fixture(scope="module")
def tramites() -> TramiteCatalog:
    return load_tramites()


@pytest.mark.parametrize("path", [DEFAULT_CITIES_PATH, DEFAULT_TRAMITES_PATH], ids=["cities", "tramites"])
def test_shipped_files_have_no_errors_and_no_spoken_style_warnings(path):
    problems = validate_catalog_file(path)
    assert problems == [], "\n".join(map(str, problems))


def test_the_twelve_cities_are_there(cities):
    assert {c.id for c in cities.cities} == CITY_IDS


def test_every_city_has_enough_content_to_answer(cities):
    for city in cities.cities:
        assert len(city.attractions) >= 3, city.id
        assert len(city.foods) >= 2, city.id
        assert city.festivals, city.id
        for festival in city.festivals:
            assert festival.months and all(1 <= m <= 12 for m in festival.months), (city.id, festival.name)
            assert festival.when
        assert city.tourist_info.spoken, city.id


def test_every_city_says_how_to_get_there_from_xalapa_and_from_the_port(cities):
    for city in cities.cities:
        if city.id != "xalapa":
            route = city.access.from_xalapa
            assert route is not None and route.roads and route.duration, city.id
        if city.id != "veracruz":
            route = city.access.from_veracruz
            assert route is not None and route.roads and route.duration, city.id


def test_well_known_festival_months(cities):
    def months(city_id: str, word: str) -> list[int]:
        city = cities.get(city_id)
        assert city is not None
        festival = next(f for f in city.festivals if word in normalize(f.name))
        return festival.months

    assert 2 in months("tlacotalpan", "candelaria")
    assert months("papantla", "cumbre tajin") == [3]
    assert months("xico", "magdalena") == [7]
    assert set(months("veracruz", "carnaval")) <= {2, 3}


def test_no_unverified_contact_details_were_invented(cities):
    """Phones and opening hours are left out unless verified; none of the shipped entries claims one."""
    for city in cities.cities:
        assert city.tourist_info.phone is None, city.id
        assert city.tourist_info.hours is None, city.id


def test_at_least_forty_real_tramites_each_answerable(tramites):
    assert len(tramites) >= 40
    assert not tramites.synthetic
    for t in tramites.tramites:
        assert t.agency in tramites.agencies, t.id
        assert t.requirements, t.id
        assert t.channels_start and t.channels_finish, t.id
        assert t.cost.spoken, t.id
        assert t.where, t.id


def test_required_tramite_families_are_covered(tramites):
    ids = {t.id for t in tramites.tramites}
    for needed in ("licencia-automovilista", "licencia-chofer", "licencia-motociclista", "licencia-renovacion",
                   "licencia-reposicion", "placas-alta", "placas-baja", "derechos-control-vehicular", "tenencia",
                   "tarjeta-circulacion", "acta-nacimiento-copia", "acta-matrimonio-copia", "acta-defuncion-copia",
                   "acta-foranea", "curp-orientacion", "constancia-antecedentes-penales", "no-inhabilitacion",
                   "registro-nacimiento", "divorcio-administrativo", "apostilla", "legalizacion-firmas",
                   "certificado-libertad-gravamen", "impuesto-nomina", "impuesto-hospedaje"):
        assert needed in ids, needed


def test_amounts_are_only_given_when_fixed_and_free_ones_say_so(tramites):
    for t in tramites.tramites:
        if t.cost.kind != "fixed":
            assert t.cost.amount_mxn is None
            assert not re.search(r"\$|\d", t.cost.spoken), t.id
    assert tramites.get("registro-nacimiento").cost.kind == "free"  # type: ignore[union-attr]


def test_phone_startable_tramites_say_what_to_collect_and_how_to_finish(tramites):
    startable = tramites.phone_startable()
    assert len(startable) >= 8
    for t in startable:
        assert t.phone_start is not None
        assert t.phone_start.fields and t.phone_start.next_step
        assert "phone" not in t.channels_finish or t.id  # finishing always needs web, kiosk or office
        assert set(t.channels_finish) & {"web", "office", "kiosk"}, t.id


def test_missing_items_are_said_with_the_template(tramites):
    t = tramites.get("licencia-automovilista")
    assert t is not None
    text = tramites.missing_items_text(t, ["la constancia de tipo de sangre", "el comprobante de domicilio"])
    assert text == ("Para que le entreguen su licencia de automovilista, todavía le falta: la constancia de tipo de "
                    "sangre y el comprobante de domicilio.")
    other = tramites.get("tenencia")
    assert other is not None
    assert tramites.missing_items_text(other, ["el pago"]) == (
        "Para terminar su trámite de pago de la tenencia, todavía le falta: el pago.")
