"""`veratur catalog ...` for administrators and CI: validate with exit status, find, lookups, generate."""
from __future__ import annotations

import json
import subprocess
import sys

from dialogs.catalog_check import main
from foundation.paths import REPO_ROOT


def test_validate_shipped_files_is_clean(capsys):
    assert main(["validate"]) == 0
    assert "0 error(es), 0 aviso(s)" in capsys.readouterr().out


def test_validate_reports_and_fails_on_errors(tmp_path, capsys):
    bad = tmp_path / "cities.yml"
    bad.write_text("schema_version: 1\ncities:\n  - id: perote\n    name: Perote\n", encoding="utf-8")
    assert main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:3:5: cities[0].attractions [entrada perote]: falta esta clave obligatoria" in out
    assert main(["validate", "--json", str(bad)]) == 1
    problems = json.loads(capsys.readouterr().out)
    assert {"file", "line", "column", "key", "entry", "message", "severity"} <= set(problems[0])


def test_strict_fails_on_warnings(tmp_path, capsys):
    text = (REPO_ROOT / "nlu_data" / "cities.yml").read_text(encoding="utf-8")
    path = tmp_path / "cities.yml"
    path.write_text(text.replace("duration: alrededor de una hora y media", "duration: 90 minutos", 1),
                    encoding="utf-8")
    assert main(["validate", str(path)]) == 0
    assert main(["validate", "--strict", str(path)]) == 1
    assert "(aviso)" in capsys.readouterr().out


def test_find_lookups_and_generate(tmp_path, capsys):
    assert main(["find", "¿cómo llego a Catemaco desde Jalapa? y la licencia"]) == 0
    out = capsys.readouterr().out
    assert "ciudad: catemaco   origen: xalapa" in out and "pregunta: ¿Cuál trámite busca" in out
    assert main(["lookups", "--out", str(tmp_path / "l.yml"), "--no-synonyms"]) == 0
    assert "synonym:" not in (tmp_path / "l.yml").read_text(encoding="utf-8")
    assert main(["generate", "--count", "20", "--out", str(tmp_path / "s.yml")]) == 0
    assert main(["find", "permiso", "--tramites", str(tmp_path / "s.yml")]) == 0


def test_veratur_command_runs_it():
    done = subprocess.run([sys.executable, "-m", "veratur.cli", "catalog", "validate"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "0 error(es)" in done.stdout
