"""Run a list of scripts against a node (one started here, or one already running) with an agent for transfers."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from testkit.voice_eval.node import Agent, free_port_block, run_node
from testkit.voice_eval.runner import ScriptResult, Target, run_script
from testkit.voice_eval.script import Script

REDIS_URL = "redis://127.0.0.1:6379/0"


def spanish_speech(asr: dict[str, Any]) -> bool:
    """Whether a node with this `asr` section recognizes Spanish: Whisper does; Vosk only with a Spanish model."""
    engine = str(asr.get("engine", "vosk"))
    return engine == "whisper" or (engine == "vosk" and str(asr.get("model", "es")).startswith("es")
                                   and asr.get("spanish_model_present", False) is True)


@contextlib.contextmanager
def started_node(work: Path, *, rasa_url: str | None, database_url: str | None, asr: dict[str, Any],
                 workers: int = 1) -> Iterator[Target]:
    """A node of our own plus the sipp agent it transfers to; the Target to play scripts against."""
    agent_port = free_port_block(1)
    agent = Agent(work / "agent", agent_port)
    try:
        node_asr = {k: v for k, v in asr.items() if k != "spanish_model_present"}
        with run_node(work / "node", rasa_url=rasa_url, database_url=database_url, agent_port=agent_port,
                      workers=workers, asr=node_asr) as node:
            yield Target(node.uri, node.database_url, spanish_speech(asr), REDIS_URL, agent)
    finally:
        agent.stop()


def run_scripts(scripts: list[Script], target: Target, work: Path, *, keep_audio: bool = False,
                quick: bool = False, progress: Callable[[ScriptResult], None] | None = None) -> list[ScriptResult]:
    results = []
    for i, script in enumerate(scripts):
        result = run_script(script, target, work / f"{i + 1:02d}-{script.name}", keep_audio=keep_audio,
                            quick=quick)
        results.append(result)
        if progress:
            progress(result)
    return results
