"""The flow administration service: read, validate, diff, apply and roll back the flow files of one node.

Apply pipeline (one at a time per node, under the store's lock):
  check bases → stage (live tree + edits in a temp dir) → validate (syntax, schema, catalogs) →
  `rasa data validate` → train (model cache by content hash) → `rasa test core` → swap into the running Rasa
  (`PUT /model`) → write the live files → record the revision → re-render changed prompts (TTS cache).
Nothing touches the live tree or the running model before every check has passed: an invalid change never
reaches a caller. Each edit carries the SHA-256 of the file it was made from; if the live file has changed
since, the apply stops with `Conflict` (no silent overwrite of another administrator's work).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from foundation.config import Settings
from foundation.logs import kv
from foundation.paths import REPO_ROOT
from veratur.flows import model as models
from veratur.flows.paths import (
    GENERATED_FILES,
    PathRejected,
    check_path,
    check_size,
    is_editable,
    list_flow_files,
    sha256_bytes,
    snapshot,
)
from veratur.flows.store import Revision, RevisionStore, unified_diff
from veratur.flows.validation import Problem, errors_in, rasa_data_validate, validate_tree
from veratur.training import TrainingError

log = logging.getLogger("veratur.flows")

Progress = Callable[[str, str], None]
"""progress(stage, message): stage is one of STAGES."""
STAGES = ("base", "stage", "validate", "rasa_validate", "train", "test", "swap", "write", "record", "prerender")
SUPPORT_FILES = ("dialogs/config.yml", "dialogs/dense/__init__.py", "dialogs/dense/component.py",
                 "dialogs/dense/decision.py", "dialogs/catalog_nlu/__init__.py", "dialogs/catalog_nlu/component.py",
                 "dialogs/catalog_nlu/client.py")
"""Not editable, but a candidate tree needs them to train and validate (config.yml names the dense component
and the catalog entity extractor, which Rasa imports from the candidate's dialogs/)."""
SYSTEM_AUTHOR = "sistema"


@dataclass(frozen=True, slots=True)
class Edit:
    """New content for one flow file, made from the version whose SHA-256 is `base` (None: a new file)."""

    path: str
    text: str
    base: str | None


class Conflict(Exception):
    """A file changed under an edit since the editor loaded it."""

    def __init__(self, path: str, base: str | None, current: str | None, by: str | None) -> None:
        self.path, self.base, self.current, self.by = path, base, current, by
        who = f" (revisión de {by})" if by else ""
        super().__init__(f"{path} cambió desde que lo abrió{who}: recargue el archivo y vuelva a aplicar su cambio")


class Invalid(Exception):
    """The candidate failed validation or its tests; `problems` says where."""

    def __init__(self, problems: list[Problem], stage: str) -> None:
        self.problems, self.stage = problems, stage
        super().__init__(f"{len(errors_in(problems))} error(es) en {stage}: "
                         + "; ".join(str(p) for p in errors_in(problems)[:5]))


@dataclass
class ApplyResult:
    revision: Revision | None
    model: Path
    swapped: bool
    notes: list[str] = field(default_factory=list)


class FlowService:
    """Everything the CLI and the admin pages do with flow files goes through here."""

    def __init__(self, settings: Settings, *, live_root: Path = REPO_ROOT, store: RevisionStore | None = None,
                 rasa_url: str | None = None, run_rasa_checks: bool = True,
                 trainer: Callable[[Path, Callable[[str], None]], Path] = models.train_candidate,
                 models_dir: Path = models.MODELS_DIR) -> None:
        self.settings = settings
        self.live_root = live_root
        base = settings.path(settings.data_dir) / "flows"
        self.store = store or RevisionStore(base)
        self.staging = self.store.dir / "staging"
        self.rasa_url = rasa_url if rasa_url is not None else settings.dialogue.rasa_url
        # every server the engine may use gets the new model (dialogue.rasa_failover_urls), not only the first
        self.rasa_urls = [self.rasa_url] if rasa_url is not None else settings.dialogue.rasa_urls()
        self.run_rasa_checks = run_rasa_checks
        self.trainer = trainer      # a seam for unit tests; the real one trains with Rasa (cached by hash)
        self.models_dir = models_dir  # the model cache the trainer uses (rollback restores kept models there)

    # ------------------------------------------------------------------ reading
    def files(self) -> list[dict[str, object]]:
        return [{"path": f.path, "size": f.size, "sha256": f.sha256, "editable": f.editable}
                for f in list_flow_files(self.live_root)]

    def read(self, path: str) -> tuple[str, str]:
        """(text, sha256) of a live flow file (generated files are readable too)."""
        rel = _readable(self.live_root, path)
        data = (self.live_root / rel).read_bytes()
        return data.decode("utf-8", errors="replace"), sha256_bytes(data)

    def diff(self, edits: list[Edit]) -> str:
        live = snapshot(self.live_root)
        new = dict(live)
        for e in edits:
            new[e.path] = e.text.encode("utf-8")
        return unified_diff(live, new)

    # ------------------------------------------------------------------ checks
    def check_edits(self, edits: list[Edit]) -> list[Edit]:
        """Normalized edits; PathRejected for a bad path or size, Conflict if a base is stale."""
        out = []
        for e in edits:
            rel = check_path(self.live_root, e.path)
            check_size(rel, e.text)
            out.append(Edit(rel, e.text.replace("\r\n", "\n"), e.base))
        for e in out:
            live = self.live_root / e.path
            current = sha256_bytes(live.read_bytes()) if live.exists() else None
            if current != e.base:
                raise Conflict(e.path, e.base, current, self._last_author(e.path))
        return out

    def _last_author(self, path: str) -> str | None:
        for rev in reversed(self.store.revisions()):
            if path in rev.changed:
                return rev.author
        return None

    @contextmanager
    def candidate(self, edits: list[Edit], files: dict[str, bytes] | None = None) -> Iterator[Path]:
        """A temp tree laid out like the repository: the live flow files (or `files`) with `edits` applied."""
        self.staging.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.staging, prefix="cand-") as tmp:
            root = Path(tmp)
            tree = dict(snapshot(self.live_root) if files is None else files)
            for e in edits:
                tree[e.path] = e.text.encode("utf-8")
            for support in SUPPORT_FILES:
                tree.setdefault(support, (self.live_root / support).read_bytes())
            for rel, data in tree.items():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(data)
            yield root

    def validate(self, edits: list[Edit], *, deep: bool = False, check_base: bool = False) -> list[Problem]:
        """Problems of the live tree with `edits` applied (deep: also `rasa data validate`, ~15 s)."""
        try:
            edits = self.check_edits(edits) if check_base else [self.normalize(e) for e in edits]
        except PathRejected as exc:
            return [Problem(edits[0].path if len(edits) == 1 else "(ruta)", str(exc))]
        with self.candidate(edits) as root:
            problems = self.validate_candidate(root, deep, lambda s, m: None)
        return problems

    def normalize(self, e: Edit) -> Edit:
        """The edit with its path checked and normalized and its size checked (PathRejected otherwise)."""
        rel = check_path(self.live_root, e.path)
        check_size(rel, e.text)
        return Edit(rel, e.text.replace("\r\n", "\n"), e.base)

    def validate_candidate(self, root: Path, deep: bool, progress: Progress) -> list[Problem]:
        """Problems of a candidate tree; also writes its catalog lookup tables (needed to train it)."""
        progress("validate", "validando sintaxis, claves y referencias")
        problems = validate_tree(root)
        if errors_in(problems):
            return problems
        try:
            models.write_catalog_lookups(root)
        except Exception as exc:  # the catalogs passed validation; this is a generator bug, still block
            return problems + [Problem("nlu_data/train/catalog_lookups.yml", f"no se pudo generar: {exc}")]
        if deep and self.run_rasa_checks:
            progress("rasa_validate", "rasa data validate")
            problems += rasa_data_validate(root)
        return problems

    # ------------------------------------------------------------------ apply
    def apply(self, edits: list[Edit], *, author: str, message: str, progress: Progress | None = None,
              kind: str = "apply", files: dict[str, bytes] | None = None) -> ApplyResult:
        """Validate, train, test and swap the candidate, then make it live and record it (see module doc)."""
        say = progress or (lambda stage, msg: None)
        with self.store.lock():
            try:
                return self._apply_locked(edits, author, message, say, kind, files)
            except (Conflict, Invalid, PathRejected, TrainingError) as exc:
                self.store.audit(author, f"{kind}_rejected", error=str(exc)[:2000],
                                 files=[e.path for e in edits])
                raise
            except Exception as exc:
                self.store.audit(author, f"{kind}_failed", error=str(exc)[:2000], files=[e.path for e in edits])
                raise

    def _apply_locked(self, edits: list[Edit], author: str, message: str, say: Progress, kind: str,
                      files: dict[str, bytes] | None) -> ApplyResult:
        say("base", "comprobando que los archivos no cambiaron desde que se abrieron")
        edits = self.check_edits(edits)
        self._ensure_baseline()
        say("stage", "preparando el candidato")
        with self.candidate(edits, files) as root:
            problems = self.validate_candidate(root, True, say)
            if errors_in(problems):
                raise Invalid(problems, "validación")
            say("train", "modelo del candidato")
            model = self.trainer(root, lambda m: say("train", m))
            fingerprint = _conversation_fingerprint(root) if self.run_rasa_checks else ""
            if fingerprint and fingerprint == _conversation_fingerprint(self.live_root):
                # Same model inputs and same test stories as what is live: the live model already passed them
                # (prompt-only or catalog-text edits apply in seconds instead of a minute of `rasa test`).
                say("test", "sin cambios en el modelo ni en las pruebas: siguen valiendo las del modelo en vivo")
            elif self.run_rasa_checks:
                say("test", "pruebas de conversación")
                passed, summary = models.run_conversation_tests(root, model, lambda m: say("test", m))
                if not passed:
                    raise Invalid([Problem("dialogs/tests", summary)], "pruebas de conversación")
                say("test", summary)
            new_tree = {rel: data for rel, data in snapshot(root).items()}
            old_live = snapshot(self.live_root)
            old_texts = _prompt_texts(old_live)
            swapped = self._swap(model, say)
            say("write", "escribiendo los archivos en vivo")
            try:
                self._write_live(new_tree)
            except BaseException:
                self._write_live(old_live)
                raise
        self.store.keep_model(model)
        say("record", "registrando la revisión")
        rev = self.store.record(author=author, message=message, kind=kind, files=new_tree, model=model.name)
        self.store.audit(author, kind, revision=rev.id, files=rev.changed, model=model.name, message=message)
        log.info(kv(event="flows_applied", revision=rev.id, author=author, files=len(rev.changed), model=model.name))
        notes = [] if swapped else ["Rasa no responde: el modelo nuevo se cargará cuando Rasa arranque"]
        changed_prompts = [t for t in _prompt_texts(new_tree) if t not in old_texts]
        if changed_prompts:
            say("prerender", f"renderizando {len(changed_prompts)} indicación(es) nueva(s)")
            try:
                asyncio.run(self._prerender(changed_prompts))
            except Exception as exc:  # a missing voice only costs the first caller a render; never fail the apply
                notes.append(f"no se pudieron pre-renderizar las indicaciones: {exc}")
        say("done", f"revisión {rev.id} en vivo")
        return ApplyResult(rev, model, swapped, notes)

    def rollback(self, rev_id: int, *, author: str, progress: Progress | None = None) -> ApplyResult:
        """Make revision `rev_id`'s tree live again, through the same checks (its model is cached)."""
        target = self.store.get(rev_id)
        files = self.store.contents(target)
        kept = self.store.models / (target.model or "")
        if target.model and kept.is_file() and not (self.models_dir / target.model).exists():
            shutil.copyfile(kept, self.models_dir / target.model)
        return self.apply([], author=author, message=f"rollback a la revisión {rev_id}", progress=progress,
                          kind="rollback", files=files)

    def _ensure_baseline(self) -> None:
        if self.store.head() is None:
            self.store.record(author=SYSTEM_AUTHOR, message="estado inicial", kind="baseline",
                              files=snapshot(self.live_root))

    def _swap(self, model: Path, say: Progress) -> bool:
        """Load the model into every Rasa server that answers; True if at least one runs it now. A server that
        does not answer loads the newest model when it starts (`veratur rasa` takes the cached one)."""
        swapped = False
        for url in (u for u in self.rasa_urls if u):
            current = models.loaded_model(url)
            if current is None:
                say("swap", f"Rasa en {url} no responde; el modelo se cargará al arrancar")
                continue
            if current == model.name or current == model.name.removesuffix(".tar.gz"):
                say("swap", f"Rasa en {url} ya usa {model.name}")
            else:
                say("swap", f"cargando {model.name} en Rasa en {url} (las llamadas en curso siguen)")
                models.swap_model(url, model)
            swapped = True
        return swapped

    def _write_live(self, tree: dict[str, bytes]) -> None:
        for rel, data in tree.items():
            if rel in SUPPORT_FILES:
                continue
            target = self.live_root / rel
            if target.exists() and target.read_bytes() == data:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.flows-tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        for flow in list_flow_files(self.live_root):   # a rollback removes files added after the target
            if flow.path not in tree and (is_editable(flow.path) or flow.path in GENERATED_FILES):
                (self.live_root / flow.path).unlink()

    async def _prerender(self, texts: list[str]) -> None:
        from ivr.speech.tts import EspeakSynthesizer

        tts = EspeakSynthesizer(voice=self.settings.tts.voice, rate=self.settings.tts.rate,
                                sample_rate=self.settings.media.sample_rate,
                                cache_dir=self.settings.path(self.settings.tts.cache_dir))
        await tts.start()
        try:
            await tts.prerender(texts)
        finally:
            await tts.close()


def _conversation_fingerprint(root: Path) -> str:
    """What decides the outcome of the conversation tests: the model's inputs and the test stories ("" when a
    file is unreadable, which never matches another tree, so the tests run)."""
    try:
        digest = hashlib.sha256(models.candidate_hash(root).encode())
        for story in models.test_stories(root):
            digest.update(str(story.relative_to(root)).encode())
            digest.update(story.read_bytes())
    except OSError:
        return ""
    return digest.hexdigest()


def _readable(root: Path, path: str) -> str:
    if path in GENERATED_FILES:
        return path
    return check_path(root, path, must_exist=True)


def _prompt_texts(tree: dict[str, bytes]) -> set[str]:
    """Fixed texts the phone says: the menu prompts and the domain responses without slot placeholders."""
    texts: set[str] = set()
    try:
        menu = yaml.safe_load(tree.get("dialogs/menu.yml", b"") or b"{}") or {}
        for key in ("greeting", "menu", "menu_short", "anything_else", "no_match", "goodbye"):
            if isinstance(menu.get(key), str):
                texts.add(" ".join(menu[key].split()))
        for option in menu.get("options") or []:
            if isinstance(option, dict) and isinstance(option.get("say"), str):
                texts.add(" ".join(option["say"].split()))
        domain = yaml.safe_load(tree.get("dialogs/domain.yml", b"") or b"{}") or {}
        for variants in (domain.get("responses") or {}).values():
            for v in variants or []:
                if isinstance(v, dict) and isinstance(v.get("text"), str) and "{" not in v["text"]:
                    texts.add(" ".join(v["text"].split()))
    except (yaml.YAMLError, AttributeError):
        pass
    return {t for t in texts if t}
