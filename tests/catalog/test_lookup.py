"""Finding cities, festivals and trámites from what callers say (typed or as a Vosk transcript)."""
from __future__ import annotations

import pytest

from dialogs.catalog import CityCatalog, TramiteCatalog, load_cities, load_tramites, spoken_list
from dialogs.catalog_match import normalize, speech_form, stem


@pytest.fixture(scope="module")
def cities() -> CityCatalog:
    return load_cities()


@pytest.fixture(scope="module")
def tramites() -> TramiteCatalog:
    return load_tramites()


def test_normalize_drops_accents_case_and_punctuation():
    assert normalize("¿Boca del Río, Veracruz?") == "boca del rio veracruz"
    assert normalize("  XALAPA-Enríquez ") == "xalapa enriquez"
    assert stem("placas") == "placa" and stem("penales") == "penal" and stem("acta") == "acta"


@pytest.mark.parametrize("said, city_id", [
    ("¿qué hay que ver en Papantla?", "papantla"),
    ("que se come en jalapa", "xalapa"),
    ("Xalapa", "xalapa"),
    ("boca del rio", "boca-del-rio"),
    ("BOCA DEL RÍO", "boca-del-rio"),
    ("vamos a boca", "boca-del-rio"),
    ("qué hay en el puerto", "veracruz"),
    ("el tajín", "papantla"),
    ("tajin", "papantla"),
    ("papantla de olarte", "papantla"),
    ("la pluviosilla", "orizaba"),
    ("coatza", "coatzacoalcos"),
    ("túxpam", "tuxpan"),
    ("tlacotalpan", "tlacotalpan"),
    ("quiero ir a xico", "xico"),
    ("jico", "xico"),
])
def test_names_synonyms_and_mishearings(cities, said, city_id):
    city = cities.find_city(said)
    assert city is not None and city.id == city_id


@pytest.mark.parametrize("said, city_id", [
    ("coate pec", "coatepec"),            # the recognizer split one word in two
    ("bocadelrio", "boca-del-rio"),       # or joined three
    ("orisaba", "orizaba"),               # listed mis-hearing
    ("katemaco", "catemaco"),
    ("tuspan", "tuxpan"),
    ("cordova", "cordoba"),
    ("tlacotalpa", "tlacotalpan"),
    ("coatzacoalco", "coatzacoalcos"),
    ("catemako", "catemaco"),             # not listed: one letter off, corrected
    ("orisava", "orizaba"),               # not listed: one letter off from a listed mis-hearing
])
def test_tolerates_vosk_style_errors(cities, said, city_id):
    city = cities.find_city(said)
    assert city is not None and city.id == city_id


def test_origin_and_destination_in_one_sentence(cities):
    said = "¿cómo llego a Catemaco desde Xalapa?"
    assert cities.find_city(said).id == "catemaco"  # type: ignore[union-attr]
    assert cities.find_origin(said).id == "xalapa"  # type: ignore[union-attr]
    assert cities.find_city("desde el puerto como llego a xico").id == "xico"  # type: ignore[union-attr]
    assert cities.find_origin("desde el puerto como llego a xico").id == "veracruz"  # type: ignore[union-attr]


def test_a_specific_port_wins_over_the_generic_one(cities):
    assert cities.find_city("el puerto de Tuxpan").id == "tuxpan"  # type: ignore[union-attr]
    assert cities.find_city("puerto de coatzacoalcos").id == "coatzacoalcos"  # type: ignore[union-attr]
    assert [m.key for m in cities.mentions("el puerto de Tuxpan")] == ["tuxpan"]


def test_the_state_is_not_the_port(cities):
    assert cities.find_city("trámites del estado de Veracruz") is None
    assert cities.find_city("Universidad Veracruzana") is None


def test_no_city_in_unrelated_speech(cities):
    for said in ("hola buenas tardes", "quiero hablar con un agente", "", "   ", "¿¿??", "chico"):
        assert cities.find_city(said) is None, said


def test_festival_questions(cities):
    found = cities.find_festivals("¿cuándo es la feria de la Candelaria?")
    assert [(m.city.id, m.festival.name) for m in found] == [("tlacotalpan", "Fiesta de la Candelaria")]
    assert cities.find_festivals("la cumbre tajín")[0].city.id == "papantla"
    assert cities.find_festivals("cuándo es la xiqueñada")[0].city.id == "xico"
    # a city in the question limits the festivals to that city
    assert cities.find_festivals("cuando es la feria en coatepec")[0].festival.name == "Feria del Café"
    assert cities.find_festivals("y cuando es la fiesta", city=cities.get("orizaba"))[0].festival.name == (
        "Fiesta de San Miguel Arcángel")
    assert cities.find_festivals("hola") == []
    # the city's own name is not a festival word
    assert cities.find_festivals("¿cómo llego a Catemaco desde Jalapa?") == []
    assert cities.find_festivals("los brujos de Catemaco")[0].festival.name == "Reunión de brujos"
    assert cities.find_festivals("el carnaval de Veracruz")[0].festival.name == "Carnaval de Veracruz"
    assert cities.find_festivals("los Tratados de Córdoba")[0].city.id == "cordoba"


def test_phrase_lists_for_asr_and_rasa(cities, tramites):
    assert len(cities.spoken_names()) == 12
    phrases = [normalize(p) for p in cities.all_phrases()]
    assert "jalapa" in phrases and "el tajin" in phrases and len(phrases) == len(set(phrases))
    assert len(tramites.spoken_names()) == len(tramites)
    assert "licencia de chofer" in [normalize(p) for p in tramites.all_phrases()]
    asr = cities.asr_phrases()
    assert "boca del río" in asr and "el tajín" in asr and "jalapa" in asr
    assert all(p == p.lower() and not any(ch in p for ch in ",.¿?0123456789") for p in asr + tramites.asr_phrases())
    assert speech_form("¿Boca del Río, Veracruz?") == "boca del río veracruz"


# --------------------------------------------------------------------------------------------- trámites


@pytest.mark.parametrize("said, tramite_id", [
    ("licencia de chofer", "licencia-chofer"),
    ("quiero sacar la licencia de motociclista", "licencia-motociclista"),
    ("renovar mi licencia", "licencia-renovacion"),
    ("se me venció la licencia", "licencia-renovacion"),
    ("perdí mi licencia", "licencia-reposicion"),
    ("¿qué necesito para sacar mi acta de nacimiento?", "acta-nacimiento-copia"),
    ("acta de matrimonio", "acta-matrimonio-copia"),
    ("carta de no antecedentes penales", "constancia-antecedentes-penales"),
    ("constancia de antecedentes", "constancia-antecedentes-penales"),
    ("me robaron las placas", "placas-reposicion"),
    ("¿cuánto cuesta la tenencia?", "tenencia"),
    ("pagar el refrendo", "derechos-control-vehicular"),
    ("certificado de libertad de gravamen", "certificado-libertad-gravamen"),
    ("apostillar mi acta", "apostilla"),
    ("impuesto sobre nómina", "impuesto-nomina"),
    ("divorcio administrativo", "divorcio-administrativo"),
    ("carta de no inhabilitación", "no-inhabilitacion"),
    ("quiero sacar mi curp", "curp-orientacion"),
    ("acta foránea", "acta-foranea"),
    ("licencia de motosiclista", "licencia-motociclista"),  # one letter off
    ("LICENCIA DE CHOFER", "licencia-chofer"),
    ("licencia-chofer", "licencia-chofer"),                 # an id (Rasa synonym value) resolves directly
    ("quiero sacar mi licencia de manejo para carro", "licencia-automovilista"),  # words from two synonyms
    ("me quiero divorciar", "divorcio-administrativo"),     # same word family as "divorcio"
    ("licencia de conducir tipo a", "licencia-transporte-publico"),  # the letter decides
    ("licencia tipo c", "licencia-automovilista"),
    ("renovación de mi licencia", "licencia-renovacion"),
])
def test_clear_requests_give_one_trámite(tramites, said, tramite_id):
    found = tramites.resolve(said)
    assert not found.ambiguous, [m.tramite.id for m in found.matches]
    assert found.best is not None and found.best.id == tramite_id


def test_bare_licence_is_ambiguous_and_asks_a_short_question(tramites):
    found = tramites.resolve("¿qué necesito para sacar la licencia?")
    assert found.ambiguous
    ids = [m.tramite.id for m in found.matches]
    assert {"licencia-automovilista", "licencia-chofer", "licencia-motociclista"} <= set(ids)
    question = tramites.disambiguation_question(found.matches)
    assert question.startswith("¿") and question.endswith("?")
    assert "licencia de automovilista" in question and "licencia de chofer" in question
    assert question.count(",") <= 3  # at most three options and "u otro"


def test_licence_type_question_then_answer(tramites):
    first = tramites.resolve("cuánto cuesta la licencia de manejo")
    assert first.ambiguous and len(first.matches) == 3
    assert tramites.disambiguation_question(first.matches) == (
        "¿Cuál trámite busca: licencia de automovilista, licencia de chofer o licencia de motociclista?")
    answer = tramites.resolve("la de chofer", among=[m.tramite.id for m in first.matches])
    assert answer.best is not None and answer.best.id == "licencia-chofer"


def test_placas_alone_is_ambiguous(tramites):
    ids = {m.tramite.id for m in tramites.find_tramites("placas")}
    assert {"placas-alta", "placas-baja", "placas-reposicion"} <= ids


def test_nothing_found_for_unrelated_speech(tramites):
    for said in ("hola buenas tardes", "gracias", "", "qué hora es", "¿¿??"):
        assert tramites.resolve(said).not_found, said


def test_results_are_ranked_and_close_to_the_best(tramites):
    matches = tramites.find_tramites("acta")
    assert len(matches) >= 2
    scores = [m.score for m in matches]
    assert scores == sorted(scores, reverse=True)
    assert min(scores) >= 0.85 * max(scores)
    assert all(m.phrase for m in matches)


def test_get_by_id(tramites):
    assert tramites.get("apostilla").name == "Apostilla de documentos"  # type: ignore[union-attr]
    assert tramites.get("no-existe") is None
    assert tramites.agency_of(tramites.get("apostilla")).id == "segob"  # type: ignore[arg-type]


def test_spoken_list():
    assert spoken_list([]) == ""
    assert spoken_list(["a"]) == "a"
    assert spoken_list(["a", "b", "c"]) == "a, b y c"
    assert spoken_list(["chofer", "otro"], "o") == "chofer u otro"
    assert spoken_list(["café", "iglesias"]) == "café e iglesias"


def test_missing_input_is_not_an_error(cities, tramites):
    """Slots and transcripts may be empty or None: lookups answer 'nothing' instead of raising."""
    assert cities.find_city(None) is None and cities.find_origin(None) is None
    assert cities.find_festivals(None) == [] and cities.mentions("") == []
    assert tramites.find_tramites(None) == [] and tramites.resolve(None).not_found
    long_text = "bla " * 5000 + "tlacotalpan"
    assert cities.find_city(long_text).id == "tlacotalpan"  # type: ignore[union-attr]
