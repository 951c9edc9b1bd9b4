"""A real Rasa server and action server for the live-swap tests, with a SQLite tracker store.

`veratur.rasa_server.RasaStack` writes endpoints with the action server only (in-memory trackers). `PUT /model`
builds a new agent with a new tracker store from the endpoints, so with in-memory trackers every conversation
in progress would restart its dialogue state at the swap. A persistent tracker store (SQL or Redis) keeps it:
this helper starts Rasa that way, reusing rasa_server's command lines, waits and process-group stop."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from foundation.paths import REPO_ROOT
from veratur.rasa_server import STARTUP_TIMEOUT_S, actions_command, free_port, rasa_command, stop_process, wait_http
from veratur.training import DIALOGS_DIR, rasa_env


class SwappableRasa:
    def __init__(self, model: Path, workdir: Path) -> None:
        self.model, self.workdir = model, workdir
        self.rasa_port, self.action_port = free_port(), free_port()
        self.rasa: subprocess.Popen[bytes] | None = None
        self.actions: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rasa_port}"

    def start(self) -> SwappableRasa:
        self.workdir.mkdir(parents=True, exist_ok=True)
        endpoints = self.workdir / "endpoints.yml"
        endpoints.write_text(
            f'action_endpoint:\n  url: "http://127.0.0.1:{self.action_port}/webhook"\n'
            f"tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: {self.workdir / 'trackers.db'}\n",
            encoding="utf-8")
        try:
            with open(self.workdir / "actions.log", "wb") as out:
                self.actions = subprocess.Popen(actions_command(self.action_port), cwd=REPO_ROOT, env=dict(os.environ),
                                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            with open(self.workdir / "rasa.log", "wb") as out:
                self.rasa = subprocess.Popen(rasa_command(self.model, self.rasa_port, endpoints), cwd=DIALOGS_DIR,
                                             env=rasa_env(), stdout=out, stderr=subprocess.STDOUT,
                                             start_new_session=True)
            wait_http(f"http://127.0.0.1:{self.action_port}/health", self.actions, STARTUP_TIMEOUT_S, "actions")
            wait_http(f"{self.url}/status", self.rasa, STARTUP_TIMEOUT_S, "rasa run")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.rasa)
        stop_process(self.actions)
