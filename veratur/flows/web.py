"""The admin pages for dialog flows (role admin), mounted into the one aiohttp web app.

    admin = FlowsAdmin(service, auth)      # auth: the web app's staff login (see `StaffAuth`)
    admin.setup(app)                       # routes under /admin/flows, a cleanup hook for jobs and chat

Pages are server-rendered (jinja2) with a little plain JavaScript (static/flows.js: YAML highlighting, drafts,
validate, diff, apply with progress polling, text chat). The browser keeps the administrator's pending edits
(one or more files) and sends them whole with each request; the server keeps no draft state. Apply and
"try the candidate" run as background jobs (threads: training and Rasa are subprocesses) polled by the page.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import jinja2
from aiohttp import web

from foundation import jsonbody
from foundation.logs import kv
from veratur.flows import model as models
from veratur.flows.paths import MAX_FILE_BYTES, PathRejected
from veratur.flows.service import Conflict, Edit, FlowService, Invalid
from veratur.flows.validation import Problem, errors_in
from veratur.training import TrainingError

log = logging.getLogger("veratur.flows.web")

HERE = Path(__file__).parent
PREFIX = "/admin/flows"
API = "/api/admin/flows"
"""JSON endpoints live under /api/ so the web app answers their errors in JSON and a missing login with 401."""
MAX_REQUEST_BYTES = 4 * MAX_FILE_BYTES
"""A request carries a few edited files; a 10 MB body is refused before it is read."""
MAX_JOBS = 50
CHAT_TIMEOUT_S = 30.0
CANDIDATE_IDLE_S = 600.0
"""A candidate Rasa nobody has talked to for this long is stopped (it holds ~1.4 GB)."""
ADMIN_ROLE = "admin"


@dataclass(frozen=True)
class Staff:
    username: str
    role: str


class StaffAuth(Protocol):
    """What the web app's staff login gives these pages."""

    async def staff(self, request: web.Request) -> Staff | None:
        """The logged-in staff member, or None."""

    def csrf_token(self, request: web.Request) -> str:
        """The session's CSRF token (sent back by the page in the X-CSRF-Token header)."""

    def login_url(self, request: web.Request) -> str:
        """Where to send a visitor who is not logged in."""


@dataclass
class Job:
    """A background apply, rollback or candidate training, as the page polls it."""

    id: str
    kind: str
    author: str
    state: str = "running"             # running | done | failed | rejected | conflict
    log: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    started: float = field(default_factory=time.time)

    def progress(self, stage: str, message: str) -> None:
        self.log.append({"t": round(time.time() - self.started, 1), "stage": stage, "message": message})

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "author": self.author, "state": self.state, "log": self.log,
                "problems": self.problems, "result": self.result, "error": self.error}


def problem_dict(p: Problem) -> dict[str, Any]:
    return {"file": p.file, "line": p.line, "column": p.column, "key": p.key, "message": p.message,
            "severity": p.severity, "text": str(p)}


class FlowsAdmin:
    """Routes, jobs and the candidate chat server of the flow administration pages."""

    def __init__(self, service: FlowService, auth: StaffAuth) -> None:
        self.service = service
        self.auth = auth
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                       autoescape=jinja2.select_autoescape(["html"]))
        self._apply_lock = asyncio.Lock()
        self._candidate: Any = None             # veratur.rasa_server.RasaStack of the candidate being tried
        self._candidate_model: str | None = None
        self._candidate_used = 0.0
        self._chat_ids = itertools.count(1)
        self._reaper: asyncio.Task[None] | None = None

    def setup(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/admin", self.home)          # where the staff login sends an admin
        r.add_get(PREFIX, self.index)
        r.add_get(PREFIX + "/", self.index)
        r.add_get(PREFIX + "/edit", self.edit_page)
        r.add_get(PREFIX + "/revisions/{rev:\\d+}", self.revision_page)
        r.add_get(API + "/file", self.api_file)
        r.add_post(API + "/validate", self.api_validate)
        r.add_post(API + "/diff", self.api_diff)
        r.add_post(API + "/apply", self.api_apply)
        r.add_post(API + "/rollback", self.api_rollback)
        r.add_post(API + "/try", self.api_try)
        r.add_post(API + "/chat", self.api_chat)
        r.add_get(API + "/jobs/{id}", self.api_job)
        r.add_static(PREFIX + "/static", HERE / "static")
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)

    async def _startup(self, app: web.Application) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop(), name="flows-candidate-reaper")

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(60)
            await self.reap_idle_candidate()

    async def _cleanup(self, app: web.Application) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self._stop_candidate()

    # ------------------------------------------------------------------ access
    async def _admin(self, request: web.Request, *, api: bool) -> Staff:
        staff = await self.auth.staff(request)
        if staff is None:
            if api:
                raise web.HTTPUnauthorized(text="inicie sesión")
            raise web.HTTPFound(self.auth.login_url(request))
        if staff.role != ADMIN_ROLE:
            log.warning(kv(event="flows_forbidden", user=staff.username, role=staff.role, path=request.path))
            raise web.HTTPForbidden(text="solo los administradores editan los flujos")
        return staff

    async def _post(self, request: web.Request) -> tuple[Staff, dict[str, Any]]:
        staff = await self._admin(request, api=True)
        sent = request.headers.get("X-CSRF-Token", "")
        if not sent or not hmac.compare_digest(sent, self.auth.csrf_token(request)):
            raise web.HTTPForbidden(text="token CSRF no válido; recargue la página")
        if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_REQUEST_BYTES, actual_size=request.content_length)
        # read the stream directly: the app-wide client_max_size (64 kB for forms) is too small for a catalog,
        # so this route enforces its own limit, chunk by chunk, whatever Content-Length claimed
        raw = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            raw += chunk
            if len(raw) > MAX_REQUEST_BYTES:
                raise web.HTTPRequestEntityTooLarge(max_size=MAX_REQUEST_BYTES, actual_size=len(raw))
        try:
            body = jsonbody.parse(bytes(raw))
        except jsonbody.BadJson as exc:
            raise web.HTTPBadRequest(text=f"se esperaba JSON: {exc}") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="se esperaba un objeto JSON")
        return staff, body

    @staticmethod
    def _edits(body: dict[str, Any]) -> list[Edit]:
        raw = body.get("edits")
        if not isinstance(raw, list) or not raw:
            raise web.HTTPBadRequest(text="edits: una lista de {path, text, base}")
        edits = []
        for item in raw:
            if not isinstance(item, dict) or not isinstance(item.get("path"), str) \
                    or not isinstance(item.get("text"), str):
                raise web.HTTPBadRequest(text="cada edición necesita path y text")
            base = item.get("base")
            edits.append(Edit(item["path"], item["text"], base if isinstance(base, str) and base else None))
        return edits

    def _render(self, name: str, request: web.Request, staff: Staff, **context: Any) -> web.Response:
        html = self._env.get_template(name).render(staff=staff, csrf=self.auth.csrf_token(request), prefix=PREFIX, api=API,
                                                   max_bytes=MAX_FILE_BYTES, **context)
        return web.Response(text=html, content_type="text/html",
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})

    # ------------------------------------------------------------------ pages
    async def home(self, request: web.Request) -> web.Response:
        await self._admin(request, api=False)
        raise web.HTTPFound(PREFIX)

    async def index(self, request: web.Request) -> web.Response:
        staff = await self._admin(request, api=False)
        files = await asyncio.to_thread(self.service.files)
        revisions = list(reversed(self.service.store.revisions()))[:100]
        audit = self.service.store.audit_log(100)
        return self._render("flows_index.html", request, staff, files=files, revisions=revisions, audit=audit,
                            rasa_model=await asyncio.to_thread(models.loaded_model, self.service.rasa_url or ""))

    async def edit_page(self, request: web.Request) -> web.Response:
        staff = await self._admin(request, api=False)
        path = request.query.get("path", "")
        try:
            text, sha = await asyncio.to_thread(self.service.read, path)
        except PathRejected as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        files = await asyncio.to_thread(self.service.files)
        editable = next((bool(f["editable"]) for f in files if f["path"] == path), False)
        return self._render("flows_edit.html", request, staff, path=path, text=text, sha=sha, editable=editable,
                            files=files)

    async def revision_page(self, request: web.Request) -> web.Response:
        staff = await self._admin(request, api=False)
        try:
            rev = self.service.store.get(int(request.match_info["rev"]))
        except KeyError:
            raise web.HTTPNotFound(text="no existe esa revisión") from None
        return self._render("flows_revision.html", request, staff, rev=rev)

    # ------------------------------------------------------------------ API
    async def api_file(self, request: web.Request) -> web.Response:
        await self._admin(request, api=True)
        try:
            text, sha = await asyncio.to_thread(self.service.read, request.query.get("path", ""))
        except PathRejected as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"path": request.query["path"], "text": text, "sha256": sha})

    async def api_validate(self, request: web.Request) -> web.Response:
        staff, body = await self._post(request)
        edits = self._edits(body)
        try:
            problems = await asyncio.to_thread(self.service.validate, edits, deep=bool(body.get("deep")))
        except PathRejected as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.service.store.audit(staff.username, "validate", files=[e.path for e in edits],
                                 errors=len(errors_in(problems)))
        return web.json_response({"ok": not errors_in(problems), "problems": [problem_dict(p) for p in problems]})

    async def api_diff(self, request: web.Request) -> web.Response:
        _, body = await self._post(request)
        edits = self._edits(body)
        try:
            for e in edits:
                self.service.normalize(e)
            diff = await asyncio.to_thread(self.service.diff, edits)
        except PathRejected as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"diff": diff})

    async def api_apply(self, request: web.Request) -> web.Response:
        staff, body = await self._post(request)
        edits = self._edits(body)
        message = str(body.get("message") or "").strip()[:500]
        if not message:
            return web.json_response({"error": "escriba un mensaje que diga qué cambió y por qué"}, status=400)
        try:   # answer a stale base or a bad path at once; the job checks again under the lock
            await asyncio.to_thread(self.service.check_edits, edits)
        except Conflict as exc:
            self.service.store.audit(staff.username, "apply_conflict", file=exc.path, changed_by=exc.by)
            return web.json_response({"error": str(exc), "conflict": exc.path, "by": exc.by}, status=409)
        except PathRejected as exc:
            self.service.store.audit(staff.username, "apply_rejected", error=str(exc)[:300])
            return web.json_response({"error": str(exc)}, status=400)
        job = self._start_job("apply", staff, lambda j: self.service.apply(
            edits, author=staff.username, message=message, progress=j.progress))
        return web.json_response({"job": job.id}, status=202)

    async def api_rollback(self, request: web.Request) -> web.Response:
        staff, body = await self._post(request)
        try:
            rev = int(body.get("revision"))  # type: ignore[arg-type]
            self.service.store.get(rev)
        except (TypeError, ValueError, KeyError):
            return web.json_response({"error": "revisión no válida"}, status=400)
        job = self._start_job("rollback", staff, lambda j: self.service.rollback(
            rev, author=staff.username, progress=j.progress))
        return web.json_response({"job": job.id}, status=202)

    async def api_try(self, request: web.Request) -> web.Response:
        """Train the candidate (cached by hash) and start a Rasa on it for the text chat."""
        staff, body = await self._post(request)
        edits = self._edits(body)
        job = self._start_job("try", staff, lambda j: self._try_candidate(edits, j))
        return web.json_response({"job": job.id}, status=202)

    async def api_chat(self, request: web.Request) -> web.Response:
        staff, body = await self._post(request)
        text = str(body.get("message") or "").strip()[:500]
        sender = str(body.get("sender") or f"admin-{staff.username}-{next(self._chat_ids)}")[:100]
        target = str(body.get("target") or "live")
        if not text:
            return web.json_response({"error": "mensaje vacío"}, status=400)
        if target == "candidate":
            if self._candidate is None:
                return web.json_response({"error": "no hay candidato en marcha: pulse Probar"}, status=409)
            url = self._candidate.url
            self._candidate_used = time.monotonic()
        else:
            url = self.service.rasa_url
        try:
            async with httpx.AsyncClient(timeout=CHAT_TIMEOUT_S) as client:
                resp = await client.post(f"{url}/webhooks/rest/webhook",
                                         json={"sender": sender, "message": text,
                                               "metadata": {"channel": "admin_chat", "admin": staff.username}})
                resp.raise_for_status()
                messages = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            return web.json_response({"error": f"Rasa no responde: {exc}"}, status=502)
        replies = [m.get("text", "") for m in messages if isinstance(m, dict) and m.get("text")]
        return web.json_response({"sender": sender, "target": target, "replies": replies})

    async def api_job(self, request: web.Request) -> web.Response:
        await self._admin(request, api=True)
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            raise web.HTTPNotFound(text="no existe ese trabajo")
        return web.json_response(job.as_dict())

    # ------------------------------------------------------------------ jobs
    def _start_job(self, kind: str, staff: Staff, work: Any) -> Job:
        job = Job(id=uuid.uuid4().hex[:12], kind=kind, author=staff.username)
        self.jobs[job.id] = job
        while len(self.jobs) > MAX_JOBS:
            self.jobs.popitem(last=False)
        task = asyncio.get_running_loop().create_task(self._run_job(job, work), name=f"flows-{kind}-{job.id}")
        task.add_done_callback(lambda t: None if t.cancelled() else t.exception())
        return job

    async def _run_job(self, job: Job, work: Any) -> None:
        async with self._apply_lock:
            try:
                result = await asyncio.to_thread(work, job)
            except Conflict as exc:
                job.state, job.error = "conflict", str(exc)
            except Invalid as exc:
                job.state, job.error = "rejected", str(exc)
                job.problems = [problem_dict(p) for p in exc.problems]
            except (PathRejected, TrainingError) as exc:
                job.state, job.error = "rejected", str(exc)
            except Exception as exc:
                log.exception("flows job %s failed", job.id)
                job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            else:
                job.state = "done"
                if job.kind in ("apply", "rollback"):
                    rev = result.revision
                    job.result = {"revision": rev.id if rev else None, "model": result.model.name,
                                  "swapped": result.swapped, "notes": result.notes}
                    await self._stop_candidate()
                else:
                    job.result = result
            job.progress(job.state, job.error or "terminado")

    def _try_candidate(self, edits: list[Edit], job: Job) -> dict[str, Any]:
        from veratur.rasa_server import RasaStack

        edits = [self.service.normalize(e) for e in edits]
        with self.service.candidate(edits) as root:
            problems = self.service.validate_candidate(root, False, job.progress)
            if errors_in(problems):
                raise Invalid(problems, "validación")
            model = self.service.trainer(root, lambda m: job.progress("train", m))
        live = models.loaded_model(self.service.rasa_url or "")
        if live and live.removesuffix(".tar.gz") == model.name.removesuffix(".tar.gz"):
            job.progress("chat", "el candidato es igual a lo que está en vivo: la charla usa el Rasa en vivo")
            return {"target": "live", "model": model.name}
        if self._candidate is None or self._candidate_model != model.name:
            self._stop_candidate_sync()
            job.progress("chat", "arrancando un Rasa con el candidato (~30 s)")
            self._candidate = RasaStack(model, log_dir=self.service.store.dir / "candidate").start()
            self._candidate_model = model.name
        self._candidate_used = time.monotonic()
        return {"target": "candidate", "model": model.name}

    def _stop_candidate_sync(self) -> None:
        if self._candidate is not None:
            self._candidate.stop()
            self._candidate = None
            self._candidate_model = None

    async def _stop_candidate(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._stop_candidate_sync)

    async def reap_idle_candidate(self) -> None:
        """Stop a candidate Rasa idle for CANDIDATE_IDLE_S (the web app may call this periodically)."""
        if self._candidate is not None and time.monotonic() - self._candidate_used > CANDIDATE_IDLE_S:
            await self._stop_candidate()


class WebappStaffAuth:
    """`StaffAuth` over the web app's signed-session staff login (case_bridge/web/security.py)."""

    async def staff(self, request: web.Request) -> Staff | None:
        from case_bridge.web.security import current_staff

        found = await current_staff(request)
        return Staff(found.username, found.role) if found else None

    def csrf_token(self, request: web.Request) -> str:
        from case_bridge.web.security import csrf_token

        return csrf_token(request)

    def login_url(self, request: web.Request) -> str:
        return f"/staff/login?next={request.path}"


def setup(app: web.Application) -> None:
    """Mount the admin pages in the web app (`veratur.webapp.ROUTE_MODULES` entry), on the live checkout."""
    from case_bridge.web.security import SETTINGS

    FlowsAdmin(FlowService(app[SETTINGS]), WebappStaffAuth()).setup(app)
