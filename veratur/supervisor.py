"""`veratur up`: start and supervise the whole node as child processes.

Order: the Rasa server first (its cold start takes ~30 s; until it answers, the engine falls back to the DTMF
menu) together with the action server; then the IVR workers and the web app; then Kamailio once the workers
answer SIP OPTIONS. When the front door answers, the SIP URI and web URLs are printed.

A child that dies is restarted with exponential backoff; a dead worker is first taken out of Kamailio's
rotation so only its own calls are lost, and those are closed: Kamailio ends their dialogs (the caller gets a BYE
at once instead of silence until its own media timeout) and their call records get `ended_at` and disposition
`lost`. A worker that stops answering OPTIONS (frozen) is killed and restarted.
Ctrl-C / SIGTERM: workers are drained in Kamailio (no new calls), asked to stop (each lets its calls end for up
to `sip.shutdown_grace_s`), then everything else stops. Every child runs in its own process group with a
parent-death signal, so nothing is left behind even if the supervisor itself is killed.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib.util
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from pydantic import ValidationError

from foundation import node_state
from foundation.config import NODE_ROLES, ConfigError, Settings
from foundation.logs import kv
from foundation.paths import REPO_ROOT
from veratur import kamailio, registrations
from veratur.child_output import OutputFilter
from veratur.health import http_ok, sip_options
from veratur.membership import Membership

if TYPE_CHECKING:
    from case_bridge.service import CaseService

log = logging.getLogger("veratur.supervisor")

RESTART_BACKOFF_FIRST_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0            # a child that ran this long has its backoff reset
WORKER_READY_TIMEOUT_S = 180.0   # model load + prompt pre-rendering on a busy 2-core machine
KAMAILIO_READY_TIMEOUT_S = 15.0
HEALTH_INTERVAL_S = 5.0
WORKER_FROZEN_PROBES = 3         # consecutive unanswered OPTIONS before a worker is killed and restarted
STARTUP_FAILURES_GIVE_UP = 5     # a child that exits this many times in a row before ever being ready
STOP_MARGIN_S = 10.0             # after SIGTERM (and a worker's grace period) before SIGKILL
PR_SET_PDEATHSIG = 1
DUPLICATE_SIGNAL_S = 1.0         # a repeated stop signal within this time is the same request
KAMCMD_ATTEMPTS = 3
LOST_CALLS_ATTEMPTS = 5          # closing a dead worker's call records: the database may be down for a while
LOST_CALLS_RETRY_S = 2.0
REGISTRATION_POLL_MAX_S = 5.0    # uac.reg_dump at least this often while registrations are configured

Probe = Callable[[], Awaitable[bool]]


def pid_file(settings: Settings) -> Path:
    """Where `veratur up` leaves its pid for `veratur node drain`."""
    return settings.path(settings.data_dir) / "veratur-up.pid"


def worker_node_name(node_name: str, index: int) -> str:
    """The node name worker `index` records its calls under (ivr.worker.Worker.node)."""
    return f"{node_name}/w{index}"


class StartupError(Exception):
    """The node cannot start; the message says what to install or fix."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, help="IVR worker processes (default sip.workers)")
    parser.add_argument("--no-dialogue", action="store_true",
                        help="do not start Rasa and the action server (the engine uses its DTMF menu)")
    parser.add_argument("--no-web", action="store_true", help="do not start the web app")
    parser.add_argument("--workers-only", action="store_true",
                        help="scale-out: only the IVR workers on their worker ports (and the dialogue unless "
                             "--no-dialogue), no Kamailio and no web; another node's Kamailio lists them in "
                             "sip.remote_workers")
    parser.add_argument("--role", choices=NODE_ROLES,
                        help="scale-out: front (Kamailio, web), media (workers, registered with node.front_doors), "
                             "dialogue (Rasa, actions) or all (default node.role)")
    parser.add_argument("--ivr-app", default="engine",
                        help="call handler of the workers (see `veratur ivr --app`)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.workers is not None:
        if not 1 <= args.workers <= 64:
            print("veratur up: --workers must be between 1 and 64", file=sys.stderr)
            return 2
        settings = settings.model_copy(update={"sip": settings.sip.model_copy(update={"workers": args.workers})})
    if getattr(args, "role", None):
        try:    # validated again: a media node without front doors is refused here too
            settings = Settings.model_validate({**settings.model_dump(),
                                                "node": {**settings.node.model_dump(), "role": args.role}})
        except ValidationError as exc:
            print(f"veratur up: --role {args.role}: {exc.errors()[0]['msg']}", file=sys.stderr)
            return 2
    supervisor = Supervisor(settings, args)
    try:
        return asyncio.run(supervisor.run())
    except StartupError as exc:
        print(f"veratur up: {exc}", file=sys.stderr)
        return 2


def _die_with_parent() -> None:
    """In the child before exec: own process group, and SIGTERM if the supervisor dies (no orphans)."""
    os.setpgrp()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class ChildSpec:
    """One supervised process: what to run and how to tell it is healthy."""

    name: str
    argv: list[str]
    probe: Probe
    ready_timeout_s: float
    worker_index: int | None = None
    stop_timeout_s: float = STOP_MARGIN_S


@dataclass
class Child:
    spec: ChildSpec
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures_in_a_row: int = 0
    healthy: bool = False
    healthy_since: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """Owns every child process of the node and its lifecycle."""

    def __init__(self, settings: Settings, args: argparse.Namespace) -> None:
        self.settings = settings
        self.args = args
        self.kamailio_paths = kamailio.KamailioPaths.for_settings(settings)
        self.children: dict[str, Child] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._fast_stop = False
        self._stop_requested_at = 0.0
        self._case_service: CaseService | None = None
        self._draining = asyncio.Event()
        self._state_changed = asyncio.Event()       # a child went up or down: the live view hears it at once
        self.role = settings.node.role
        self.membership = (Membership(settings, settings.sip.workers)
                           if self.role == "media" and not getattr(args, "workers_only", False) else None)
        self.registry = CollectorRegistry()
        self.child_up = Gauge("veratur_child_up", "1 while the child process is running and healthy", ["child"],
                              registry=self.registry)
        self.child_restarts = Counter("veratur_child_restarts_total", "Restarts of a child process", ["child"],
                                      registry=self.registry)
        self.registrations = registrations.RegistrationMonitor(settings)
        self.registration_up = Gauge("veratur_sip_registration_up",
                                     "1 while the registration at the PBX/trunk is registered", ["registration"],
                                     registry=self.registry)
        self.registration_failures = Gauge("veratur_sip_registration_failed_attempts",
                                           "Failed REGISTER attempts seen since start", ["registration"],
                                           registry=self.registry)

    # ---------------------------------------------------------------- plan
    def _veratur(self, *command: str) -> list[str]:
        # Run from the repository root (cwd), so `-m` finds every top-level package even when the editable
        # install predates one of them; a relative --config is made absolute for the same reason.
        argv = [sys.executable, "-m", "veratur.cli", "--log-level", getattr(self.args, "log_level", "INFO")]
        if getattr(self.args, "config", None):
            argv += ["--config", os.path.abspath(self.args.config)]
        return argv + list(command)

    def plan(self) -> list[ChildSpec]:
        """The children to run, after checking that the code and binaries for each are there."""
        s = self.settings
        sip = s.sip
        host = sip.bind_address
        if importlib.util.find_spec("ivr.worker") is None:
            raise StartupError("the IVR worker (module ivr.worker) is not installed: run `make setup`")
        specs: list[ChildSpec] = []
        role = self.role
        workers_only = getattr(self.args, "workers_only", False)
        runs_workers = role in ("all", "media")
        if not self.args.no_dialogue and role in ("all", "dialogue"):
            specs += self._dense_specs()
            specs += self._optional("rasa", "veratur.rasa_server", ChildSpec(
                "rasa", self._veratur("rasa"), lambda: http_ok(s.dialogue.rasa_url.rstrip("/") + "/status"), 300.0))
            action_port = s.dialogue.action_server_port
            specs += self._optional("actions", "dialogs.actions.server", ChildSpec(
                "actions", self._veratur("actions"),
                lambda: http_ok(f"http://127.0.0.1:{action_port}/health"), 120.0))
        if s.recognition_service.mode == "builtin" and runs_workers:
            url = urlparse(s.recognition_service.url)
            asr_host, asr_port = url.hostname or "127.0.0.1", url.port or 2700
            specs += self._optional("asr-service", "ivr.recognition_service", ChildSpec(
                "asr-service", self._veratur("asr-service"), self._tcp_probe(asr_host, asr_port), 180.0))
        behind_kamailio = sip.use_kamailio or workers_only or role == "media"
        worker_ports = [sip.worker_port(i) for i in range(sip.workers)] if behind_kamailio else [sip.port]
        if not runs_workers:
            worker_ports = []
        grace = getattr(sip, "shutdown_grace_s", 30.0)
        for index, port in enumerate(worker_ports):
            specs.append(ChildSpec(
                f"ivr-{index}",
                self._veratur("ivr", "--index", str(index), "--port", str(port), "--app", self.args.ivr_app),
                self._sip_probe(host, port), WORKER_READY_TIMEOUT_S, worker_index=index,
                stop_timeout_s=grace + STOP_MARGIN_S))
        if not self.args.no_web and not workers_only and role in ("all", "front"):
            specs += self._web_specs()
        if sip.use_kamailio and not workers_only and role in ("all", "front"):
            kamailio.find_binary()
            specs.append(ChildSpec("kamailio", [], self._sip_probe(host, sip.port), KAMAILIO_READY_TIMEOUT_S))
        return specs

    def _dense_specs(self) -> list[ChildSpec]:
        """The dense intent service (dialogs/dense) beside Rasa, which asks it where DIET is unsure; without it
        (disabled, or .venv-dense not installed) Rasa keeps DIET's intents, so it is never a reason not to start."""
        from veratur import dense_server

        url = self.settings.dialogue.dense_url()
        if url is None:
            return []
        if not dense_server.available():
            log.warning("component not started %s", kv(event="component_missing", child="dense",
                                                       module=str(dense_server.DENSE_PYTHON)))
            return []
        # The first start embeds the training examples (~70 s on two busy cores); later ones load the cache.
        return [ChildSpec("dense", self._veratur("dense"), lambda: http_ok(url + "/health"), 300.0)]

    def _web_specs(self) -> list[ChildSpec]:
        """web.processes aiohttp processes on one port (SO_REUSEPORT when more than one; the kernel spreads the
        connections). Each is probed on its own Unix socket, since a probe of the shared port reaches any of them.
        Sessions, CSRF tokens and rate limits hold across them: signed cookies under the one key file, counters in
        Redis (or the database). The first ("web") loads the catalog and the demo case; the others don't."""
        from veratur.webapp import health_socket

        count = self.settings.web.process_count()
        specs: list[ChildSpec] = []
        for index in range(count):
            argv = self._veratur("web", "--index", str(index), *(["--reuse-port"] if count > 1 else []),
                                 *(["--no-migrate"] if index else []))
            sock = str(health_socket(self.settings, index))
            specs += self._optional("web", "veratur.webapp", ChildSpec(
                "web" if index == 0 else f"web-{index}", argv,
                lambda sock=sock: http_ok("http://web/healthz", uds=sock), 120.0))   # type: ignore[misc]
        return specs

    @staticmethod
    def _optional(name: str, module: str, spec: ChildSpec) -> list[ChildSpec]:
        if importlib.util.find_spec(module.rsplit(".", 1)[0]) is None or importlib.util.find_spec(module) is None:
            log.warning("component not started %s", kv(event="component_missing", child=name, module=module))
            return []
        return [spec]

    @staticmethod
    def _tcp_probe(host: str, port: int) -> Probe:
        async def probe() -> bool:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.5)
            except (OSError, TimeoutError):
                return False
            writer.close()
            return True
        return probe

    @staticmethod
    def _sip_probe(host: str, port: int) -> Probe:
        async def probe() -> bool:
            return await sip_options(host, port, timeout_s=1.5) == 200
        return probe

    # ---------------------------------------------------------------- run
    async def _migrate_database(self) -> None:
        """Bring the case database to the current schema before any child opens it: the action server seeds the
        trámite catalog at start and would otherwise find no tables on a fresh install. A database that is down
        is not fatal: calls go on and the workers keep their writes in the outbox."""
        if getattr(self.args, "workers_only", False) or self.role == "media":
            return                    # the front and dialogue nodes own the schema; media nodes only write
        from case_bridge.migrate import upgrade
        self.settings.path(self.settings.data_dir).mkdir(parents=True, exist_ok=True)
        try:
            await asyncio.to_thread(upgrade, self.settings.database_url)
        except Exception as exc:  # any driver error: report it and go on
            log.error("database migration failed %s", kv(error=f"{type(exc).__name__}: {exc}"[:300]))
        else:
            log.info("database at head %s", kv(event="db_migrated"))

    async def _daily_purge(self) -> None:
        """retention.*: once a day at daily_at (Veracruz time) delete call details and transcripts past their age."""
        from case_bridge.retention import purge
        from case_bridge.service import CaseService
        from case_bridge.views import LOCAL_TZ

        r = self.settings.retention
        hh, mm = (int(x) for x in r.daily_at.split(":"))
        while True:
            now = datetime.now(LOCAL_TZ)
            due = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
            due = due if due > now else due + timedelta(days=1)
            await asyncio.sleep((due - now).total_seconds())

            def run_purge() -> str:
                svc = CaseService.from_settings(self.settings)
                try:
                    result = purge(svc.uow, now=datetime.now(UTC), call_records_days=r.call_records_days,
                                   transcripts_days=r.transcripts_days)
                    return kv(event="retention_purge", calls=result.calls, turns=result.turns)
                finally:
                    svc.close()

            try:
                log.info("retention purge %s", await asyncio.to_thread(run_purge))
            except Exception as exc:  # a database that is down: try again tomorrow
                log.error("retention purge failed %s", kv(error=f"{type(exc).__name__}: {exc}"[:300]))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGUSR1, self._on_drain)
        try:
            specs = self.plan()
        except kamailio.KamailioError as exc:
            raise StartupError(str(exc)) from None
        if any(spec.name == "kamailio" for spec in specs):
            try:
                paths = kamailio.write_config(self.settings, self.kamailio_paths)
                await kamailio.check_config(paths)
            except (kamailio.KamailioError, ConfigError) as exc:
                raise StartupError(str(exc)) from None
            for spec in specs:
                if spec.name == "kamailio":
                    spec.argv = kamailio.command(paths)
        self._serve_metrics()
        await self._migrate_database()
        if not getattr(self.args, "workers_only", False) and self.role in ("all", "front"):
            self._spawn(self._daily_purge(), "retention")
        self._write_pid_file()
        by_name = {spec.name: spec for spec in specs}
        for spec in specs:       # listed as down until started and healthy: the live view shows every process
            self.children.setdefault(spec.name, Child(spec))
        self._spawn(self._report_state(), "node-state")
        try:
            # Rasa first: its cold start is the longest; nothing waits for it, nor for the recognition
            # service (until it answers, the workers' calls are keypad-only).
            for name in ("rasa", "dense", "actions", "asr-service"):
                if name in by_name:
                    self._supervise(by_name[name])
            workers = [spec for spec in specs if spec.worker_index is not None]
            webs = [spec for spec in specs if spec.name == "web" or spec.name.startswith("web-")]
            for spec in workers + webs:
                self._supervise(spec)
            if workers and not await self._wait_ready([spec.name for spec in workers]):
                return 1
            if self.membership is not None:
                await self._sync_membership()
                self._spawn(self._keep_membership(), "membership")
            if "kamailio" in by_name:
                self._supervise(by_name["kamailio"])
                if not await self._wait_ready(["kamailio"]):
                    return 1
                if self.settings.sip.registrations:
                    self._spawn(self._watch_registrations(), "registrations")
            self._print_banner()
            if "rasa" in by_name and self.settings.dialogue.model_source:
                from veratur.model_sync import keep_synced  # a dialogue node follows the admin node's model
                self._spawn(keep_synced(self.settings, self.settings.dialogue.rasa_url), "model-sync")
            self._spawn(self._announce_later("rasa", f"Dialogue: Rasa is ready at {self.settings.dialogue.rasa_url}"),
                        "announce-rasa")
            web = self.settings.web
            self._spawn(self._announce_later("web", f"Web: ready at http://{web.host}:{web.port}/"), "announce-web")
            await self._stopping.wait()
            return 0
        finally:
            await self._stop_all()
            with contextlib.suppress(OSError):
                pid_file(self.settings).unlink()

    def _on_signal(self, sig: int) -> None:
        now = time.monotonic()
        if self._stopping.is_set():
            # A second Ctrl-C means "now"; the same signal delivered twice at once (to the process and to its
            # group, as `timeout` and some process managers do) does not.
            if now - self._stop_requested_at > DUPLICATE_SIGNAL_S:
                log.warning("second signal: stopping without waiting for calls %s", kv(signal=sig))
                self._fast_stop = True
            return
        log.info("stopping %s", kv(event="stop_requested", signal=signal.Signals(sig).name))
        self._stop_requested_at = now
        self._stopping.set()

    def _write_pid_file(self) -> None:
        path = pid_file(self.settings)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{os.getpid()}\n", encoding="utf-8")
        except OSError as exc:
            log.warning("pid file not written %s", kv(path=str(path), error=exc))

    # ---------------------------------------------------------------- scale-out: membership and drain
    def _ready_workers(self) -> set[int]:
        return {c.spec.worker_index for c in self.children.values()
                if c.spec.worker_index is not None and c.healthy and c.proc is not None
                and c.proc.returncode is None}

    async def _sync_membership(self) -> None:
        assert self.membership is not None
        await self.membership.sync(self._ready_workers())

    async def _keep_membership(self) -> None:
        """Re-add this node's workers to a front door that lost them (restarted) while the node runs."""
        interval = self.settings.node.register_interval_s
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)
            if not self._stopping.is_set():
                await self._sync_membership()

    def _on_drain(self) -> None:
        """SIGUSR1 (`veratur node drain`): no new calls, let the calls end, then stop."""
        if self._draining.is_set() or self._stopping.is_set():
            return
        log.info("drain requested %s", kv(event="drain_requested", node=self.settings.node_name))
        self._draining.set()
        self._spawn(self._drain(), "drain")

    async def _drain(self) -> None:
        limit = self.settings.node.drain_timeout_s
        started = time.monotonic()
        if self.membership is not None:
            self.membership.draining = True
        for index in sorted(self._ready_workers()):
            await self._set_worker_state(index, "d")
        load: int | None = None
        while time.monotonic() - started < limit and not self._stopping.is_set():
            load = await self._calls_held()
            if load == 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 1.0)
        log.info("drained %s", kv(event="node_drained", node=self.settings.node_name, calls_left=load,
                                  waited_s=round(time.monotonic() - started, 1)))
        print(f"Drained: {load if load is not None else 'unknown'} call(s) left after "
              f"{time.monotonic() - started:.0f} s; stopping", flush=True)
        self._stopping.set()

    async def _calls_held(self) -> int | None:
        """Calls the front door(s) count on this node's workers (None: no front door answered)."""
        if self.membership is not None:
            return await self.membership.load()
        if "kamailio" in self.children:
            try:
                states = await kamailio.worker_states(self.kamailio_paths)
            except kamailio.KamailioError:
                return None
            return sum(load for _, load in states.values())
        return None

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _supervise(self, spec: ChildSpec) -> None:
        child = Child(spec)
        self.children[spec.name] = child
        self._spawn(self._keep_running(child), f"supervise-{spec.name}")

    async def _wait_ready(self, names: list[str]) -> bool:
        """Wait until the named children are healthy. False if a stop came first, one never got ready in time,
        or one keeps exiting during start-up (a broken install or config: waiting longer will not help)."""
        children = [self.children[name] for name in names]
        timeout = max(child.spec.ready_timeout_s for child in children)
        deadline = time.monotonic() + timeout
        problem = ""
        while not all(child.ready.is_set() for child in children):
            if self._stopping.is_set():
                return False
            crashing = [c.spec.name for c in children if c.failures_in_a_row >= STARTUP_FAILURES_GIVE_UP]
            if crashing:
                problem = f"{', '.join(crashing)} exited {STARTUP_FAILURES_GIVE_UP} times during start-up"
                break
            if time.monotonic() > deadline:
                missing = [c.spec.name for c in children if not c.ready.is_set()]
                problem = f"{', '.join(missing)} did not become ready within {timeout:.0f} s"
                break
            await asyncio.sleep(0.2)
        if problem:
            log.error("start-up failed %s", kv(event="startup_failed", problem=problem))
            print(f"veratur up: {problem}; see the log lines above", file=sys.stderr)
            return False
        return True

    # ---------------------------------------------------------------- one child
    async def _start(self, child: Child) -> None:
        spec = child.spec
        child.proc = await asyncio.create_subprocess_exec(
            *spec.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, preexec_fn=_die_with_parent, cwd=REPO_ROOT)
        child.started_at = time.monotonic()
        child.healthy = False
        log.info("child started %s", kv(event="child_started", child=spec.name, pid=child.proc.pid))
        self._spawn(self._pump_output(spec.name, child.proc), f"output-{spec.name}")

    async def _keep_running(self, child: Child) -> None:
        spec = child.spec
        while not self._stopping.is_set():
            try:
                await self._start(child)
            except OSError as exc:
                log.error("child cannot start %s", kv(event="child_start_failed", child=spec.name, error=exc))
                code: int | None = None
            else:
                assert child.proc is not None
                watcher = asyncio.ensure_future(self._watch_health(child))
                code = await child.proc.wait()
                watcher.cancel()
            self.child_up.labels(spec.name).set(0)
            child.healthy = False
            self._state_changed.set()
            if self._stopping.is_set():
                return
            ran_s = time.monotonic() - child.started_at
            child.failures_in_a_row = 0 if ran_s >= STABLE_AFTER_S else child.failures_in_a_row + 1
            delay = min(RESTART_BACKOFF_FIRST_S * 2 ** max(child.failures_in_a_row - 1, 0), RESTART_BACKOFF_MAX_S)
            log.error("child exited %s", kv(event="child_exited", child=spec.name, code=code,
                                             ran_s=round(ran_s, 1), restart_in_s=delay))
            if child.failures_in_a_row == STARTUP_FAILURES_GIVE_UP and not child.ready.is_set():
                print(f"veratur up: {spec.name} keeps failing at start (exit status {code}); its output is above, "
                      f"prefixed '{spec.name} |'. Still retrying every {RESTART_BACKOFF_MAX_S:.0f} s at most.",
                      file=sys.stderr, flush=True)
            if spec.worker_index is not None:
                await self._set_worker_state(spec.worker_index, "ip")
                self._spawn(self._close_lost_calls(spec.worker_index, datetime.now(UTC)),
                            f"lost-calls-{spec.name}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            child.restarts += 1
            self.child_restarts.labels(spec.name).inc()

    async def _watch_health(self, child: Child) -> None:
        """Mark the child ready when its probe first passes; afterwards, kill a worker that stops answering."""
        spec = child.spec
        deadline = time.monotonic() + spec.ready_timeout_s
        while not await spec.probe():
            if time.monotonic() > deadline:
                log.error("child not healthy %s", kv(event="child_not_ready", child=spec.name,
                                                     timeout_s=spec.ready_timeout_s))
                deadline = float("inf")        # say it once; keep probing (Rasa may still be training)
            await asyncio.sleep(0.5)
        child.healthy, child.healthy_since = True, time.monotonic()
        self._state_changed.set()
        self.child_up.labels(spec.name).set(1)
        ready_s = time.monotonic() - child.started_at
        log.info("child ready %s", kv(event="child_ready", child=spec.name, ready_s=round(ready_s, 2),
                                      restarts=child.restarts))
        if spec.worker_index is not None and child.restarts:
            await self._set_worker_state(spec.worker_index, "d" if self._draining.is_set() else "ap")
        child.ready.set()
        missed = 0
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            if self._stopping.is_set():
                return
            if await spec.probe():
                missed = 0
                continue
            missed += 1
            log.warning("health probe failed %s", kv(event="probe_failed", child=spec.name, missed=missed))
            if spec.worker_index is not None and missed >= WORKER_FROZEN_PROBES and child.proc is not None:
                log.error("worker frozen, killing it %s", kv(event="worker_frozen", child=spec.name))
                self._signal_group(child.proc, signal.SIGKILL)
                return

    async def _pump_output(self, name: str, proc: asyncio.subprocess.Process) -> None:
        """Child output on our stderr, each line prefixed with the child's name."""
        assert proc.stdout is not None
        prefix = f"{name} | ".encode()
        output = OutputFilter(name)
        while True:
            try:
                line = await proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue                        # an over-long line: drop it rather than stop pumping
            if not line:
                return
            if name == "kamailio" and self.registrations.configured:
                self.registrations.note_log_line(line)
            clean = output.line(line)
            if clean is None:
                continue
            sys.stderr.buffer.write(prefix + clean)
            sys.stderr.buffer.flush()

    async def _watch_registrations(self) -> None:
        """Poll the front door's registrations: metrics, state-change log lines, the file /healthz reads."""
        interval = min(REGISTRATION_POLL_MAX_S, float(self.settings.sip.registration_check_s))
        path = registrations.state_file(self.settings)

        async def rpc(*args: str) -> str:
            return await kamailio.kamcmd(self.kamailio_paths, *args)
        announced: set[str] = set()
        while not self._stopping.is_set():
            try:
                await self.registrations.poll(rpc)
            except kamailio.KamailioError as exc:
                log.warning("registration state unknown %s", kv(event="registration_poll_failed", error=exc))
            for name, item in self.registrations.snapshot().items():
                if item["state"] == "registered" and name not in announced:
                    announced.add(name)
                    print(f"Registration: {name} registered at {item['registrar']}", flush=True)
                self.registration_up.labels(name).set(1 if item["state"] == "registered" else 0)
                self.registration_failures.labels(name).set(float(str(item["failed_attempts"])))
            with contextlib.suppress(OSError):
                self.registrations.write(path)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)

    def process_states(self) -> list[node_state.ProcessState]:
        now = time.monotonic()
        out = []
        for name, child in sorted(self.children.items()):
            up = child.healthy and child.proc is not None and child.proc.returncode is None
            out.append(node_state.ProcessState(name, up, child.restarts,
                                               round(now - child.healthy_since, 1) if up else None))
        return out

    async def _report_state(self) -> None:
        """The processes' state for the supervisor's live view (foundation.node_state): on every change and every
        few seconds (the file's age says the supervisor is still there)."""
        path = node_state.state_file(self.settings.path(self.settings.data_dir))
        while not self._stopping.is_set():
            try:
                node_state.write(path, self.settings.node_name, self.process_states())
            except OSError as exc:
                log.warning("node state not written %s", kv(event="node_state_failed", error=exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), node_state.WRITE_INTERVAL_S)
            self._state_changed.clear()
        with contextlib.suppress(OSError):
            path.unlink()        # stopped: the live view says "unknown", not the last state seen

    async def _set_worker_state(self, index: int, state: str) -> None:
        if self.membership is not None:
            await self.membership.set_state(index, state)
        child = self.children.get("kamailio")
        if child is None or child.proc is None or child.proc.returncode is not None:
            return
        for attempt in range(1, KAMCMD_ATTEMPTS + 1):
            try:
                await kamailio.set_worker_state(self.kamailio_paths, index, state)
                log.info("dispatcher state %s", kv(event="worker_state", worker=index, state=state))
                return
            except kamailio.KamailioError as exc:
                log.warning("dispatcher state not changed %s", kv(event="worker_state_failed", worker=index,
                                                                  state=state, attempt=attempt, error=exc))
                await asyncio.sleep(0.2)

    async def _close_lost_calls(self, index: int, died_at: datetime) -> None:
        """The calls a dead worker held: end their dialogs in Kamailio, close their call records as lost."""
        child = self.children.get("kamailio")
        if child is not None and child.proc is not None and child.proc.returncode is None:
            try:
                ended = await kamailio.end_worker_dialogs(self.kamailio_paths,
                                                          kamailio.worker_uri(self.settings, index))
                log.info("dead worker's dialogs ended %s", kv(event="dialogs_ended", worker=index, dialogs=ended))
            except kamailio.KamailioError as exc:
                log.warning("dead worker's dialogs not ended %s", kv(event="dialogs_end_failed", worker=index,
                                                                     error=exc))
        if self.membership is not None:
            ended = await self.membership.end_dialogs(index)
            log.info("dead worker's dialogs ended %s", kv(event="dialogs_ended", worker=index, dialogs=ended))
        node = worker_node_name(self.settings.node_name, index)
        for attempt in range(1, LOST_CALLS_ATTEMPTS + 1):
            try:
                closed = await asyncio.to_thread(self._close_lost_records, node, died_at)
            except Exception as exc:  # any driver error: the database may come back
                log.warning("lost calls not closed %s", kv(event="lost_calls_failed", worker=index, attempt=attempt,
                                                          error=f"{type(exc).__name__}: {exc}"[:200]))
                await asyncio.sleep(LOST_CALLS_RETRY_S * attempt)
                continue
            log.info("lost calls closed %s", kv(event="lost_calls_closed", worker=index, calls=closed))
            return

    def _close_lost_records(self, node: str, died_at: datetime) -> int:
        from case_bridge.service import CaseService
        if self._case_service is None:
            self._case_service = CaseService.from_settings(self.settings)
        return self._case_service.close_calls_of_node(node, "lost", started_before=died_at, ended_at=died_at)

    # ---------------------------------------------------------------- stop
    @staticmethod
    def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    async def _stop_children(self, children: list[Child], timeout_s: float | None = None) -> None:
        running = [c for c in children if c.proc is not None and c.proc.returncode is None]
        for child in running:
            assert child.proc is not None
            self._signal_group(child.proc, signal.SIGTERM)

        async def reap(child: Child) -> None:
            assert child.proc is not None
            limit = timeout_s if timeout_s is not None else child.spec.stop_timeout_s
            deadline = time.monotonic() + limit
            while child.proc.returncode is None and time.monotonic() < deadline and not self._fast_stop:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(child.proc.wait(), 0.5)
            if child.proc.returncode is None:
                log.warning("child did not stop, killing it %s", kv(event="child_killed", child=child.spec.name))
            # The whole group: also whatever the child started itself.
            self._signal_group(child.proc, signal.SIGKILL)
            await child.proc.wait()
            log.info("child stopped %s", kv(event="child_stopped", child=child.spec.name,
                                            code=child.proc.returncode))

        await asyncio.gather(*(reap(c) for c in running))

    async def _stop_all(self) -> None:
        self._stopping.set()
        workers = [c for c in self.children.values() if c.spec.worker_index is not None]
        # 1. No new calls for any worker; in-dialog requests (BYE) still pass through Kamailio.
        for child in workers:
            assert child.spec.worker_index is not None
            await self._set_worker_state(child.spec.worker_index, "d")
        if self.membership is not None:
            self.membership.draining = True        # the membership loop must not add them back meanwhile
        # 2. Workers let their calls end (sip.shutdown_grace_s), hang up the rest, exit.
        await self._stop_children(workers)
        if self.membership is not None:
            await self.membership.leave()
        # 3. Everything else: the front door last among the SIP parts, so the workers' BYEs got through.
        await self._stop_children([c for c in self.children.values() if c.spec.worker_index is None])
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if self._case_service is not None:
            self._case_service.close()
        log.info("node stopped %s", kv(event="node_stopped", node=self.settings.node_name))

    # ---------------------------------------------------------------- presentation
    def _serve_metrics(self) -> None:
        try:
            start_http_server(self.settings.metrics.port, addr=self.settings.sip.bind_address,
                              registry=self.registry)
        except OSError as exc:
            log.warning("supervisor metrics not served %s", kv(port=self.settings.metrics.port, error=exc))

    def _print_banner(self) -> None:
        s = self.settings
        sip = s.sip
        host = sip.public_address or sip.bind_address
        uri_host = f"[{host}]" if ":" in host else host
        workers = [c for c in self.children.values() if c.spec.worker_index is not None]
        if "kamailio" in self.children:
            transports = "/".join(t.upper() for t in sip.transports)
            remote = f" + {len(sip.remote_workers)} on other nodes" if sip.remote_workers else ""
            if self.role == "front":
                remote += (f" + the media nodes' (they register over RPC at "
                           f"{kamailio.rpc_target(sip.bind_address, s.node.rpc_port)})")
            front = f"{len(workers)} worker(s){remote} x {sip.max_calls_per_worker} calls, behind Kamailio"
        elif self.membership is not None:
            transports = "UDP/TCP"
            front = f"media node: registered with the front door(s) {', '.join(s.node.front_doors)}"
        elif getattr(self.args, "workers_only", False):
            transports = "UDP/TCP"
            front = "workers only: another node's Kamailio lists them in sip.remote_workers"
        else:
            transports = "UDP/TCP"
            front = f"1 worker x {sip.max_calls_per_worker} calls, no Kamailio"
        lines = [f"Veratur node {s.node_name} is up."]
        if self.role == "dialogue":
            lines.append("  Role:      dialogue (Rasa and the action server only)")
        elif "kamailio" in self.children or not (getattr(self.args, "workers_only", False) or self.membership):
            lines += [f"  Dial:      sip:veratur@{uri_host}:{sip.port}  ({transports}; {front})",
                      f"  Try it:    veratur call sip:veratur@{uri_host}:{sip.port} --dtmf 1"]
        else:
            ports = ", ".join(str(sip.worker_port(i)) for i in range(len(workers)))
            lines.append(f"  Workers:   {uri_host} ports {ports}  ({front})")
        if "web" in self.children:
            base = f"http://{s.web.host}:{s.web.port}"
            state = "" if self.children["web"].ready.is_set() else " (starting)"
            procs = sum(1 for name in self.children if name == "web" or name.startswith("web-"))
            lines.append(f"  Web:       {base}/ (citizen portal), {base}/oficina (office clerks), "
                         f"{base}/healthz{state}; {procs} process(es) on the port")
        lines.append(f"  Metrics:   http://{sip.bind_address}:{s.metrics.port}/metrics (supervisor), workers on "
                     f"ports {s.metrics.port + 1}..{s.metrics.port + len(workers)}")
        lines.append(f"  Speech:    {self._speech_line()}")
        for name, reg in self.registrations.configured.items():
            lines.append(f"  Registers: {name} at {reg.registrar} (state in /healthz and "
                         f"veratur_sip_registration_up; a failure is logged with its reason)")
        if "rasa" in self.children:
            state = "ready" if self.children["rasa"].ready.is_set() else \
                "starting (callers get the DTMF menu until it is ready)"
            lines.append(f"  Dialogue:  Rasa at {s.dialogue.rasa_url} {state}")
        else:
            lines.append("  Dialogue:  Rasa not started here (DTMF menu unless dialogue.rasa_url answers)")
        if "dense" in self.children:
            state = "ready" if self.children["dense"].ready.is_set() else "starting (DIET's intents alone until then)"
            lines.append(f"  Dense:     intent service at {s.dialogue.dense_url()} {state}")
        lines.append("  Ctrl-C stops the node (calls are drained first; a second Ctrl-C does not wait).")
        print("\n".join(lines), flush=True)
        log.info("node ready %s", kv(event="node_ready", node=s.node_name, sip_port=sip.port, workers=len(workers)))

    def _speech_line(self) -> str:
        """Which recognizer the callers are heard by (the workers decide the same way at their start)."""
        from ivr.speech.choice import choose
        s = self.settings
        try:
            label = choose(s).label
        except Exception as exc:            # asr.on_missing_model: fail, already reported by the workers
            label = f"none ({exc})"
        service = s.recognition_service
        if service.mode == "builtin":
            return f"{label}, one recognition service for the node at {service.url}"
        if service.mode == "external":
            return f"the vosk-server at {service.url} (external)"
        return f"{label}, in each worker"

    async def _announce_later(self, name: str, message: str) -> None:
        """Print `message` when a child that was not ready at the banner becomes ready."""
        child = self.children.get(name)
        if child is None or child.ready.is_set():
            return
        await child.ready.wait()
        print(message, flush=True)
