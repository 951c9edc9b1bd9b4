"""Whatever a person types into a catalog file or a caller says, the catalog code answers or reports; it never
crashes."""
from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialogs.catalog import load_cities, load_tramites, validate_catalog_file
from tests.catalog.test_errors import CITY, TRAMITES

CITIES = load_cities()
TRAMITE_CATALOG = load_tramites()

lines_edit = st.tuples(st.sampled_from(["delete", "duplicate", "indent", "dedent", "insert", "truncate"]),
                       st.integers(min_value=0, max_value=40), st.text(max_size=12))


def mutate(text: str, edits: list[tuple[str, int, str]]) -> str:
    lines = text.split("\n")
    for kind, where, junk in edits:
        if not lines:
            break
        i = where % len(lines)
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "indent":
            lines[i] = " " + lines[i]
        elif kind == "dedent":
            lines[i] = lines[i][1:]
        elif kind == "insert":
            lines.insert(i, junk)
        else:
            lines[i] = lines[i][: len(lines[i]) // 2] + junk
    return "\n".join(lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from([CITY, TRAMITES]), edits=st.lists(lines_edit, min_size=1, max_size=4))
def test_mangled_files_give_located_problems_not_exceptions(tmp_path: Path, base: str, edits):
    text = mutate(base, edits)
    path = tmp_path / "mangled.yml"
    path.write_text(text, encoding="utf-8")
    problems = validate_catalog_file(path)
    total_lines = text.count("\n") + 2
    for problem in problems:
        assert problem.message and problem.file.endswith("mangled.yml")
        assert problem.line is None or 1 <= problem.line <= total_lines
        assert str(problem)


@settings(max_examples=300, deadline=None)
@given(said=st.text(max_size=200))
def test_any_text_is_a_safe_lookup(said: str):
    CITIES.find_city(said)
    CITIES.find_origin(said)
    CITIES.find_festivals(said)
    found = TRAMITE_CATALOG.resolve(said)
    if found.ambiguous:
        assert TRAMITE_CATALOG.disambiguation_question(found.matches).endswith("?")


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.sampled_from(["el", "de", "puerto", "boca", "desde", "xalapa", "licencia", "acta",
                                       "veracruz", "estado", "coate", "pec", "río", "tuxpan", "placas", "la"]),
                      max_size=12))
def test_word_salad_from_catalog_vocabulary(words: list[str]):
    said = " ".join(words)
    mentions = CITIES.mentions(said)
    assert all(0 <= m.start < m.end <= len(words) for m in mentions)
    assert [m.start for m in mentions] == sorted(m.start for m in mentions)
    for match in TRAMITE_CATALOG.find_tramites(said):
        assert 0 < match.score <= 1
