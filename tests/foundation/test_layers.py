"""Imports point one way. Every module's imports (lazy ones inside functions included) are parsed and checked
against the layers; a new import that points up or sideways fails here with the file, line and rule it breaks.

    bench, tests          may use everything below, and testkit
    testkit               the shared test toolkit: the product, never tests/ or bench/
    veratur               the application roof
    ivr | dialogs         the engine | the Rasa project: never each other
    case_bridge | voice_models   the citizen record | speech-model management
    foundation            the ground floor: nothing of the project

Inside `ivr/` the subpackages follow the call's path: metrics < speech < call.leg (the edge/call contract) <
dialogue < call < sip < the assembly at the top (engine, worker, caller). Only `ivr.sip` imports pjsua2.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from foundation.paths import REPO_ROOT

PROJECT = ("foundation", "case_bridge", "voice_models", "ivr", "dialogs", "veratur", "testkit", "bench", "tests")
ALLOWED: dict[str, set[str]] = {
    "foundation": set(),
    "case_bridge": {"foundation"},
    "voice_models": {"foundation"},
    "ivr": {"foundation", "case_bridge", "voice_models"},
    "dialogs": {"foundation", "case_bridge"},
    "veratur": {"foundation", "case_bridge", "voice_models", "ivr", "dialogs"},
    "testkit": {"foundation", "case_bridge", "voice_models", "ivr", "dialogs", "veratur"},
    "bench": {"foundation", "case_bridge", "voice_models", "ivr", "dialogs", "veratur", "testkit"},
    "tests": {"foundation", "case_bridge", "voice_models", "ivr", "dialogs", "veratur", "testkit"},
}
IVR_RANKS = (("ivr.metrics", 0), ("ivr.speech", 1), ("ivr.call.leg", 2), ("ivr.dialogue", 3), ("ivr.call", 4),
             ("ivr.sip", 5), ("ivr", 6))
SKIP_DIRS = {".venv", ".venv-rasa", "var", "dialogs/models", "case_bridge/migrations/versions", "test-artifacts"}


def module_files() -> Iterator[tuple[str, Path]]:
    for top in PROJECT:
        for path in sorted((REPO_ROOT / top).rglob("*.py")):
            rel = path.relative_to(REPO_ROOT)
            if any(str(rel).startswith(d + "/") for d in SKIP_DIRS):
                continue
            yield ".".join(rel.with_suffix("").parts).removesuffix(".__init__"), path


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:        # `from ivr import engine` names a module too
                yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def ivr_rank(module: str) -> int:
    return next(rank for prefix, rank in IVR_RANKS if module == prefix or module.startswith(prefix + "."))


def violations() -> list[str]:
    found = []
    for module, path in module_files():
        top = module.split(".")[0]
        for line, target in imports_of(path):
            target_top = target.split(".")[0]
            where = f"{path.relative_to(REPO_ROOT)}:{line}"
            if target_top == "pjsua2" and not module.startswith("ivr.sip") and top in ("ivr", "veratur", "dialogs"):
                found.append(f"{where}: {module} imports pjsua2 (only ivr.sip may)")
            if target_top not in PROJECT or target_top == top:
                if top == "ivr" == target_top and target != "ivr" and ivr_rank(target) > ivr_rank(module):
                    found.append(f"{where}: {module} -> {target} points up inside ivr")
                continue
            if target_top not in ALLOWED[top]:
                found.append(f"{where}: {module} -> {target_top} ({top} may import only {sorted(ALLOWED[top])})")
    return list(dict.fromkeys(found))


def package_picture() -> dict[str, set[str]]:
    picture: dict[str, set[str]] = defaultdict(set)
    for module, path in module_files():
        top = module.split(".")[0]
        for _, target in imports_of(path):
            target_top = target.split(".")[0]
            if target_top in PROJECT and target_top != top:
                picture[top].add(target_top)
    return picture


def test_imports_point_down_only() -> None:
    found = violations()
    assert not found, "imports against the layers:\n" + "\n".join(found)


def test_every_package_is_checked() -> None:
    modules = [m for m, _ in module_files()]
    for top in ("foundation", "case_bridge", "voice_models", "ivr", "dialogs", "veratur", "testkit"):
        assert any(m.split(".")[0] == top for m in modules), top
    assert "ivr.sip.edge" in modules and "ivr.speech.vad" in modules


def test_the_checker_catches_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom ivr.call.session import CallSession\n")
    assert [t for _, t in imports_of(bad) if t.startswith("ivr")] == ["ivr.call.session",
                                                                       "ivr.call.session.CallSession"]
    assert ivr_rank("ivr.call.session") > ivr_rank("ivr.speech.vad")
    assert ivr_rank("ivr.engine") == 6 and ivr_rank("ivr.call.leg") < ivr_rank("ivr.dialogue.rasa")


if __name__ == "__main__":   # the package picture, for the notes: `python tests/foundation/test_layers.py`
    for package, targets in sorted(package_picture().items()):
        print(f"{package:13} -> {', '.join(sorted(targets)) or '(nothing of the project)'}")
    print("\n".join(violations()) or "no import against the layers")
