"""The catalog entity extractor: DIET's city and trámite spans replaced by what the catalogs say was meant.

Unit level: `dialogs.catalog_entities` on hand-written DIET outputs with the real catalogs; the action server's
route (`dialogs.actions.catalog_route`) in a real `veratur actions` process; the Rasa side's HTTP client against
a closed port and a server that answers garbage. End to end: the same turns through the session's real
`rasa run` (`/model/parse`), whose pipeline posts to its action server."""
from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dialogs.actions.catalog_route import BadRequest, checked
from dialogs.actions.resources import Resources
from dialogs.catalog_entities import EXTRACTOR, ORIGIN_ENTITY, CatalogEntities, token_spans
from dialogs.catalog_nlu.client import CatalogClient, actions_url
from veratur.rasa_server import RasaStack


@pytest.fixture(scope="module")
def extractor(catalogs: Resources) -> CatalogEntities:
    return CatalogEntities(catalogs.cities, catalogs.tramites)


def span(text: str, words: str, name: str, value: str | None = None) -> dict[str, Any]:
    """A DIET-like entity over `words` in `text` (value = the words, as DIET without a synonym gives)."""
    start = text.index(words)
    return {"entity": name, "start": start, "end": start + len(words), "value": value or words,
            "extractor": "DIETClassifier"}


def found(entities: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["entity"], e["value"]) for e in entities]


def test_stray_words_tagged_as_a_tramite_become_one_entity_with_the_catalog_id(extractor: CatalogEntities) -> None:
    text = "oiga necesito una copia del acta de defunción de mi papá"
    out = extractor.entities(text, "ask_tramite_requirements",
                             [span(text, "una", "tramite"), span(text, "copia del acta de defunción", "tramite")])
    assert found(out) == [("tramite", "acta-defuncion-copia")]
    assert out[0]["text"] == "copia del acta de defunción" and out[0]["extractor"] == EXTRACTOR


def test_a_named_entry_wins_over_a_family_word_in_the_same_turn(extractor: CatalogEntities) -> None:
    text = "quiero empezar mi registro de la licencia de chofer"
    out = extractor.entities(text, "start_tramite",
                             [span(text, "registro", "tramite"), span(text, "licencia de chofer", "tramite")])
    assert found(out) == [("tramite", "licencia-chofer")]
    assert out[0]["text"] == "licencia de chofer"


def test_a_family_name_alone_keeps_the_words_so_the_dialogue_asks(extractor: CatalogEntities) -> None:
    text = "¿cuánto cuesta la licencia?"
    assert found(extractor.entities(text, "ask_tramite_cost", [span(text, "licencia", "tramite")])) \
        == [("tramite", "licencia")]


def test_a_tramite_question_without_a_span_is_searched_in_the_words(extractor: CatalogEntities) -> None:
    assert found(extractor.entities("oiga, ¿cuánto me cobran por la apostilla?", "ask_tramite_cost", [])) \
        == [("tramite", "apostilla")]
    # not on other intents: a food question names no trámite
    assert found(extractor.entities("¿qué se come rico en Xico?", "ask_food", [])) == [("city", "xico")]


def test_a_name_outside_the_catalog_is_dropped(extractor: CatalogEntities) -> None:
    text = "quiero sacar mi pasaporte mexicano"
    assert extractor.entities(text, "ask_tramite_requirements", [span(text, "pasaporte", "tramite")]) == []


def test_a_trip_s_starting_point_is_origin_city_not_a_second_city(extractor: CatalogEntities) -> None:
    text = "¿Cómo llego a Coatepec saliendo de Córdoba?"
    out = extractor.entities(text, "ask_access", [span(text, "Coatepec", "city"), span(text, "de", "city"),
                                                  span(text, "Córdoba", "city")])
    assert found(out) == [("city", "coatepec"), (ORIGIN_ENTITY, "cordoba")]
    assert [e["text"] for e in out] == ["Coatepec", "Córdoba"]


def test_words_diet_tagged_as_a_city_that_name_none_are_dropped(extractor: CatalogEntities) -> None:
    text = "¿hay museos en el centro de Orizaba?"
    assert found(extractor.entities(text, "ask_attractions", [span(text, "centro", "city")])) \
        == [("city", "orizaba")]


def test_a_city_diet_caught_by_a_synonym_is_kept_with_its_id(extractor: CatalogEntities) -> None:
    text = "¿qué hay que ver en la capital del estado?"
    out = extractor.entities(text, "ask_attractions", [span(text, "capital del estado", "city", "Xalapa")])
    assert ("city", "xalapa") in found(out)


def test_digits_and_payloads_pass_through(extractor: CatalogEntities) -> None:
    text = "mi folio es 12345678"
    digits = span(text, "12345678", "digits")
    assert extractor.entities(text, "inform_number", [digits]) == [digits]
    button = [{"entity": "city", "value": "Xalapa", "start": 0, "end": 6}]
    assert extractor.entities("/inform_city", "inform_city", button) == button


def test_token_spans_follow_the_catalog_tokenizer_through_accents_and_punctuation() -> None:
    text = "¿Qué hay en Boca del Río?"
    assert [text[a:b] for a, b in token_spans(text) or []] == ["Qué", "hay", "en", "Boca", "del", "Río"]


@pytest.mark.parametrize("body", [[], {"text": 5}, {"text": "x" * 2001}, {"text": "hola", "intent": 3},
                                  {"text": "hola", "entities": "city"}, {"text": "hola", "entities": [{"e": 1}]},
                                  {"text": "hola", "entities": [{"entity": "city"}] * 65}])
def test_the_route_refuses_malformed_bodies(body: Any) -> None:
    with pytest.raises(BadRequest):
        checked(body)


# ------------------------------------------------------------------------------- the Rasa side's client

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def garbage_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"entities": "not a list"}')

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_client_gives_none_when_the_action_server_is_down_or_answers_garbage(garbage_server: str) -> None:
    assert CatalogClient(f"http://127.0.0.1:{_closed_port()}", 0.25).entities("hola", None, []) is None
    assert CatalogClient(garbage_server, 0.25).entities("hola", None, []) is None


def test_the_client_finds_the_action_server_in_rasa_s_endpoints_file(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VERATUR_ACTIONS_URL", raising=False)
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text('action_endpoint:\n  url: "http://127.0.0.1:5055/webhook"\n', encoding="utf-8")
    assert actions_url(["rasa", "run", "--endpoints", str(endpoints)]) == "http://127.0.0.1:5055"
    assert actions_url(["rasa", "train"]) is None
    assert actions_url(["rasa", "run", "--endpoints", str(tmp_path / "missing.yml")]) is None
    monkeypatch.setenv("VERATUR_ACTIONS_URL", "http://10.0.0.5:5055/")
    assert actions_url(["rasa", "train"]) == "http://10.0.0.5:5055"


# ------------------------------------------------------------------------------------------ end to end

@pytest.mark.rasa
@pytest.mark.slow
def test_rasa_parse_carries_the_catalog_s_entities(rasa_stack: RasaStack) -> None:
    def parse(text: str) -> list[dict[str, Any]]:
        resp = httpx.post(f"{rasa_stack.url}/model/parse", json={"text": text}, timeout=60)
        resp.raise_for_status()
        return resp.json()["entities"]

    trip = parse("oiga y para llegar a Papantla saliendo de Tuxpan")
    assert found(trip) == [("city", "papantla"), (ORIGIN_ENTITY, "tuxpan")], trip
    assert all(e["extractor"] == EXTRACTOR for e in trip)
    copy = parse("necesito una copia certificada del acta de matrimonio")
    assert found(copy) == [("tramite", "acta-matrimonio-copia")], copy
    # the action server's route answers malformed bodies with 400, not a crash
    route = f"http://127.0.0.1:{rasa_stack.action_port}/catalog/entities"
    assert httpx.post(route, content=b"not json", timeout=10).status_code == 400
    assert httpx.post(route, json={"text": 5}, timeout=10).status_code == 400
