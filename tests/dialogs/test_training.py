"""`veratur train` / `veratur rasa` plumbing that needs no Rasa process: hashing, progress, clear errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from foundation.paths import REPO_ROOT
from veratur.training import _progress_line, content_hash, model_path, training_inputs


def test_inputs_cover_the_project_and_never_the_test_split() -> None:
    names = {str(p.relative_to(REPO_ROOT)) for p in training_inputs()}
    assert {"dialogs/domain.yml", "dialogs/config.yml", "dialogs/data/rules.yml", "nlu_data/train/nlu.yml",
            "nlu_data/train/catalog_lookups.yml"} <= names
    assert not any(n.startswith("nlu_data/test") for n in names)
    assert not any(n in ("nlu_data/cities.yml", "nlu_data/tramites.yml") for n in names)


def test_hash_follows_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yml", tmp_path / "b.yml"
    a.write_text("x: 1\n")
    b.write_text("y: 2\n")
    first = content_hash([a, b], root=tmp_path)
    assert content_hash([a, b], root=tmp_path) == first
    b.write_text("y: 3\n")
    assert content_hash([a, b], root=tmp_path) != first
    assert model_path().name == f"veratur-{content_hash()}.tar.gz"


def test_progress_lines() -> None:
    assert _progress_line("INFO rasa.engine.training.hooks - Starting to train component 'DIETClassifier'.") \
        == "training DIETClassifier"
    assert _progress_line("Epochs:  50%|#####     | 20/40 [00:10<00:10]") == "  epochs 50%"
    assert _progress_line("Epochs:  52%|#####") is None
    assert _progress_line("random noise") is None


def test_rasa_command_with_a_missing_model_says_so() -> None:
    result = subprocess.run([sys.executable, "-m", "veratur.cli", "rasa", "--model", "/nonexistent/model.tar.gz"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "no trained model" in result.stderr
