"""Which files an administrator may edit, and the one function that turns a requested path into a safe one.

Only YAML under the flow folders is editable: the Rasa domain, rules, stories and test stories (dialogs/), the
engine's menu prompts (dialogs/menu.yml), NLU examples, synonyms and the catalogs (nlu_data/). Pipeline
configuration, credentials, endpoints, action code, models and generated files are not: they are code or
secrets, not content. A path is checked after resolving `..` and symlinks, so neither can lead outside.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

MAX_FILE_BYTES = 1024 * 1024
"""The largest flow file accepted (the biggest real one, tramites.yml, is ~60 kB)."""
EDITABLE_PATTERNS: tuple[str, ...] = (
    "dialogs/domain.yml",
    "dialogs/menu.yml",
    "dialogs/data/*.yml",
    "dialogs/tests/*.yml",
    "nlu_data/*.yml",
    "nlu_data/train/*.yml",
    "nlu_data/test/*.yml",
)
"""Glob patterns (relative, POSIX) of the editable files; a new file is allowed where a pattern matches."""
GENERATED_FILES = frozenset({"nlu_data/train/catalog_lookups.yml"})
"""Written by `veratur train` from the catalogs: shown, never edited (edit the catalogs instead)."""
FLOW_DIRS = ("dialogs", "nlu_data")


class PathRejected(ValueError):
    """A requested path is not an editable flow file; the message says why."""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_editable(rel: str) -> bool:
    return rel not in GENERATED_FILES and any(fnmatchcase(rel, pattern) for pattern in EDITABLE_PATTERNS)


def is_flow_file(rel: str) -> bool:
    """Editable or generated: every file that makes up the flows (and so the candidate tree)."""
    return rel in GENERATED_FILES or is_editable(rel)


def check_path(root: Path, requested: str, *, must_exist: bool = False) -> str:
    """The normalized relative path (`dialogs/domain.yml`) of an editable file under `root`, or PathRejected.

    Rejects absolute paths, `..` that leaves the tree, symlinks pointing anywhere, non-YAML names and files
    outside the editable patterns."""
    if not requested or "\x00" in requested:
        raise PathRejected("ruta vacía o no válida")
    pure = PurePosixPath(requested.replace("\\", "/"))
    if pure.is_absolute():
        raise PathRejected(f"{requested}: use una ruta relativa al proyecto (por ejemplo dialogs/domain.yml)")
    root_resolved = root.resolve()
    target = (root_resolved / pure).resolve()
    try:
        rel = target.relative_to(root_resolved).as_posix()
    except ValueError:
        raise PathRejected(f"{requested}: fuera de las carpetas de flujos (dialogs/, nlu_data/)") from None
    # every component of the written path must be a real directory/file, not a link (a link could be
    # re-pointed between check and write)
    probe = root_resolved
    for part in (root_resolved / pure).relative_to(root_resolved).parts:
        probe = probe / part
        if probe.is_symlink():
            raise PathRejected(f"{requested}: es un enlace simbólico; edite el archivo real")
    if not is_flow_file(rel):
        raise PathRejected(f"{requested}: no es un archivo de flujos editable (permitidos: "
                           + ", ".join(EDITABLE_PATTERNS) + ")")
    if rel in GENERATED_FILES:
        raise PathRejected(f"{requested}: se genera a partir de los catálogos; edite nlu_data/cities.yml o "
                           "nlu_data/tramites.yml")
    if must_exist and not target.is_file():
        raise PathRejected(f"{requested}: no existe")
    return rel


def check_size(rel: str, data: bytes | str) -> None:
    size = len(data.encode("utf-8") if isinstance(data, str) else data)
    if size > MAX_FILE_BYTES:
        raise PathRejected(f"{rel}: {size} bytes; el máximo es {MAX_FILE_BYTES} bytes (1 MB)")


@dataclass(frozen=True, slots=True)
class FlowFile:
    """One flow file as listed to an administrator."""

    path: str
    size: int
    sha256: str
    editable: bool


def list_flow_files(root: Path) -> list[FlowFile]:
    """Every flow file present under `root` (editable and generated), sorted by path; symlinks skipped."""
    found: list[FlowFile] = []
    for top in FLOW_DIRS:
        base = root / top
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.yml")):
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() or not path.is_file() or not is_flow_file(rel):
                continue
            data = path.read_bytes()
            found.append(FlowFile(rel, len(data), sha256_bytes(data), rel not in GENERATED_FILES))
    return found


def snapshot(root: Path) -> dict[str, bytes]:
    """Path -> content of every flow file under `root`."""
    return {f.path: (root / f.path).read_bytes() for f in list_flow_files(root)}
