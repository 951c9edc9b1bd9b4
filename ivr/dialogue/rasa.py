"""`RasaDialogue`: the engine's dialogue over Rasa's REST channel, with the DTMF menu as fallback.

Each caller turn is one POST to `/webhooks/rest/webhook` (sender = SIP Call-ID, so one Rasa conversation per
call) with the call metadata; the bot messages come back as texts plus custom payloads (see
dialogs/actions/payloads.py) that become the `DialogueReply` (expected answer, transfer, hang-up, case folio).
The turn's intent and confidence (for the transcript) come from `/model/parse`, asked at the same time.

DTMF convention: keys are sent as the intent message `/dtmf{"digits":"<keys>"}`; Rasa decides what they
mean in context (main menu, folio, option number). A no-input turn is sent as `/repeat`.

With several Rasa servers (`dialogue.rasa_failover_urls`, sharing the Redis tracker and lock store), a turn whose
server refuses the connection is sent to the next one (`ivr.dialogue.rasa_servers`): a refused connection never
reached Rasa, so sending it again cannot apply the turn twice. A turn that reached a server and timed out is not
sent elsewhere for the same reason.

If Rasa does not answer within `dialogue.timeout_s` (down, slow, broken), the call continues on the
DTMF menu (`ivr.dialogue.menu.MenuDialogue`) for the rest of the call — switching back mid-call would lose
whichever state the menu held — every reply marked `fallback=True` and the switch logged.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx

from foundation.config import Settings
from foundation.logs import kv
from foundation.vocabulary import DTMF_DIGITS, EXPECT_KINDS
from ivr.call.leg import CallInfo
from ivr.dialogue.interface import CallerTurn, Dialogue, DialogueReply, Expect, TurnContext
from ivr.dialogue.menu import MenuDialogue, MenuSpec, load_menu
from ivr.dialogue.rasa_servers import RasaServers

log = logging.getLogger("ivr.dialogue.rasa")

WEBHOOK_PATH = "/webhooks/rest/webhook"
GREETING_MESSAGE = "/greet"
NO_INPUT_MESSAGE = "/repeat"
FALLBACK_NOTICE = "Tengo un problema técnico para entenderle; le ofrezco el menú del teclado."
MAX_TEXT_CHARS = 500
"""A recognizer result longer than this is cut: nobody says more in one turn, and Rasa need not parse it."""


class DialogueUnavailable(Exception):
    """Rasa did not give a usable answer in time."""


def dtmf_message(digits: str) -> str:
    """The intent message for keys: `/dtmf{"digits":"123"}` (only 0-9, * and # are passed on)."""
    keys = "".join(ch for ch in digits if ch in DTMF_DIGITS[:12])
    return "/dtmf" + json.dumps({"digits": keys}, separators=(",", ":"))


def caller_message(turn: CallerTurn) -> str:
    if turn.event == "no_input":
        return NO_INPUT_MESSAGE
    if turn.dtmf:
        return dtmf_message(turn.dtmf)
    text = (turn.text or "").strip()[:MAX_TEXT_CHARS]
    # a caller can't type, but a recognizer result must never be read as an intent message either
    return text.lstrip("/") if text.startswith("/") else text


def parse_expect(raw: Any) -> Expect | None:
    if not isinstance(raw, dict):
        return None
    kind = raw.get("kind", "free")
    phrases = raw.get("phrases") or ()
    try:
        return Expect(kind=kind if kind in EXPECT_KINDS else "free",
                      phrases=tuple(str(p) for p in phrases) if isinstance(phrases, list | tuple) else (),
                      max_digits=max(1, min(int(raw.get("max_digits", 1)), 32)),
                      terminator=str(raw.get("terminator", "#"))[:1] or "#",
                      secret=raw.get("secret") is True)
    except (TypeError, ValueError):
        return None


def parse_messages(messages: Any) -> DialogueReply:
    """The bot messages of one turn -> one reply. The last `expect` wins (it belongs to the last question).
    A `redacted` payload replaces the text before it in the transcript (the PIN of a read-back)."""
    if not isinstance(messages, list):
        raise DialogueUnavailable(f"unexpected webhook answer: {type(messages).__name__}")
    texts: list[str] = []
    transcript: list[str] = []
    redacted = False
    expect: Expect | None = None
    transfer = hangup = False
    folio: str | None = None
    reason: str | None = None
    for message in messages:
        if not isinstance(message, dict):
            continue
        if isinstance(message.get("text"), str) and message["text"].strip():
            texts.append(message["text"].strip())
            transcript.append(texts[-1])
        custom = message.get("custom")
        if isinstance(custom, dict):
            expect = parse_expect(custom.get("expect")) or expect
            transfer = transfer or custom.get("transfer") is True
            hangup = hangup or custom.get("hangup") is True
            if isinstance(custom.get("case_folio"), str):
                folio = custom["case_folio"]
            if isinstance(custom.get("transfer_reason"), str):
                reason = custom["transfer_reason"][:40]
            if isinstance(custom.get("redacted"), str) and transcript:
                transcript[-1] = custom["redacted"]
                redacted = True
    return DialogueReply(texts=tuple(texts), expect=expect or Expect(), transfer=transfer, hangup=hangup,
                         case_folio=folio, transfer_reason=reason if transfer else None,
                         transcript_texts=tuple(transcript) if redacted else None)


class RasaDialogue:
    """`ivr.dialogue.interface.Dialogue` backed by a running `rasa run --enable-api`. One instance per call."""

    def __init__(self, servers: RasaServers | str, client: httpx.AsyncClient, fallback: Dialogue, *,
                 timeout_s: float = 2.0) -> None:
        self.servers = servers if isinstance(servers, RasaServers) else RasaServers([servers])
        self.server: str | None = None      # the server this call's conversation is on
        self.client = client
        self.fallback = fallback
        self.timeout_s = timeout_s
        self.on_fallback = False
        self._fallback_started = False

    # -- Dialogue ------------------------------------------------------------------------------------------
    async def start(self, ctx: TurnContext) -> DialogueReply:
        if self.on_fallback:
            return await self._fallback_start(ctx)
        try:
            return await self._exchange(ctx, GREETING_MESSAGE)
        except DialogueUnavailable as exc:
            self._switch(ctx, exc)
            return await self._fallback_start(ctx)

    async def turn(self, ctx: TurnContext, turn: CallerTurn) -> DialogueReply:
        if not self.on_fallback:
            try:
                return await self._exchange(ctx, caller_message(turn))
            except DialogueUnavailable as exc:
                self._switch(ctx, exc)
                if not self._fallback_started:
                    # the menu has not greeted this caller: offer it instead of answering a turn it never asked
                    reply = await self._fallback_start(ctx)
                    menu = reply.texts[1:] if len(reply.texts) > 1 else reply.texts   # the menu without the welcome
                    return _replace(reply, texts=(FALLBACK_NOTICE, *menu))
        return _as_fallback(await self.fallback.turn(ctx, turn))

    async def end(self, ctx: TurnContext) -> None:
        await self.fallback.end(ctx)

    # -- internals -----------------------------------------------------------------------------------------
    async def _fallback_start(self, ctx: TurnContext) -> DialogueReply:
        self._fallback_started = True
        return _as_fallback(await self.fallback.start(ctx))

    def _switch(self, ctx: TurnContext, exc: Exception) -> None:
        self.on_fallback = True
        log.warning("dialogue fallback to the DTMF menu %s",
                    kv(call_id=ctx.call_id, case=ctx.case_folio or "-", reason=str(exc)[:200]))

    async def _exchange(self, ctx: TurnContext, message: str) -> DialogueReply:
        started = time.perf_counter()
        try:
            reply, parse = await asyncio.wait_for(self._send(ctx, message), self.timeout_s)
        except TimeoutError as exc:
            raise DialogueUnavailable(f"rasa did not answer within {self.timeout_s:.1f} s") from exc
        except (httpx.HTTPError, ValueError) as exc:
            raise DialogueUnavailable(f"rasa request failed: {type(exc).__name__}: {exc}") from exc
        if not reply.texts:
            raise DialogueUnavailable("rasa answered with nothing to say")
        intent = (parse.get("intent") or {}) if isinstance(parse, dict) else {}
        log.debug("rasa turn %s", kv(call_id=ctx.call_id, intent=intent.get("name") or "-",
                                     ms=round((time.perf_counter() - started) * 1000)))
        return _replace(reply, intent=intent.get("name"), intent_confidence=_float(intent.get("confidence")))

    async def _send(self, ctx: TurnContext, message: str) -> tuple[DialogueReply, dict[str, Any]]:
        """The turn on the call's server, or on the next one while servers refuse the connection."""
        refused: httpx.HTTPError | None = None
        for url in self.servers.order(ctx.call_id, self.server):
            try:
                answer = await self._post_and_parse(url, ctx, message)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:   # the turn never reached that server
                self.servers.mark_down(url)
                refused = exc
                if len(self.servers.urls) > 1:
                    log.warning("rasa server refused, trying the next %s",
                                kv(call_id=ctx.call_id, case=ctx.case_folio or "-", server=url,
                                   error=type(exc).__name__))
                continue
            if self.server is not None and url != self.server:
                log.info("conversation moved to another rasa server %s",
                         kv(call_id=ctx.call_id, case=ctx.case_folio or "-", server=url))
            self.server = url
            self.servers.mark_up(url)
            return answer
        assert refused is not None
        raise refused

    async def _post_and_parse(self, base_url: str, ctx: TurnContext,
                              message: str) -> tuple[DialogueReply, dict[str, Any]]:
        body = {"sender": ctx.call_id, "message": message,
                "metadata": {"call_id": ctx.call_id, "case_folio": ctx.case_folio,
                             "caller_number": ctx.caller_number, "channel": ctx.channel}}
        # The intent for the transcript comes from /model/parse, run beside the turn: the tracker's
        # latest_message is not reliable while a form is active.
        webhook, parse = await asyncio.gather(
            self.client.post(f"{base_url}{WEBHOOK_PATH}", json=body),
            self._parse(base_url, message))
        webhook.raise_for_status()
        return parse_messages(webhook.json()), parse

    async def _parse(self, base_url: str, message: str) -> dict[str, Any]:
        try:
            resp = await self.client.post(f"{base_url}/model/parse", json={"text": message})
            if resp.status_code == 200:
                data = resp.json()
                return data if isinstance(data, dict) else {}
        except (httpx.HTTPError, ValueError):
            pass   # the reply is good; only the transcript loses the intent
        return {}


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _replace(reply: DialogueReply, **changes: Any) -> DialogueReply:
    import dataclasses
    return dataclasses.replace(reply, **changes)


def _as_fallback(reply: DialogueReply) -> DialogueReply:
    return _replace(reply, fallback=True)


class RasaDialogueFactory:
    """The engine's `dialogue_factory`: a RasaDialogue per call, sharing one HTTP connection pool, each with
    its own fallback menu. Close it at engine shutdown (`await factory.aclose()`)."""

    def __init__(self, base_url: str | list[str], *, timeout_s: float = 2.0, menu: MenuSpec | None = None) -> None:
        self.servers = RasaServers([base_url] if isinstance(base_url, str) else base_url)
        self.timeout_s = timeout_s
        self.menu = menu or load_menu()
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 1.0)),
                                        limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))

    @classmethod
    def from_settings(cls, settings: Settings, menu: MenuSpec | None = None) -> RasaDialogueFactory:
        return cls(settings.dialogue.rasa_urls(), timeout_s=settings.dialogue.timeout_s, menu=menu)

    def __call__(self, info: CallInfo) -> RasaDialogue:
        return RasaDialogue(self.servers, self.client, MenuDialogue(self.menu), timeout_s=self.timeout_s)

    async def aclose(self) -> None:
        await self.client.aclose()
