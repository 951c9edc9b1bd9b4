"""`veratur rasa`: run `rasa run --enable-api` on 127.0.0.1 with the cached model for the current dialogue YAML.

Also the helpers other code uses to start the dialogue stack as child processes (`veratur chat`, the tests):
`RasaStack` starts the action server (Python 3.11, this venv) and the Rasa server (Python 3.10 venv) on the
given ports, waits until both answer, and stops them (process groups, so no orphan is left behind).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from urllib.error import URLError
from urllib.parse import unquote, urlparse
from urllib.request import urlopen

from foundation.config import Settings
from foundation.paths import REPO_ROOT
from veratur.training import DIALOGS_DIR, RASA_BIN, TrainingError, ensure_model, latest_model, rasa_env

STARTUP_TIMEOUT_S = 180.0
"""Loading TensorFlow and the model takes ~20-40 s on two busy cores."""
STOP_GRACE_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TRACKER_EXPIRY_S = 7200
"""Conversations are kept this long in Redis (a call lasts at most turns.max_call_duration_s): the tracker store
does not grow with every call the node ever took, and several Rasa servers can share conversations."""
TRACKER_KEY_PREFIX = "veraturrasa"   # Rasa accepts only an alphanumeric prefix


def write_endpoints(action_port: int, directory: Path, redis_url: str | None = None) -> Path:
    """An endpoints.yml pointing Rasa at the action server on `action_port`, with the tracker store and the lock
    store in Redis when `redis_url` is given (Rasa falls back to memory by itself if Redis fails at run time).

    The lock store matters once several Rasa servers share the trackers (dialogue.rasa_failover_urls): a turn
    that moves to another server while the first still processes the previous one waits for it instead of
    writing the conversation at the same time."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"endpoints-{action_port}.yml"
    text = f'action_endpoint:\n  url: "http://127.0.0.1:{action_port}/webhook"\n'
    if redis_url:
        connection = _redis_connection(redis_url)
        text += (f"tracker_store:\n  type: redis\n{connection}  key_prefix: {TRACKER_KEY_PREFIX}\n"
                 f"  record_exp: {TRACKER_EXPIRY_S}\n")
        text += f"lock_store:\n  type: redis\n{connection}  key_prefix: {TRACKER_KEY_PREFIX}\n"
    path.write_text(text, encoding="utf-8")
    return path


def _redis_connection(redis_url: str) -> str:
    """The url/port/db/password lines of a Rasa Redis store (indented for its block)."""
    url = urlparse(redis_url)
    db = (url.path or "/0").strip("/") or "0"
    text = f"  url: {url.hostname or '127.0.0.1'}\n  port: {url.port or 6379}\n  db: {int(db)}\n"
    if url.password:
        text += f"  password: {json.dumps(unquote(url.password))}\n"
    return text


def rasa_command(model: Path, port: int, endpoints: Path, host: str = "127.0.0.1") -> list[str]:
    return [str(RASA_BIN), "run", "--enable-api", "-i", host, "-p", str(port), "-m", str(model),
            "--endpoints", str(endpoints), "--credentials", str(DIALOGS_DIR / "credentials.yml"),
            "--response-timeout", "30"]


def actions_command(port: int) -> list[str]:
    return [sys.executable, "-m", "veratur.cli", "actions", "--port", str(port)]


def _get(url: str, timeout: float = 2.0) -> bool:
    try:
        with urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local URL built here
            return 200 <= resp.status < 300
    except (URLError, OSError, ValueError):
        return False


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before answering on {url}")
        if _get(url):
            return
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not answer on {url} within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the child's process group, SIGKILL after a grace period."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class RasaStack:
    """The action server and `rasa run` as child processes on local ports (free ones by default)."""

    def __init__(self, model: Path, rasa_port: int | None = None, action_port: int | None = None,
                 log_dir: Path | None = None, env: dict[str, str] | None = None,
                 redis_url: str | None = None, dense: bool = False) -> None:
        self.model = model
        self.rasa_port = rasa_port or free_port()
        self.action_port = action_port or free_port()
        self.log_dir = log_dir or (REPO_ROOT / "var" / "rasa")
        self.env = env
        self.redis_url = redis_url
        self.rasa: subprocess.Popen[bytes] | None = None
        self.actions: subprocess.Popen[bytes] | None = None
        # dense: also the dense intent service (dialogs/dense) on a free port, which Rasa then asks
        self.dense_port = free_port() if dense else None
        self.dense: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rasa_port}"

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> RasaStack:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        endpoints = write_endpoints(self.action_port, self.log_dir, self.redis_url)
        base_env = dict(os.environ) if self.env is None else dict(self.env)
        try:
            with open(self.log_dir / f"actions-{self.action_port}.log", "wb") as out:
                self.actions = subprocess.Popen(actions_command(self.action_port), cwd=REPO_ROOT, env=base_env,
                                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            renv = rasa_env()
            renv.update({k: v for k, v in base_env.items() if k.startswith("VERATUR")})
            if self.dense_port is not None:
                from veratur.dense_server import ENV_URL
                from veratur.dense_server import start as start_dense
                self.dense = start_dense(self.dense_port, REPO_ROOT / "var" / "dense",
                                         self.log_dir / f"dense-{self.dense_port}.log")
                renv[ENV_URL] = f"http://127.0.0.1:{self.dense_port}"
            with open(self.log_dir / f"rasa-{self.rasa_port}.log", "wb") as out:
                self.rasa = subprocess.Popen(rasa_command(self.model, self.rasa_port, endpoints), cwd=DIALOGS_DIR,
                                             env=renv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            wait_http(f"http://127.0.0.1:{self.action_port}/health", self.actions, timeout, "the action server")
            if self.dense is not None:
                wait_http(f"http://127.0.0.1:{self.dense_port}/health", self.dense, timeout, "the dense service")
            wait_http(f"{self.url}/status", self.rasa, timeout, "rasa run")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.rasa)
        stop_process(self.actions)
        stop_process(self.dense)

    def __enter__(self) -> RasaStack:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="port (default: the port of dialogue.rasa_url)")
    parser.add_argument("--action-port", type=int, default=None,
                        help="action server port (default dialogue.action_server_port)")
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the cached one)")
    parser.add_argument("--no-train", action="store_true",
                        help="do not train when the YAML changed; use the newest model there is")


def run(settings: Settings, args: argparse.Namespace) -> int:
    model = args.model
    if model is None and settings.dialogue.model_source:
        from veratur.model_sync import model_at_start  # a dialogue node runs the admin node's live model
        model = model_at_start(settings)
    if model is None:
        try:
            model = latest_model() if args.no_train else ensure_model(progress=lambda line: print(line, flush=True))
        except TrainingError as exc:
            print(f"veratur rasa: {exc}", file=sys.stderr)
            return 1
    if model is None or not Path(model).exists():
        print("veratur rasa: no trained model: run `veratur train`", file=sys.stderr)
        return 1
    port = args.port or urlparse(settings.dialogue.rasa_url).port or 5005
    action_port = args.action_port or settings.dialogue.action_server_port
    endpoints = write_endpoints(action_port, settings.path(settings.data_dir) / "rasa", settings.redis.url)
    # A dialogue node serves the media nodes: Rasa listens on dialogue.rasa_url's address, not only on loopback.
    host = (urlparse(settings.dialogue.rasa_url).hostname or "127.0.0.1") if settings.node.role == "dialogue" \
        else "127.0.0.1"
    cmd = rasa_command(Path(model), port, endpoints, host=host)
    print(f"rasa: {Path(model).name} on http://{host}:{port} (actions on {action_port})", flush=True)
    os.chdir(DIALOGS_DIR)
    from veratur.dense_server import rasa_dense_env
    os.execve(cmd[0], cmd, {**rasa_env(), **rasa_dense_env(settings)})   # the supervisor manages rasa itself
