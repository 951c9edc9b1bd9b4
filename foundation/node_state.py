"""The node's processes up or down, as the supervisor last saw them: a small JSON file it replaces atomically every
few seconds and the web app's live view reads (another process, possibly restarted meanwhile).

A file older than `max_age_s` means the supervisor stopped reporting (stopped, stuck): the reader says so instead
of showing the last state seen as current. Only the node this web process runs on is seen (docs/operations.md).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRITE_INTERVAL_S = 2.0
MAX_AGE_S = 10.0            # five missed writes: the supervisor is gone


@dataclass(frozen=True, slots=True)
class ProcessState:
    name: str               # worker-0, rasa, actions, kamailio, web, asr-service ...
    up: bool                # running and its health probe passes
    restarts: int
    up_for_s: float | None  # since it last became healthy (None while down)


def state_file(data_dir: Path) -> Path:
    return data_dir / "run" / "node_state.json"


def write(path: Path, node: str, processes: list[ProcessState], *, now: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    body = {"at": now if now is not None else time.time(), "node": node,
            "processes": [{"name": p.name, "up": p.up, "restarts": p.restarts, "up_for_s": p.up_for_s}
                          for p in processes]}
    tmp.write_text(json.dumps(body), encoding="utf-8")
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class NodeState:
    node: str
    age_s: float
    processes: list[ProcessState]


def read(path: Path, max_age_s: float = MAX_AGE_S, *, now: float | None = None) -> NodeState | None:
    """The last state written, or None when absent, unreadable, malformed or stale (state unknown)."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        age = (now if now is not None else time.time()) - float(data["at"])
        if age > max_age_s:
            return None
        procs = [ProcessState(str(p["name"])[:64], bool(p["up"]), int(p["restarts"]),
                              None if p.get("up_for_s") is None else float(p["up_for_s"]))
                 for p in data["processes"]]
        return NodeState(str(data.get("node", ""))[:64], max(age, 0.0), procs)
    except (OSError, ValueError, KeyError, TypeError):
        return None
