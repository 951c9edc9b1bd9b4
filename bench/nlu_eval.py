"""Independent evaluation of the dialogue, end to end: intent accuracy, entity F1 and reply correctness.

The caller turns in `bench/nlu_eval/*.yml` were written apart from the training data and must never be used for
training (see bench/nlu_eval/README.md). Each conversation is a new call: `/greet` first, as the phone engine
does, then its turns through a real `rasa run` REST channel (`/webhooks/rest/webhook`) and action server, with
`/model/parse` for the intent and entities of every turn. The demo case is seeded in a throwaway SQLite file for
the status questions.

    .venv/bin/python bench/nlu_eval.py                 # trains the model if needed, starts Rasa + actions
    .venv/bin/python bench/nlu_eval.py --url http://127.0.0.1:5005   # an already running stack (no status seeding)
    .venv/bin/python bench/nlu_eval.py --no-dense      # without the dense intent service (DIET's intents alone)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from dialogs.actions.numbers import spoken_to_chars
from dialogs.catalog import CityCatalog, TramiteCatalog, load_cities, load_tramites
from foundation.paths import REPO_ROOT

SETS_DIR = Path(__file__).resolve().parent / "nlu_eval"
GREETING = "/greet"
CONCURRENCY = 3
"""Conversations in flight at once: enough to keep Rasa busy, few enough for two shared cores."""
SCORED_ENTITIES = ("city", "tramite")
"""Entities scored for F1. Folio and PIN digits are not an NLU entity in this dialogue (the form fills them from the
whole turn); whether they were understood shows in the reply (the NIP request, the case read back)."""
_DIGIT_WORDS = ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve")


# --------------------------------------------------------------------------------------------- the set
@dataclass
class Turn:
    category: str
    source: str
    text: str
    intents: tuple[str, ...]
    entities: dict[str, tuple[str, ...]]
    reply: tuple[str, ...] = ()
    reply_not: tuple[str, ...] = ()
    hangup: bool = False
    transfer: bool = False


@dataclass
class Conversation:
    turns: list[Turn]


def plain(text: str) -> str:
    """Lowercase without accents, whitespace collapsed; punctuation kept (patterns may use it)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return " ".join("".join(ch for ch in decomposed if not unicodedata.combining(ch)).split())


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return (str(value),)


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _turn(raw: dict[str, Any], category: str, source: str, values: dict[str, str]) -> Turn:
    if not isinstance(raw, dict) or "text" not in raw or "intent" not in raw:
        raise ValueError(f"{source}: every turn needs text and intent: {raw!r}")
    entities = {str(k): tuple(_fill(v, values) for v in _as_tuple(v)) for k, v in (raw.get("entities") or {}).items()}
    return Turn(category, source, _fill(str(raw["text"]), values), _as_tuple(raw["intent"]), entities,
                tuple(plain(p) for p in _as_tuple(raw.get("reply"))),
                tuple(plain(p) for p in _as_tuple(raw.get("reply_not"))),
                bool(raw.get("hangup")), bool(raw.get("transfer")))


def load_sets(directory: Path, values: dict[str, str]) -> list[Conversation]:
    conversations = []
    for path in sorted(directory.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or "items" not in doc:
            raise ValueError(f"{path}: expected a mapping with category and items")
        category = str(doc.get("category", path.stem))
        for item in doc["items"]:
            raws = item["turns"] if "turns" in item else [item]
            conversations.append(Conversation([_turn(r, category, path.name, values) for r in raws]))
    return conversations


def digits_words(digits: str) -> str:
    return " ".join(_DIGIT_WORDS[int(d)] for d in digits)


# --------------------------------------------------------------------------------------------- scoring
@dataclass
class Outcome:
    turn: Turn
    intent: str
    confidence: float
    entities: list[tuple[str, str]]
    texts: list[str]
    hangup: bool
    transfer: bool
    latency_ms: float
    dense: bool = False
    """The dense intent service (dialogs/dense) decided this turn's intent."""
    intent_ok: bool = False
    tp: int = 0
    fp: int = 0
    fn: int = 0
    reply_ok: bool = False
    reply_why: str = ""


class Resolver:
    """Entity values (what the caller said, or a synonym's id) -> catalog ids, for comparing with the set."""

    def __init__(self, cities: CityCatalog, tramites: TramiteCatalog):
        self.cities, self.tramites = cities, tramites

    def resolve(self, entity: str, value: str) -> set[str]:
        if entity == "city":
            if self.cities.get(value):
                return {value}
            city = self.cities.find_city(value)
            return {city.id} if city else set()
        if entity == "tramite":
            if self.tramites.get(value):
                return {value}
            return {m.tramite.id for m in self.tramites.find_tramites(value, limit=10)}
        if entity == "digits":
            return {"".join(ch for ch in spoken_to_chars(value) if ch.isdigit())}
        return {plain(value)}


def score(outcome: Outcome, resolver: Resolver) -> None:
    turn = outcome.turn
    outcome.intent_ok = outcome.intent in turn.intents
    predicted: dict[tuple[str, frozenset[str]], None] = {}
    for entity, value in outcome.entities:
        if entity in SCORED_ENTITIES:
            predicted[(entity, frozenset(resolver.resolve(entity, value)))] = None
    unmatched_expected = {e: set(ids) for e, ids in turn.entities.items() if e in SCORED_ENTITIES}
    for entity, ids in predicted:
        wanted = unmatched_expected.get(entity)
        if wanted is not None and ids & wanted:
            outcome.tp += 1
            del unmatched_expected[entity]
        else:
            outcome.fp += 1
    outcome.fn = len(unmatched_expected)
    reply = plain(" ".join(outcome.texts))
    why = [f"missing /{p}/" for p in turn.reply if not re.search(p, reply)]
    why += [f"should not say /{p}/" for p in turn.reply_not if re.search(p, reply)]
    if turn.hangup and not outcome.hangup:
        why.append("no hang-up")
    if turn.transfer and not outcome.transfer:
        why.append("no transfer")
    outcome.reply_ok = not why
    outcome.reply_why = "; ".join(why)


# --------------------------------------------------------------------------------------------- running
async def run_conversation(client: httpx.AsyncClient, url: str, conv: Conversation) -> list[Outcome]:
    sender = f"eval-{uuid.uuid4().hex[:12]}"
    metadata = {"call_id": sender, "case_folio": None, "caller_number": "2280000000", "channel": "phone"}
    webhook = f"{url}/webhooks/rest/webhook"
    (await client.post(webhook, json={"sender": sender, "message": GREETING, "metadata": metadata})).raise_for_status()
    outcomes = []
    for turn in conv.turns:
        started = time.perf_counter()
        reply, parse = await asyncio.gather(
            client.post(webhook, json={"sender": sender, "message": turn.text, "metadata": metadata}),
            client.post(f"{url}/model/parse", json={"text": turn.text}))
        latency = (time.perf_counter() - started) * 1000
        reply.raise_for_status()
        parse.raise_for_status()
        messages = reply.json()
        parsed = parse.json()
        customs = [m.get("custom") or {} for m in messages]
        outcomes.append(Outcome(
            turn, str((parsed.get("intent") or {}).get("name")), float((parsed.get("intent") or {}).get("confidence") or 0),
            [(str(e.get("entity")), str(e.get("value"))) for e in parsed.get("entities") or []],
            [str(m["text"]) for m in messages if m.get("text")],
            any(bool(c.get("hangup")) for c in customs if isinstance(c, dict)),
            any(bool(c.get("transfer")) for c in customs if isinstance(c, dict)), latency,
            (parsed.get("intent_source") or {}).get("source") == "dense"))
    return outcomes


async def run_all(url: str, conversations: list[Conversation]) -> list[Outcome]:
    limit = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(timeout=60.0) as client:
        async def one(conv: Conversation) -> list[Outcome]:
            async with limit:
                return await run_conversation(client, url, conv)
        results = await asyncio.gather(*(one(c) for c in conversations))
    return [o for r in results for o in r]


def seed_demo(env: dict[str, str]) -> tuple[str, str]:
    """Migrate a throwaway database and create the demo case; its folio and PIN, as `veratur db seed` prints them."""
    out = subprocess.run([sys.executable, "-m", "veratur.cli", "--log-level", "WARNING", "db", "seed", "--demo"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r"folio=(\d+)\s+PIN=(\d+)", out)
    if not found:
        raise RuntimeError(f"`veratur db seed --demo` printed no folio/PIN: {out[-300:]}")
    return found.group(1), found.group(2)


# --------------------------------------------------------------------------------------------- report
@dataclass
class Tally:
    n: int = 0
    intent: int = 0
    reply: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, o: Outcome) -> None:
        self.n += 1
        self.intent += o.intent_ok
        self.reply += o.reply_ok
        self.tp, self.fp, self.fn = self.tp + o.tp, self.fp + o.fp, self.fn + o.fn
        self.latencies.append(o.latency_ms)

    @property
    def f1(self) -> float:
        if self.tp + self.fp + self.fn == 0:
            return 1.0
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def report(outcomes: list[Outcome], failures: int) -> dict[str, Any]:
    total = Tally()
    per: dict[str, Tally] = defaultdict(Tally)
    for o in outcomes:
        total.add(o)
        per[o.turn.category].add(o)
    print(f"{'category':<16}{'turns':>6}{'intent':>9}{'ent F1':>9}{'reply':>9}")
    for name in sorted(per):
        t = per[name]
        # a category with no expected entity has no meaningful F1: show its spurious ones instead
        f1 = f"{t.f1:>9.1%}" if t.tp + t.fn else f"{str(t.fp) + ' FP':>9}"
        print(f"{name:<16}{t.n:>6}{t.intent / t.n:>9.1%}{f1}{t.reply / t.n:>9.1%}")
    print(f"{'ALL':<16}{total.n:>6}{total.intent / total.n:>9.1%}{total.f1:>9.1%}{total.reply / total.n:>9.1%}")
    print(f"turn latency (webhook + parse in parallel, {CONCURRENCY} conversations at once): "
          f"p50 {percentile(total.latencies, 0.5):.0f} ms, p95 {percentile(total.latencies, 0.95):.0f} ms")
    dense = [o for o in outcomes if o.dense]
    print(f"intent decided by the dense service: {len(dense)} turns, {sum(o.intent_ok for o in dense)} of them right")
    bad = [o for o in outcomes if not (o.intent_ok and o.reply_ok and o.fp == 0 and o.fn == 0)]
    print(f"\n{len(bad)} turns with a failure (showing {min(failures, len(bad))}):")
    for o in bad[:failures]:
        marks = []
        if not o.intent_ok:
            marks.append(f"intent {o.intent} ({o.confidence:.2f}) != {'|'.join(o.turn.intents)}")
        if o.fp or o.fn:
            marks.append(f"entities {o.entities} != {dict(o.turn.entities)}")
        if not o.reply_ok:
            marks.append(f"reply: {o.reply_why}")
        print(f"- [{o.turn.category}] {o.turn.text!r}\n    " + "\n    ".join(marks)
              + f"\n    said: {' / '.join(o.texts)[:220]!r}")
    return {"turns": total.n, "intent_accuracy": total.intent / total.n, "entity_f1": total.f1,
            "reply_correct": total.reply / total.n,
            "latency_p50_ms": percentile(total.latencies, 0.5), "latency_p95_ms": percentile(total.latencies, 0.95),
            "dense_turns": len(dense), "dense_right": sum(o.intent_ok for o in dense),
            "per_category": {k: {"turns": v.n, "intent": v.intent / v.n, "entity_f1": v.f1, "reply": v.reply / v.n}
                             for k, v in per.items()}}


_RAW_FIELDS = ("intent", "confidence", "entities", "texts", "hangup", "transfer", "latency_ms", "dense")


def save_raw(path: Path, outcomes: list[Outcome], values: dict[str, str]) -> None:
    rows = [{"category": o.turn.category, "text": o.turn.text, **{k: getattr(o, k) for k in _RAW_FIELDS}}
            for o in outcomes]
    path.write_text(json.dumps({"values": values, "turns": rows}, ensure_ascii=False, indent=1), encoding="utf-8")


def load_raw(path: Path, sets: Path) -> list[Outcome]:
    """Saved answers matched to the set's turns by category and text (the expectations are read fresh)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    turns: dict[tuple[str, str], list[Turn]] = defaultdict(list)
    for turn in _iter_turns(load_sets(sets, doc["values"])):
        turns[(turn.category, turn.text)].append(turn)
    outcomes = []
    for row in doc["turns"]:
        candidates = turns.get((row["category"], row["text"]))
        if not candidates:
            continue   # the turn left the set since the run
        raw = {k: row[k] for k in _RAW_FIELDS if k in row}   # "dense" is newer than some saved runs
        raw["entities"] = [tuple(e) for e in raw["entities"]]
        outcomes.append(Outcome(candidates.pop(0), **raw))
    return outcomes


def _revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    dirty = git("status", "--porcelain", "--", "dialogs", "nlu_data")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted dialogue changes" if dirty else "")


def _iter_turns(conversations: list[Conversation]) -> Iterator[Turn]:
    return (t for c in conversations for t in c.turns)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="an already running rasa run --enable-api (its action server's database is used)")
    parser.add_argument("--model", type=Path, help="model archive (default: the one for the current dialogue files)")
    parser.add_argument("--sets", type=Path, default=SETS_DIR)
    parser.add_argument("--failures", type=int, default=200, help="how many failing turns to list")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--raw", type=Path, help="also save every turn's parse and reply here (for --rescore)")
    parser.add_argument("--rescore", type=Path, help="score a --raw file again (no Rasa; after a scorer or set fix)")
    parser.add_argument("--startup-timeout", type=float, default=600.0,
                        help="seconds to wait for rasa run (a loaded shared machine needs minutes)")
    parser.add_argument("--folio", help="with --url: the folio of a case whose PIN is --pin")
    parser.add_argument("--pin")
    parser.add_argument("--no-dense", action="store_true",
                        help="do not start the dense intent service with the stack (Rasa keeps DIET's intents)")
    args = parser.parse_args()
    resolver = Resolver(load_cities(), load_tramites())
    if args.rescore:
        outcomes = load_raw(args.rescore, args.sets)
        for o in outcomes:
            score(o, resolver)
        report(outcomes, args.failures)
        return 0
    print(f"revision {_revision()}")
    with tempfile.TemporaryDirectory(prefix="nlu-eval-") as tmp:
        stack = None
        if args.url:
            url, folio, pin = args.url.rstrip("/"), args.folio or "00000000", args.pin or "0000"
        else:
            from veratur import dense_server
            from veratur.rasa_server import RasaStack
            from veratur.training import ensure_model
            env = dict(os.environ, VERATUR__DATABASE__URL=f"sqlite:///{tmp}/eval.db")
            env.pop(dense_server.ENV_URL, None)
            dense = not args.no_dense and dense_server.available()
            folio, pin = seed_demo(env)
            model = args.model or ensure_model()
            print(f"model {model.name}; dense intent service {'on' if dense else 'off'}")
            try:
                stack = RasaStack(model, env=env, log_dir=Path(tmp), dense=dense).start(timeout=args.startup_timeout)
            except RuntimeError:
                for log in sorted(Path(tmp).glob("*.log")):
                    print(f"--- {log.name}:\n" + log.read_text(errors="replace")[-1500:], file=sys.stderr)
                raise
            url = stack.url
        values = {"demo_folio": folio, "demo_pin": pin, "demo_folio_words": digits_words(folio),
                  "demo_pin_words": digits_words(pin)}
        conversations = load_sets(args.sets, values)
        print(f"{len(conversations)} conversations, {sum(1 for _ in _iter_turns(conversations))} caller turns "
              f"from {args.sets}")
        try:
            started = time.perf_counter()
            outcomes = asyncio.run(run_all(url, conversations))
            print(f"ran in {time.perf_counter() - started:.0f} s\n")
        finally:
            if stack is not None:
                stack.stop()
    if args.raw:
        save_raw(args.raw, outcomes, values)
    for o in outcomes:
        score(o, resolver)
    figures = report(outcomes, args.failures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
