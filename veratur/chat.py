"""`veratur chat`: a text conversation with the portal's dialogue, for administrators.

It goes through the same client the phone engine uses (ivr.dialogue.rasa.RasaDialogue), so what you read is what
a caller hears, with the payload shown in brackets (expected answer, transfer, hang-up, folio, intent).
Type `:123` to press keys 1 2 3, `:q` to quit. With `--say TEXT` (repeatable) it runs non-interactively.
If Rasa is not running at dialogue.rasa_url, `--start` starts the action server and `rasa run` on free ports
with the cached model (training it first if the YAML changed) and stops them at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import uuid
from collections.abc import Iterator
from urllib.request import urlopen

from foundation.config import Settings
from ivr.call.leg import CallInfo
from ivr.dialogue.interface import CallerTurn, DialogueReply, TurnContext
from ivr.dialogue.rasa import RasaDialogueFactory

CHAT_TIMEOUT_S = 15.0
"""Generous: a person at a keyboard, and the first turn warms the action server up."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--say", action="append", default=[], metavar="TEXT",
                        help="say this and print the answer (repeatable; ':123' presses keys); no prompt")
    parser.add_argument("--url", default=None, help="Rasa server URL (default dialogue.rasa_url)")
    parser.add_argument("--start", action="store_true", help="start Rasa and the action server if not running")
    parser.add_argument("--caller", default="2280000000", help="caller number sent as metadata")
    parser.add_argument("--json", action="store_true", help="print each reply as one JSON line")


def _up(url: str) -> bool:
    try:
        with urlopen(f"{url}/status", timeout=2) as resp:  # noqa: S310 - local URL from the config
            return resp.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def _rasa(url: str, start: bool) -> Iterator[str]:
    if _up(url) or not start:
        yield url
        return
    from veratur.rasa_server import RasaStack
    from veratur.training import ensure_model

    print("starting the action server and rasa (about a minute)...", file=sys.stderr, flush=True)
    with RasaStack(ensure_model(progress=lambda line: print(line, file=sys.stderr, flush=True))) as stack:
        yield stack.url


def render(reply: DialogueReply, as_json: bool) -> str:
    if as_json:
        import dataclasses
        import json
        return json.dumps(dataclasses.asdict(reply), ensure_ascii=False)
    flags = [f"espera={reply.expect.kind}"]
    if reply.expect.kind in ("digits", "menu", "yes_no"):
        flags.append(f"máx={reply.expect.max_digits}")
    if reply.intent:
        flags.append(f"intención={reply.intent}"
                     + (f" ({reply.intent_confidence:.2f})" if reply.intent_confidence is not None else ""))
    for name in ("transfer", "hangup", "fallback"):
        if getattr(reply, name):
            flags.append(name)
    if reply.case_folio:
        flags.append(f"folio={reply.case_folio}")
    return "\n".join(f"portal> {t}" for t in reply.texts) + f"\n        [{' '.join(flags)}]"


def _turn(line: str) -> CallerTurn:
    if line.startswith(":") and len(line) > 1:
        return CallerTurn(dtmf=line[1:].strip(), event="dtmf")
    return CallerTurn(text=line)


async def _chat(url: str, args: argparse.Namespace) -> int:
    factory = RasaDialogueFactory(url, timeout_s=CHAT_TIMEOUT_S)
    call_id = f"chat-{uuid.uuid4().hex[:10]}"
    ctx = TurnContext(call_id=call_id, case_folio=None, caller_number=args.caller, channel="phone")
    dialogue = factory(CallInfo(call_id=call_id, caller=args.caller, called="chat", node="chat"))
    try:
        reply = await dialogue.start(ctx)
        print(render(reply, args.json), flush=True)
        lines = iter(args.say) if args.say else None
        while not (reply.hangup or reply.transfer):
            if lines is not None:
                line = next(lines, None)
                if line is None:
                    break
                print(f"usted> {line}")
            else:
                try:
                    line = (await asyncio.to_thread(input, "usted> ")).strip()
                except EOFError:
                    break
            if line in (":q", ":quit"):
                break
            if not line:
                continue
            reply = await dialogue.turn(ctx, _turn(line))
            print(render(reply, args.json), flush=True)
        await dialogue.end(ctx)
        return 1 if reply.fallback else 0
    finally:
        await factory.aclose()


def run(settings: Settings, args: argparse.Namespace) -> int:
    url = (args.url or settings.dialogue.rasa_url).rstrip("/")
    with _rasa(url, args.start) as live:
        if not _up(live):
            print(f"veratur chat: no Rasa at {live} (run `veratur rasa` and `veratur actions`, or use --start); "
                  "answering with the fallback menu", file=sys.stderr)
        return asyncio.run(_chat(live, args))
