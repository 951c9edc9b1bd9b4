"""Spoken length of the dialogue's answers: every topic of every city, every field of every trámite (real
catalog) and the status reply of the demo case, rendered by espeak-ng at the configured voice and rate.

Goal: no reply longer than ~20 s (a caller cannot scroll back). Prints count, p50 / p95 / max seconds and the
longest replies. Runs the actions in-process (no Rasa): the text is what the action server sends.

    .venv/bin/python bench/reply_lengths.py [--top 8]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import wave
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rasa_sdk import Tracker  # noqa: E402
from rasa_sdk.executor import CollectingDispatcher  # noqa: E402

from case_bridge.migrate import upgrade  # noqa: E402
from case_bridge.service import CaseService  # noqa: E402
from dialogs.actions.resources import Resources  # noqa: E402
from dialogs.actions.status import ActionStatusReport, ValidateStatusForm  # noqa: E402
from dialogs.actions.tourism import TOPIC_BY_INTENT, ActionTourismAnswer  # noqa: E402
from dialogs.actions.tramites import FIELD_BY_INTENT, ActionTramiteInfo  # noqa: E402
from dialogs.catalog import load_cities, load_tramites  # noqa: E402
from dialogs.catalog_seed import seed_catalog, seed_demo  # noqa: E402
from foundation.config import Settings  # noqa: E402

GOAL_S = 20.0


def tracker(text: str, intent: str, entities: list[dict[str, Any]], slots: dict[str, Any] | None = None) -> Tracker:
    latest = {"text": text, "intent": {"name": intent, "confidence": 1.0}, "entities": entities, "metadata": {}}
    events = [{"event": "user", "text": text, "parse_data": latest}]
    return Tracker("bench", dict(slots or {}), latest, events, False, None, {}, "action_listen")


def seconds(text: str, voice: str, rate: int, tmp: Path) -> float:
    out = tmp / "reply.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(out), text], check=True,
                   capture_output=True)
    with wave.open(str(out)) as w:
        return w.getnframes() / w.getframerate()


async def replies(res: Resources) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    tourism, tramite = ActionTourismAnswer(res), ActionTramiteInfo(res)
    for city in res.cities.cities:
        for intent in TOPIC_BY_INTENT:
            d = CollectingDispatcher()
            await tourism.run(d, tracker(f"{city.name}", intent, [{"entity": "city", "value": city.name}]), {})
            out.append((f"{city.id}/{intent}", " ".join(m.get("text") or "" for m in d.messages)))
    for t in res.tramites.tramites:
        for intent in FIELD_BY_INTENT:
            d = CollectingDispatcher()
            await tramite.run(d, tracker("", intent, [], {"tramite": t.id}), {})
            out.append((f"{t.id}/{intent}", " ".join(m.get("text") or "" for m in d.messages)))
    return out


async def status_reply(res: Resources, tmp: Path) -> str:
    url = f"sqlite:///{tmp / 'cases.db'}"
    upgrade(url)
    svc = CaseService.from_url(url)
    seed_catalog(svc)
    folio, pin = seed_demo(svc)
    form = ValidateStatusForm(Resources(res.cities, res.tramites, svc))
    d = CollectingDispatcher()
    slots = await form.validate_verification(pin, d, tracker(pin, "inform_number", [], {"folio": folio}), {})
    # the same turn goes on with the report's question (more help, or the rest of what is missing)
    await ActionStatusReport().run(d, tracker(pin, "inform_number", [], slots), {})
    svc.close()
    return " ".join(m.get("text") or "" for m in d.messages)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    tts = Settings().tts
    res = Resources(load_cities(), load_tramites(), None)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        texts = await replies(res)
        texts.append(("status/demo-case", await status_reply(res, tmp)))
        measured = sorted(((seconds(text, tts.voice, tts.rate, tmp), key, text) for key, text in texts),
                          reverse=True)
    durations = [m[0] for m in measured]
    q = statistics.quantiles(durations, n=20)
    over = sum(1 for s in durations if s > GOAL_S)
    print(f"replies={len(durations)} voice={tts.voice} rate={tts.rate}  p50={statistics.median(durations):.1f}s "
          f"p95={q[18]:.1f}s max={durations[0]:.1f}s  over {GOAL_S:.0f}s: {over}")
    status = next(m for m in measured if m[1] == "status/demo-case")
    print(f"status reply of the demo case: {status[0]:.1f}s, {len(status[2].split())} words")
    for s, key, text in measured[:args.top]:
        print(f"  {s:5.1f}s {len(text.split()):3d} words  {key}: {text[:110]}")


if __name__ == "__main__":
    asyncio.run(main())
