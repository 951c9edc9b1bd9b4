"""Catalog files are edited by people: every mistake is reported with file, line, column, entry and key."""
from __future__ import annotations

from pathlib import Path

import pytest

from dialogs.catalog import CatalogError, load_cities, load_tramites, validate_catalog_file

CITY = """\
schema_version: 1
cities:
  - id: xalapa
    name: Xalapa
    spoken_name: Xalapa
    summary: La capital del estado.
    synonyms: [Jalapa]
    attractions:
      - {name: Museo de Antropología, description: Un museo.}
      - {name: Parque Juárez, description: Un parque.}
      - {name: Los Lagos, description: Un paseo.}
    foods:
      - {name: chile jalapeño, description: Un chile.}
      - {name: café, description: Café de altura.}
    festivals:
      - {name: Feria del libro, months: [4, 5], when: En primavera., description: Una feria.}
    access:
      from_veracruz: {summary: Por la carretera., roads: [carretera federal ciento cuarenta], duration: una hora}
    tourist_info:
      office: Oficina de turismo
      spoken: Acuda a la oficina de turismo.
"""

TRAMITES = """\
schema_version: 1
agencies:
  - {id: sefiplan, name: Secretaría de Finanzas y Planeación, spoken_name: la Secretaría de Finanzas}
tramites:
  - id: licencia-chofer
    name: Licencia de chofer
    spoken_name: licencia de chofer
    category: licencias
    agency: sefiplan
    requirements: [Identificación oficial.]
    cost: {kind: by_law, spoken: Lo fija la ley.}
    where: En las Oficinas de Hacienda.
    channels_start: [office]
    channels_finish: [office]
"""


def write(tmp_path: Path, text: str, name: str = "catalog.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors(path: Path) -> list:
    return [p for p in validate_catalog_file(path) if p.severity == "error"]


def test_the_minimal_fixtures_are_valid(tmp_path):
    assert validate_catalog_file(write(tmp_path, CITY)) == []
    assert validate_catalog_file(write(tmp_path, TRAMITES, "t.yml")) == []
    assert len(load_cities(write(tmp_path, CITY))) == 1


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = write(tmp_path, CITY.replace("    foods:\n", "    foods:\n   - [roto\n"))
    (problem,) = validate_catalog_file(path)
    assert problem.file.endswith("catalog.yml")
    assert problem.line is not None and 12 <= problem.line <= 16
    assert problem.column is not None
    assert "YAML mal formado" in problem.message
    with pytest.raises(CatalogError) as raised:
        load_cities(path)
    assert f"catalog.yml:{problem.line}:" in str(raised.value)


def test_unknown_key_points_at_the_misspelled_key(tmp_path):
    path = write(tmp_path, CITY.replace("    attractions:", "    atractions:"))
    found = errors(path)
    unknown = next(p for p in found if p.key == "cities[0].atractions")
    assert unknown.line == 8 and unknown.column == 5
    assert unknown.entry == "xalapa"
    assert "clave desconocida" in unknown.message
    missing = next(p for p in found if p.key == "cities[0].attractions")
    assert "falta" in missing.message


def test_comma_inside_a_flow_mapping_gets_a_hint(tmp_path):
    path = write(tmp_path, CITY.replace("description: Un parque.", "description: Un parque, con kiosco."))
    (problem,) = errors(path)
    assert problem.key == "cities[0].attractions[1].con kiosco."
    assert "comillas" in problem.message and problem.line == 10


def test_missing_key_names_entry_and_key(tmp_path):
    text = CITY.replace("    tourist_info:\n      office: Oficina de turismo\n      spoken: Acuda a la oficina de turismo.\n",
                        "")
    (problem,) = errors(write(tmp_path, text))
    assert problem.key == "cities[0].tourist_info" and problem.entry == "xalapa"
    assert problem.line == 3  # the entry that lacks it
    assert "falta" in problem.message


def test_too_few_attractions_and_a_month_out_of_range(tmp_path):
    text = CITY.replace("      - {name: Los Lagos, description: Un paseo.}\n", "").replace("months: [4, 5]",
                                                                                            "months: [4, 13]")
    found = {p.key: p for p in errors(write(tmp_path, text))}
    assert "mínimo 3" in found["cities[0].attractions"].message
    month = found["cities[0].festivals[0].months[1]"]
    assert month.line == 15 and "12" in month.message


def test_a_city_without_a_route_from_the_port_is_rejected(tmp_path):
    text = CITY.replace("id: xalapa", "id: perote").replace("synonyms: [Jalapa]", "synonyms: [Perote]")
    text = text.replace("      from_veracruz: {summary: Por la carretera., roads: [carretera federal ciento cuarenta], "
                        "duration: una hora}\n", "      from_xalapa: null\n")
    (problem,) = errors(write(tmp_path, text))
    assert problem.entry == "perote" and "from_xalapa" in problem.message


def test_duplicate_ids_across_entries(tmp_path):
    second = CITY.split("cities:\n", 1)[1].replace("synonyms: [Jalapa]", "synonyms: [Xalapa Enríquez]")
    found = errors(write(tmp_path, CITY + second))
    (problem,) = [p for p in found if p.key == "cities[1].id"]
    assert problem.line == 22 and "repetido" in problem.message


def test_a_name_cannot_belong_to_two_cities(tmp_path):
    second = CITY.split("cities:\n", 1)[1].replace("id: xalapa", "id: banderilla").replace(
        "name: Xalapa", "name: Banderilla").replace("spoken_name: Xalapa", "spoken_name: Banderilla").replace(
        "    access:\n", "    access:\n      from_xalapa: {summary: Cerca., roads: [libramiento], duration: veinte minutos}\n")
    (problem,) = errors(write(tmp_path, CITY + second))  # still says "Jalapa" as a synonym
    assert problem.entry == "banderilla" and "'Jalapa' ya pertenece a la ciudad 'xalapa'" in problem.message
    assert problem.line == 22


def test_duplicated_yaml_key_is_reported(tmp_path):
    text = CITY.replace("    name: Xalapa\n", "    name: Xalapa\n    name: Jalapa\n")
    (problem,) = errors(write(tmp_path, text))
    assert problem.key == "cities[0].name" and problem.line == 5 and "repetida" in problem.message


def test_spoken_texts_with_digits_or_abbreviations_are_warnings_not_errors(tmp_path):
    text = CITY.replace("duration: una hora", "duration: 90 min. aprox.")
    path = write(tmp_path, text)
    warnings = [p for p in validate_catalog_file(path) if p.severity == "warning"]
    assert {p.key for p in warnings} == {"cities[0].access.from_veracruz.duration"}
    assert any("cifras" in p.message for p in warnings) and any("abreviaturas" in p.message for p in warnings)
    assert "(aviso)" in str(warnings[0])
    assert len(load_cities(path)) == 1  # a warning does not stop the service


def test_tramite_with_unknown_agency(tmp_path):
    (problem,) = errors(write(tmp_path, TRAMITES.replace("agency: sefiplan", "agency: sefiplna")))
    assert problem.key == "tramites[0].agency" and problem.line == 9 and problem.entry == "licencia-chofer"


def test_phone_channel_needs_phone_fields(tmp_path):
    (problem,) = errors(write(tmp_path, TRAMITES.replace("channels_start: [office]", "channels_start: [phone, office]")))
    assert problem.key == "tramites[0]" and "phone_start" in problem.message


def test_channel_must_be_known_and_not_repeated(tmp_path):
    found = errors(write(tmp_path, TRAMITES.replace("channels_finish: [office]", "channels_finish: [fax, office]")))
    assert found[0].key == "tramites[0].channels_finish[0]" and found[0].line == 14
    found = errors(write(tmp_path, TRAMITES.replace("channels_finish: [office]", "channels_finish: [office, office]")))
    assert "repetido" in found[0].message


def test_fixed_cost_needs_an_amount_and_other_kinds_must_not_have_one(tmp_path):
    found = errors(write(tmp_path, TRAMITES.replace("kind: by_law", "kind: fixed")))
    assert found[0].key == "tramites[0].cost" and "amount_mxn" in found[0].message
    found = errors(write(tmp_path, TRAMITES.replace("kind: by_law,", "kind: by_law, amount_mxn: 500,")))
    assert "amount_mxn" in found[0].message


def test_bad_missing_items_template(tmp_path):
    text = TRAMITES + '    missing_items_template: "Le falta {documentos}"\n'
    (problem,) = errors(write(tmp_path, text))
    assert problem.key == "tramites[0].missing_items_template" and "{faltantes}" in problem.message


def test_bad_slug(tmp_path):
    (problem,) = errors(write(tmp_path, TRAMITES.replace("id: licencia-chofer", "id: Licencia Chofer")))
    assert problem.key == "tramites[0].id" and "minúsculas" in problem.message


def test_file_level_problems(tmp_path):
    assert "no existe" in validate_catalog_file(tmp_path / "nada.yml")[0].message
    assert "vacío" in validate_catalog_file(write(tmp_path, "# sólo un comentario\n"))[0].message
    assert "mapa" in validate_catalog_file(write(tmp_path, "- a\n- b\n"))[0].message
    latin1 = tmp_path / "latin1.yml"
    latin1.write_bytes("schema_version: 1\ncities: [Córdoba]\n".encode("latin-1"))
    assert "UTF-8" in validate_catalog_file(latin1)[0].message
    wrong_version = errors(write(tmp_path, CITY.replace("schema_version: 1", "schema_version: 2")))
    assert wrong_version[0].key == "schema_version" and wrong_version[0].line == 1


def test_load_raises_with_every_error_listed(tmp_path):
    text = TRAMITES.replace("agency: sefiplan", "agency: nadie").replace("channels_finish: [office]",
                                                                        "channels_finish: []")
    with pytest.raises(CatalogError) as raised:
        load_tramites(write(tmp_path, text))
    assert len(raised.value.problems) >= 1
    assert "tramites[0].channels_finish" in str(raised.value)
