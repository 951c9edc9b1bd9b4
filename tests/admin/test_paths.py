"""Which paths an administrator may edit: inside the flow folders only, after resolving `..` and symlinks."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from veratur.flows.paths import MAX_FILE_BYTES, PathRejected, check_path, check_size, list_flow_files


@pytest.mark.parametrize("path", ["dialogs/domain.yml", "dialogs/menu.yml", "dialogs/data/rules.yml",
                                  "nlu_data/train/nlu.yml", "nlu_data/cities.yml", "nlu_data/tramites.yml",
                                  "./dialogs/domain.yml", "dialogs/../dialogs/domain.yml",
                                  "nlu_data/train/new_examples.yml"])
def test_editable_paths_are_accepted(live_tree: Path, path: str) -> None:
    assert check_path(live_tree, path) == os.path.normpath(path)


@pytest.mark.parametrize("path", [
    "/etc/passwd", "../etc/passwd", "dialogs/../../etc/passwd", "dialogs/../foundation/config.py",
    "dialogs/config.yml", "dialogs/credentials.yml", "dialogs/endpoints.yml", "dialogs/actions/tourism.py",
    "config/veratur.yml", "nlu_data/train/catalog_lookups.yml", "dialogs/domain.yaml.bak", "dialogs/models/x.yml",
    "", "dialogs\x00/domain.yml", "nlu_data/train/../../../../tmp/x.yml",
])
def test_paths_outside_the_flow_folders_are_rejected(live_tree: Path, path: str) -> None:
    with pytest.raises(PathRejected):
        check_path(live_tree, path)


def test_symlinks_are_rejected_even_inside(live_tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.yml"
    outside.write_text("a: 1\n")
    (live_tree / "nlu_data" / "train" / "evil.yml").symlink_to(outside)
    (live_tree / "dialogs" / "data" / "alias.yml").symlink_to(live_tree / "dialogs" / "data" / "rules.yml")
    with pytest.raises(PathRejected, match="fuera|enlace"):
        check_path(live_tree, "nlu_data/train/evil.yml")
    with pytest.raises(PathRejected, match="enlace"):
        check_path(live_tree, "dialogs/data/alias.yml")
    listed = {f.path for f in list_flow_files(live_tree)}
    assert "nlu_data/train/evil.yml" not in listed and "dialogs/data/alias.yml" not in listed


def test_a_symlinked_folder_is_rejected(live_tree: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    shutil.rmtree(live_tree / "dialogs" / "tests", ignore_errors=True)
    (live_tree / "dialogs" / "tests").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(PathRejected):
        check_path(live_tree, "dialogs/tests/stories.yml")


def test_size_limit() -> None:
    check_size("nlu_data/train/nlu.yml", "a" * MAX_FILE_BYTES)
    with pytest.raises(PathRejected, match="1 MB"):
        check_size("nlu_data/train/nlu.yml", "a" * (10 * 1024 * 1024))
