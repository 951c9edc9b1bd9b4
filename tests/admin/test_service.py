"""The apply pipeline with the training seam (real training: test_live_swap.py): revisions, diffs, audit,
optimistic concurrency between two administrators, rejection of invalid changes, one-step rollback."""
from __future__ import annotations

from pathlib import Path

import pytest

from foundation.paths import REPO_ROOT
from veratur.flows.model import candidate_hash, write_catalog_lookups
from veratur.flows.paths import PathRejected, sha256_bytes
from veratur.flows.service import Conflict, Edit, FlowService, Invalid
from veratur.training import CATALOG_LOOKUPS, content_hash

GREETING = "Bienvenido al portal ciudadano del Gobierno de Veracruz."


def _menu_edit(service: FlowService, old: str, new: str) -> Edit:
    text, sha = service.read("dialogs/menu.yml")
    assert old in text
    return Edit("dialogs/menu.yml", text.replace(old, new), sha)


def test_candidate_hash_matches_veratur_train() -> None:
    """A candidate laid out like the repo hashes like `veratur train`: the model trained for it is reused live."""
    assert candidate_hash(REPO_ROOT) == content_hash()


def test_candidate_lookup_tables_match_veratur_train(live_tree: Path) -> None:
    (live_tree / "nlu_data/train/catalog_lookups.yml").unlink()
    assert write_catalog_lookups(live_tree)
    if CATALOG_LOOKUPS.exists():
        assert (live_tree / "nlu_data/train/catalog_lookups.yml").read_text(encoding="utf-8") == \
            CATALOG_LOOKUPS.read_text(encoding="utf-8")


def test_apply_writes_live_and_records_a_revision(service: FlowService, live_tree: Path) -> None:
    edit = _menu_edit(service, GREETING, "Hola, bienvenida al portal de Veracruz.")
    seen: list[str] = []
    result = service.apply([edit], author="ana", message="saludo más corto", progress=lambda s, m: seen.append(s))
    assert "Hola, bienvenida" in (live_tree / "dialogs/menu.yml").read_text(encoding="utf-8")
    revs = service.store.revisions()
    assert [r.kind for r in revs] == ["baseline", "apply"]
    rev = revs[-1]
    assert result.revision == rev and rev.author == "ana" and rev.message == "saludo más corto"
    assert rev.changed == ["dialogs/menu.yml"]
    assert "-greeting: >-\n" not in rev.diff and "+  Hola, bienvenida al portal de Veracruz." in rev.diff
    assert seen[:3] == ["base", "stage", "validate"] and "record" in seen
    audit = service.store.audit_log()
    assert audit[0].actor == "ana" and audit[0].action == "apply" and audit[0].detail["revision"] == 2
    # the new greeting was rendered into the prompt cache, so the first caller does not wait for espeak
    assert "prerender" in seen and result.notes == ["Rasa no responde: el modelo nuevo se cargará cuando Rasa arranque"]
    assert list(service.settings.path(service.settings.tts.cache_dir).glob("*.pcm"))


def test_two_admins_the_second_apply_is_told_the_file_changed(service: FlowService, live_tree: Path) -> None:
    first = _menu_edit(service, GREETING, "Saludo de Ana.")
    second = _menu_edit(service, GREETING, "Saludo de Beto.")      # same base: both opened the same version
    service.apply([first], author="ana", message="a")
    with pytest.raises(Conflict) as info:
        service.apply([second], author="beto", message="b")
    assert info.value.path == "dialogs/menu.yml" and info.value.by == "ana"
    assert "Saludo de Ana." in (live_tree / "dialogs/menu.yml").read_text(encoding="utf-8")   # not overwritten
    assert service.store.audit_log()[0].action == "apply_rejected"
    # Beto reloads, merges and applies on the new base
    again = _menu_edit(service, "Saludo de Ana.", "Saludo de Ana y Beto.")
    service.apply([again], author="beto", message="b2")
    assert "Saludo de Ana y Beto." in (live_tree / "dialogs/menu.yml").read_text(encoding="utf-8")


def test_an_invalid_change_never_reaches_the_live_tree(service: FlowService, live_tree: Path) -> None:
    before = (live_tree / "dialogs/data/rules.yml").read_bytes()
    text, sha = service.read("dialogs/data/rules.yml")
    bad = Edit("dialogs/data/rules.yml", text.replace("- action: utter_greet", "- action: utter_no_existe", 1), sha)
    with pytest.raises(Invalid) as info:
        service.apply([bad], author="ana", message="roto")
    assert any("utter_no_existe" in p.message for p in info.value.problems)
    assert (live_tree / "dialogs/data/rules.yml").read_bytes() == before
    assert [r.kind for r in service.store.revisions()] == ["baseline"]
    assert service.store.audit_log()[0].action == "apply_rejected"


def test_bad_paths_and_sizes_are_rejected(service: FlowService) -> None:
    for path in ("../config/veratur.yml", "/etc/passwd", "dialogs/config.yml", "veratur/cli.py"):
        with pytest.raises(PathRejected):
            service.apply([Edit(path, "a: 1\n", None)], author="ana", message="x")
    _, sha = service.read("nlu_data/train/nlu.yml")
    with pytest.raises(PathRejected, match="1 MB"):
        service.apply([Edit("nlu_data/train/nlu.yml", "#" * (10 * 1024 * 1024), sha)], author="ana", message="x")


def test_rollback_restores_any_revision_in_one_step(service: FlowService, live_tree: Path) -> None:
    original = (live_tree / "dialogs/menu.yml").read_bytes()
    service.apply([_menu_edit(service, GREETING, "Uno.")], author="ana", message="1")
    service.apply([_menu_edit(service, "Uno.", "Dos.")], author="ana", message="2")
    extra_sha = None
    service.apply([Edit("nlu_data/train/extra.yml", 'version: "3.1"\nnlu: []\n', extra_sha)], author="ana",
                  message="3: archivo nuevo")
    assert (live_tree / "nlu_data/train/extra.yml").exists()
    result = service.rollback(1, author="carla")
    assert (live_tree / "dialogs/menu.yml").read_bytes() == original
    assert not (live_tree / "nlu_data/train/extra.yml").exists()
    assert result.revision is not None and result.revision.kind == "rollback" and result.revision.author == "carla"
    assert set(result.revision.changed) == {"dialogs/menu.yml", "nlu_data/train/extra.yml"}
    assert service.store.get(1).manifest == result.revision.manifest
    service.rollback(3, author="carla")
    assert "Dos." in (live_tree / "dialogs/menu.yml").read_text(encoding="utf-8")


def test_validate_does_not_touch_live(service: FlowService, live_tree: Path) -> None:
    before = sha256_bytes((live_tree / "dialogs/menu.yml").read_bytes())
    edit = _menu_edit(service, "greeting:", "greetin:")
    problems = service.validate([edit])
    assert {p.key for p in problems} >= {"greetin", "greeting"}
    assert sha256_bytes((live_tree / "dialogs/menu.yml").read_bytes()) == before
    assert service.diff([edit]).count("\n-greeting:") == 1
