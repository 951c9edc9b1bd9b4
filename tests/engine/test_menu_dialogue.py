"""The YAML menu dialogue: keys and words choose options, folio collection, no-match, bad YAML errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from ivr.dialogue.interface import CallerTurn, TurnContext
from ivr.dialogue.menu import NO_MATCH_INTENT, MenuDialogue, MenuError, load_menu

CTX = TurnContext(call_id="c", case_folio=None, caller_number="2281234567")


@pytest.fixture
def menu() -> MenuDialogue:
    return MenuDialogue(load_menu())


async def test_greeting_offers_the_menu_with_a_word_grammar(menu: MenuDialogue) -> None:
    reply = await menu.start(CTX)
    assert "marque 1" in " ".join(reply.texts)
    assert reply.expect.kind == "menu" and "turismo" in reply.expect.phrases and "agente" in reply.expect.phrases


@pytest.mark.parametrize(("turn", "intent"), [
    (CallerTurn(dtmf="1", event="dtmf"), "tourism"),
    (CallerTurn(text="quiero información de tramites"), "tramite_info"),
    (CallerTurn(text="Trámites"), "tramite_info"),
    (CallerTurn(text="el estado de mi solicitud"), "tramite_status"),
    (CallerTurn(text="uno"), "tourism"),
])
async def test_keys_and_words_choose_options(menu: MenuDialogue, turn: CallerTurn, intent: str) -> None:
    reply = await menu.turn(CTX, turn)
    assert reply.intent == intent and not reply.transfer


async def test_agent_transfers(menu: MenuDialogue) -> None:
    for turn in (CallerTurn(dtmf="0", event="dtmf"), CallerTurn(text="con un agente por favor")):
        reply = await menu.turn(CTX, turn)
        assert reply.transfer and reply.intent == "agent"


async def test_status_collects_a_folio_and_reads_it_back(menu: MenuDialogue) -> None:
    reply = await menu.turn(CTX, CallerTurn(dtmf="3", event="dtmf"))
    assert reply.expect.kind == "digits" and reply.expect.max_digits == 12 and reply.expect.terminator == "#"
    bad = await menu.turn(CTX, CallerTurn(text="no sé"))
    assert bad.intent == NO_MATCH_INTENT and bad.expect.kind == "digits"
    done = await menu.turn(CTX, CallerTurn(dtmf="20261234", event="dtmf"))
    assert "2 0 2 6 1 2 3 4" in done.texts[0] and done.expect.kind == "menu"


async def test_unknown_is_no_match_and_goodbye_hangs_up(menu: MenuDialogue) -> None:
    assert (await menu.turn(CTX, CallerTurn(text="blablá"))).intent == NO_MATCH_INTENT
    assert (await menu.turn(CTX, CallerTurn(dtmf="9", event="dtmf"))).intent == NO_MATCH_INTENT
    bye = await menu.turn(CTX, CallerTurn(text="nada gracias"))
    assert bye.hangup


def test_bad_yaml_names_the_key(tmp_path: Path) -> None:
    spec = load_menu().model_dump()
    spec["options"][1]["key"] = spec["options"][0]["key"]
    import yaml
    bad = tmp_path / "menu.yml"
    bad.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    with pytest.raises(MenuError, match="options: .*same key"):
        load_menu(bad)
    del spec["greeting"]
    bad.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    with pytest.raises(MenuError, match="greeting"):
        load_menu(bad)
    bad.write_text("greeting: [unclosed", encoding="utf-8")
    with pytest.raises(MenuError, match="invalid YAML"):
        load_menu(bad)
    with pytest.raises(MenuError, match="cannot read"):
        load_menu(tmp_path / "missing.yml")
