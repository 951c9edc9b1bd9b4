"""The revision store: every applied flow change, with author, time, message, diff and model, plus an audit log.

A small content-addressed store under `<data_dir>/flows/` (git's idea without git): file contents are blobs named
by their SHA-256 in `objects/`, each revision is one JSON line in `revisions.jsonl` holding the full manifest
(path -> blob) of the flow tree, so a rollback to any revision is a single lookup, never a replay of diffs.
`audit.jsonl` records who validated, applied, rolled back or failed what. Appends are serialized with an
fcntl lock, so the CLI and the web app (several processes) can share one store on one node.

Why not database tables: the flow files live on the node's disk next to the models trained from them; keeping
their history beside them means `veratur flows rollback` works with the database down, and needs no migration.
"""
from __future__ import annotations

import difflib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from veratur.flows.paths import sha256_bytes

MAX_DIFF_CHARS = 200_000
"""A revision keeps at most this much diff text (a rewritten catalog can be larger; the blobs keep it all)."""


@dataclass(frozen=True)
class Revision:
    """One state of the flow tree that went live."""

    id: int
    parent: int | None
    author: str
    created: str
    message: str
    kind: str                       # baseline | apply | rollback
    manifest: dict[str, str]        # path -> sha256 of the content
    changed: list[str] = field(default_factory=list)
    diff: str = ""
    model: str | None = None        # the model file trained from this tree


@dataclass(frozen=True)
class AuditEntry:
    time: str
    actor: str
    action: str
    detail: dict[str, Any]


class RevisionStore:
    """Blobs, revisions and the audit log of one node's flow files."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.objects = directory / "objects"
        self.models = directory / "models"
        self._revisions = directory / "revisions.jsonl"
        self._audit = directory / "audit.jsonl"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.models.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive across processes: one apply/rollback at a time on this node."""
        with open(self.dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ blobs
    def put_blob(self, data: bytes) -> str:
        digest = sha256_bytes(data)
        path = self.objects / digest
        if not path.exists():
            _atomic_write(path, data)
        return digest

    def blob(self, digest: str) -> bytes:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise KeyError(digest)
        return (self.objects / digest).read_bytes()

    # ------------------------------------------------------------------ revisions
    def revisions(self) -> list[Revision]:
        if not self._revisions.exists():
            return []
        out = []
        for line in self._revisions.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(Revision(**json.loads(line)))
        return out

    def get(self, rev_id: int) -> Revision:
        for rev in self.revisions():
            if rev.id == rev_id:
                return rev
        raise KeyError(f"no existe la revisión {rev_id}")

    def head(self) -> Revision | None:
        revs = self.revisions()
        return revs[-1] if revs else None

    def contents(self, rev: Revision) -> dict[str, bytes]:
        return {path: self.blob(digest) for path, digest in rev.manifest.items()}

    def record(self, *, author: str, message: str, kind: str, files: dict[str, bytes],
               model: str | None = None) -> Revision:
        """Append a revision whose tree is `files` (the whole flow tree); the diff is against the head."""
        head = self.head()
        old = self.contents(head) if head else {}
        manifest = {path: self.put_blob(data) for path, data in sorted(files.items())}
        changed = sorted(p for p in set(old) | set(manifest)
                         if (head.manifest.get(p) if head else None) != manifest.get(p))
        rev = Revision(id=(head.id + 1) if head else 1, parent=head.id if head else None, author=author,
                       created=_now(), message=message, kind=kind, manifest=manifest, changed=changed,
                       diff=unified_diff(old, files, changed)[:MAX_DIFF_CHARS], model=model)
        with open(self._revisions, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(rev), ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return rev

    def keep_model(self, model: Path) -> None:
        """A hard link (or copy) of a revision's model, so a rollback never retrains even after pruning."""
        target = self.models / model.name
        if target.exists() or not model.exists():
            return
        try:
            os.link(model, target)
        except OSError:
            _atomic_write(target, model.read_bytes())

    # ------------------------------------------------------------------ audit
    def audit(self, actor: str, action: str, **detail: Any) -> None:
        entry = AuditEntry(time=_now(), actor=actor, action=action, detail=detail)
        with open(self._audit, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(entry), ensure_ascii=False, default=str) + "\n")

    def audit_log(self, limit: int = 200) -> list[AuditEntry]:
        if not self._audit.exists():
            return []
        lines = [ln for ln in self._audit.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return [AuditEntry(**json.loads(ln)) for ln in lines[-limit:]][::-1]


def unified_diff(old: dict[str, bytes], new: dict[str, bytes], paths: list[str] | None = None) -> str:
    """A unified diff of the flow files that differ between two trees (missing files count as empty)."""
    chunks: list[str] = []
    for path in paths if paths is not None else sorted(set(old) | set(new)):
        a = old.get(path, b"").decode("utf-8", errors="replace").splitlines(keepends=True)
        b = new.get(path, b"").decode("utf-8", errors="replace").splitlines(keepends=True)
        if a == b:
            continue
        for line in difflib.unified_diff(a, b, f"a/{path}" if path in old else "/dev/null",
                                         f"b/{path}" if path in new else "/dev/null"):
            chunks.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(chunks)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
