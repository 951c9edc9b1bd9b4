"""`veratur flows` as a deployment script would run it (a real process, a copy of the tree via --root)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from foundation.paths import REPO_ROOT
from tests.admin.conftest import copy_flow_tree


def _veratur(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VERATUR__DATA_DIR=str(data_dir), VERATUR__TTS__CACHE_DIR=str(data_dir / "tts"),
               VERATUR__DIALOGUE__RASA_URL="http://127.0.0.1:9")     # discard port: no Rasa answers there
    return subprocess.run([sys.executable, "-m", "veratur.cli", "flows", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_validate_reports_file_line_column(tmp_path: Path) -> None:
    root = copy_flow_tree(tmp_path / "tree")
    ok = _veratur("validate", str(root), data_dir=tmp_path / "data")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    menu = root / "dialogs" / "menu.yml"
    menu.write_text(menu.read_text(encoding="utf-8").replace("menu_short:", "menu_short: [roto"), encoding="utf-8")
    bad = _veratur("validate", str(root), data_dir=tmp_path / "data")
    assert bad.returncode == 1
    assert "ERROR dialogs/menu.yml:" in bad.stdout and "YAML" in bad.stdout
    outside = _veratur("validate", "/etc/hostname", data_dir=tmp_path / "data")
    assert outside.returncode == 1 and "fuera" in outside.stderr


@pytest.mark.rasa
@pytest.mark.slow
def test_apply_log_and_rollback(tmp_path: Path) -> None:
    """The menu prompts are not a training input, so both applies reuse the repository's cached model."""
    live = copy_flow_tree(tmp_path / "live")
    source = tmp_path / "source"
    shutil.copytree(live, source)
    menu = source / "dialogs" / "menu.yml"
    original = menu.read_text(encoding="utf-8")
    menu.write_text(original.replace("Bienvenido al portal ciudadano", "Bienvenida al nuevo portal ciudadano"),
                    encoding="utf-8")
    data = tmp_path / "data"
    applied = _veratur("--root", str(live), "apply", "--source", str(source), "-m", "saludo", "--author", "ci",
                       data_dir=data)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "[rasa_validate]" in applied.stdout and "[test]" in applied.stdout and "revisión 2 en vivo" in applied.stdout
    assert "siguen valiendo las del modelo en vivo" in applied.stdout     # prompt-only: no `rasa test` rerun
    assert "Bienvenida al nuevo portal" in (live / "dialogs" / "menu.yml").read_text(encoding="utf-8")
    log = _veratur("--root", str(live), "log", data_dir=data)
    assert "ci" in log.stdout and "dialogs/menu.yml" in log.stdout
    diff = _veratur("--root", str(live), "log", "--diff", "2", data_dir=data)
    assert "+  Bienvenida al nuevo portal" in diff.stdout
    back = _veratur("--root", str(live), "rollback", "1", data_dir=data)
    assert back.returncode == 0, back.stdout + back.stderr
    assert (live / "dialogs" / "menu.yml").read_text(encoding="utf-8") == original
    audit = _veratur("--root", str(live), "log", "--audit", data_dir=data)
    assert "rollback" in audit.stdout and "apply" in audit.stdout
