"""Fixtures of the flow administration tests: a copy of the live flow tree in a temp dir, so no test ever writes
the repository's own dialogs/ or nlu_data/ (other engineers work in the same checkout)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from foundation.config import Settings, load_settings
from foundation.paths import REPO_ROOT
from veratur.flows.paths import list_flow_files
from veratur.flows.service import SUPPORT_FILES, FlowService
from veratur.flows.store import RevisionStore


def copy_flow_tree(dest: Path) -> Path:
    for rel in [f.path for f in list_flow_files(REPO_ROOT)] + list(SUPPORT_FILES) + ["dialogs/credentials.yml"]:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / rel, dest / rel)
    return dest


@pytest.fixture
def live_tree(tmp_path: Path) -> Path:
    return copy_flow_tree(tmp_path / "live")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    base = load_settings()
    return base.model_copy(update={"data_dir": tmp_path / "data",
                                   "tts": base.tts.model_copy(update={"cache_dir": tmp_path / "tts-cache"})})


def fake_trainer(model: Path):
    """Unit-test seam: 'trains' by returning an existing file (the real training is tested in test_live_swap)."""
    def train(root: Path, progress) -> Path:
        progress("seam: no training")
        return model
    return train


@pytest.fixture
def service(settings: Settings, live_tree: Path, tmp_path: Path) -> FlowService:
    model = tmp_path / "veratur-seam.tar.gz"
    model.write_bytes(b"not a model")
    return FlowService(settings, live_root=live_tree, store=RevisionStore(tmp_path / "data" / "flows"),
                       rasa_url="", run_rasa_checks=False, trainer=fake_trainer(model), models_dir=tmp_path)
