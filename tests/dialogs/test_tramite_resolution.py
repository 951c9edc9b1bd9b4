"""resolve_tramite with the meaning search (dialogs.catalog_search) behind the name index: everyday words with no
trámite entity, names that tie, and turns that name nothing. Hand-built trackers, the real catalog."""
from __future__ import annotations

import pytest
from rasa_sdk.executor import CollectingDispatcher

from dialogs.actions.resources import Resources
from dialogs.actions.tramites import ActionTramiteInfo, resolve_tramite
from tests.dialogs.conftest import entity, tracker


@pytest.mark.parametrize(("said", "intent", "expected"), [
    ("nos queremos casar por el civil, ¿qué piden?", "ask_tramite_requirements", "matrimonio-civil"),
    ("oiga, ¿cuánto me cobran por poner a mi nombre una camioneta que compré usada?", "ask_tramite_cost",
     "cambio-propietario"),
    ("quiero dar de baja las placas de un carro que vendí", "ask_tramite_info", "placas-baja"),
    ("se me venció el permiso de manejar", "ask_tramite_info", "licencia-renovacion"),
    ("mi mamá falleció y ocupo el papel de la defunción", "ask_tramite_info", "registro-defuncion"),
])
def test_everyday_words_without_an_entity(catalogs: Resources, said: str, intent: str, expected: str) -> None:
    found, candidates = resolve_tramite(catalogs.tramites, tracker(said, intent))
    assert found is not None and found.id == expected, (found, [c.tramite.id for c in candidates])


def test_tied_names_are_decided_by_the_whole_turn(catalogs: Resources) -> None:
    # "licencia" alone names five entries; "para mi troca de carga" says which one
    found, _ = resolve_tramite(catalogs.tramites, tracker(
        "necesito la licencia para mi troca de carga", "ask_tramite_requirements",
        entities=[entity("tramite", "licencia")]))
    assert found is not None and found.id == "licencia-chofer"


def test_a_family_name_alone_still_asks(catalogs: Resources) -> None:
    found, candidates = resolve_tramite(catalogs.tramites, tracker(
        "¿cuánto cuesta la licencia?", "ask_tramite_cost", entities=[entity("tramite", "licencia")]))
    assert found is None and len(candidates) > 1
    assert all(c.tramite.id.startswith("licencia") for c in candidates)


def test_nothing_named_gives_nothing_or_the_conversation_s(catalogs: Resources) -> None:
    assert resolve_tramite(catalogs.tramites, tracker("¿cuánto cuesta una pizza hawaiana?", "ask_tramite_cost")) \
        == (None, [])
    # a follow-up keeps the trámite of the conversation: its words are not searched
    found, _ = resolve_tramite(catalogs.tramites, tracker("¿y cuánto se paga?", "ask_tramite_cost",
                                                          slots={"tramite": "apostilla"}))
    assert found is not None and found.id == "apostilla"


async def test_the_action_answers_an_everyday_question(catalogs: Resources) -> None:
    d = CollectingDispatcher()
    events = await ActionTramiteInfo(catalogs).run(
        d, tracker("oiga, me robaron las placas del carro, ¿qué necesito?", "ask_tramite_requirements"), {})
    slots = {e["name"]: e["value"] for e in events if e.get("event") == "slot"}
    assert slots["tramite"] == "placas-reposicion" and slots["tramite_field"] == "requirements"
    assert "necesita" in " ".join(m.get("text") or "" for m in d.messages)
