"""Validation of flow files: YAML syntax with file/line/column, schema errors naming the key, cross references
to the domain, the catalogs' own rules, and `rasa data validate` on a candidate tree."""
from __future__ import annotations

from pathlib import Path

import pytest

from veratur.flows.validation import errors_in, parse_rasa_validate, rasa_data_validate, validate_tree


def _edit(root: Path, rel: str, old: str, new: str, count: int = 1) -> None:
    path = root / rel
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def test_the_live_tree_is_valid(live_tree: Path) -> None:
    assert errors_in(validate_tree(live_tree)) == []


def test_yaml_syntax_error_names_file_line_and_column(live_tree: Path) -> None:
    path = live_tree / "dialogs" / "menu.yml"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines.insert(5, 'greeting_extra: "sin cerrar')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    problems = errors_in(validate_tree(live_tree))
    assert len(problems) == 1
    p = problems[0]
    assert p.file == "dialogs/menu.yml" and p.line is not None and p.column is not None
    assert "YAML" in p.message
    assert str(p).startswith(f"dialogs/menu.yml:{p.line}:{p.column}:")


def test_unknown_top_level_key_is_named(live_tree: Path) -> None:
    _edit(live_tree, "dialogs/data/rules.yml", 'version: "3.1"', 'version: "3.1"\nrulez: []')
    (p,) = errors_in(validate_tree(live_tree))
    assert (p.file, p.key, p.line) == ("dialogs/data/rules.yml", "rulez", 4)
    assert "desconocida" in p.message


def test_unknown_menu_key_and_missing_prompt(live_tree: Path) -> None:
    _edit(live_tree, "dialogs/menu.yml", "greeting:", "greetin:")
    problems = errors_in(validate_tree(live_tree))
    keys = {p.key for p in problems}
    assert {"greetin", "greeting"} <= keys


def test_response_used_in_a_rule_but_not_defined(live_tree: Path) -> None:
    _edit(live_tree, "dialogs/data/rules.yml", "- action: utter_greet", "- action: utter_saludo_nuevo")
    (p,) = errors_in(validate_tree(live_tree))
    assert p.file == "dialogs/data/rules.yml" and p.key.endswith(".action") and "utter_saludo_nuevo" in p.message
    assert p.line == 8


def test_intent_in_a_story_not_in_the_domain(live_tree: Path) -> None:
    _edit(live_tree, "dialogs/data/stories.yml", "- intent: greet", "- intent: saludar")
    problems = errors_in(validate_tree(live_tree))
    assert any(p.file == "dialogs/data/stories.yml" and "saludar" in p.message and p.key.endswith(".intent")
               for p in problems)


def _first_line(root: Path, rel: str, contains: str) -> tuple[int, str]:
    """(1-based number, text) of the first line holding `contains`: the files are generated or edited, so the
    tests find their target instead of pinning its position."""
    lines = (root / rel).read_text(encoding="utf-8").splitlines()
    number = next(i for i, line in enumerate(lines, 1) if contains in line)
    return number, lines[number - 1]


def test_nlu_example_without_dash_and_unknown_entity(live_tree: Path) -> None:
    number, line = _first_line(live_tree, "nlu_data/train/nlu.yml", "](city)")
    _edit(live_tree, "nlu_data/train/nlu.yml", line + "\n",
          line.replace("](city)", "](ciudad)", 1) + "\n      sin guion\n")
    problems = errors_in(validate_tree(live_tree))
    messages = [(p.line, p.message) for p in problems]
    assert any("ciudad" in m and at == number for at, m in messages), messages
    assert any("'- '" in m and at == number + 1 for at, m in messages), messages


def test_city_without_attractions(live_tree: Path) -> None:
    text = (live_tree / "nlu_data" / "cities.yml").read_text(encoding="utf-8")
    start = text.index("    attractions:")
    end = text.index("\n    ", text.index("\n      - name:", text.rindex("\n      - name:", start, text.index("\n  - id:", start))) + 1)
    # drop the first city's whole attractions list: from its key to the next key of the city
    nxt = text.index("\n    foods:", start) if "\n    foods:" in text[start:] else end
    (live_tree / "nlu_data" / "cities.yml").write_text(text[:start] + text[nxt + 1:], encoding="utf-8")
    problems = errors_in(validate_tree(live_tree))
    assert any(p.file == "nlu_data/cities.yml" and "attractions" in p.key and p.entry == "xalapa" for p in problems), \
        [str(p) for p in problems]


def test_tramite_without_a_channel(live_tree: Path) -> None:
    number, _ = _first_line(live_tree, "nlu_data/tramites.yml", "    channels_finish: [office]")
    _edit(live_tree, "nlu_data/tramites.yml", "    channels_finish: [office]", "    channels_finish: []")
    problems = errors_in(validate_tree(live_tree))
    assert any(p.file == "nlu_data/tramites.yml" and "channels_finish" in p.key and p.line == number
               for p in problems), \
        [str(p) for p in problems]


def test_parse_rasa_validate_output() -> None:
    out = ("\x1b[93m/x/rasa/shared/utils/io.py:100: UserWarning: The utterance 'utter_x' is not used in any story.\n"
           "\x1b[0m2026-01-01 10:00:00 ERROR    rasa.validator  - The action 'utter_y' is used in the stories, "
           "but is not a valid utterance action.\n")
    problems = parse_rasa_validate(out, 1)
    assert [p.severity for p in problems] == ["warning", "error"]
    assert "utter_y" in problems[1].message
    assert errors_in(parse_rasa_validate("nothing useful", 1))[0].message.startswith("rasa data validate terminó")


@pytest.mark.rasa
@pytest.mark.slow
def test_real_rasa_data_validate_on_a_candidate(live_tree: Path) -> None:
    from veratur.flows.model import write_catalog_lookups

    write_catalog_lookups(live_tree)
    assert errors_in(rasa_data_validate(live_tree)) == []
    # a rule that needs a response the domain lacks: Rasa's own validator refuses it too
    _edit(live_tree, "dialogs/data/rules.yml", "- action: utter_greet", "- action: utter_saludo_nuevo")
    problems = errors_in(rasa_data_validate(live_tree))
    assert any("utter_saludo_nuevo" in p.message for p in problems), [str(p) for p in problems]
