"""Escalation to a call-center agent: who may be called, what the agent is told, and what the caller hears.

The policy half is pure (unit-tested without SIP):
- `check_target` — only `escalation.allowed_targets` can ever be referred to or called. The target never comes
  from what a caller says or keys; a dialogue or config asking for anything else raises `ForbiddenTarget`
  before any SIP is sent.
- `case_headers` — `X-Veratur-Case: <folio>` and an RFC 7433 `User-to-User` header: the payload
  `case=<folio>;call=<SIP Call-ID>;why=<reason>` hex-encoded, `encoding=hex`, `purpose=veratur-case`
  (an application-specific UUI purpose: a PBX that does not know it must ignore it, RFC 7433 section 4.1).
- `refer_to_uri` — the target with the same headers embedded as URI headers (RFC 3261 section 19.1.5), so the
  transferee copies them into its INVITE to the agent (RFC 7433 section 4.2: UUI in a REFER goes in Refer-To).

The flow half (`run_escalation`) runs inside the call session: enqueue the call for the agent console, say the
hand-off phrase, REFER (or, `mode: bridge`, call the agent and bridge), follow the final NOTIFY sipfrag code, and
on a failure tell the caller and offer a callback that keeps the folio. Every phrase and answer is committed to the
transcript, which the agent console streams.
"""
from __future__ import annotations

import asyncio
import binascii
import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable
from urllib.parse import quote

from foundation.config import EscalationConfig
from foundation.logs import kv, mask_phone
from foundation.vocabulary import TRANSFER_REASONS, TransferReason
from ivr.call.leg import CallLeg, TransferResult
from ivr.call.records import CallRecorder, Disposition
from ivr.dialogue.interface import CallerTurn, Expect

log = logging.getLogger("ivr.call.escalation")

UUI_PURPOSE = "veratur-case"
UUI_MAX_OCTETS = 128              # RFC 7434's limit for ISDN-interworked UUI: the strictest PBX we may meet
MAX_CALL_ID_IN_UUI = 64           # a longer Call-ID is cut (the folio is the key; the call id is a hint)
CASE_HEADER = "X-Veratur-Case"
UUI_HEADER = "User-to-User"
CALLBACK_YES_WORDS = frozenset({"si", "claro", "por favor", "acepto", "uno", "1"})
Reason = TransferReason
REASONS: tuple[str, ...] = TRANSFER_REASONS

_FOLIO = re.compile(r"^[0-9A-Za-z-]{1,16}$")
_SIP_URI = re.compile(r"^(?i:sips?):(?:[^@\s<>;?\"]+@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>\d{1,5}))?"
                      r"(?P<params>(?:;[A-Za-z0-9_.!~*'()%+-]+(?:=[A-Za-z0-9_.!~*'()%+\[\]:-]+)?)*)$")


class ForbiddenTarget(ValueError):
    """A transfer target outside `escalation.allowed_targets` (or not a plain SIP URI)."""


class BadUui(ValueError):
    """A User-to-User header value that is not hex-encoded Veratur UUI."""


# ---- policy (pure) -------------------------------------------------------------------------------------------
def normalize_sip_uri(uri: str) -> str:
    """A SIP URI in a canonical spelling for comparison: scheme and host lower-case, user as given.

    Raises ForbiddenTarget for anything that is not a bare sip:/sips: URI: no display name, no `<>`, no embedded
    headers (`?`), no whitespace or line breaks (which would inject SIP headers)."""
    text = uri.strip()
    match = _SIP_URI.match(text)
    if match is None or any(ch in uri for ch in "\r\n\t "):
        raise ForbiddenTarget(f"not a plain SIP URI: {uri[:80]!r}")
    scheme, rest = text.split(":", 1)
    user, at, hostport = rest.rpartition("@")
    hostpart, sep, params = hostport.partition(";")
    return f"{scheme.lower()}:{user}{at}{hostpart.lower()}{sep}{params}"


def check_target(uri: str, allowed: Sequence[str]) -> str:
    """`uri` in canonical form if it is one of `allowed`; ForbiddenTarget otherwise (nothing is sent)."""
    wanted = normalize_sip_uri(uri)
    permitted = set()
    for item in allowed:
        try:
            permitted.add(normalize_sip_uri(item))
        except ForbiddenTarget:
            continue                   # a malformed entry allows nothing
    if wanted not in permitted:
        raise ForbiddenTarget(f"transfer target not allowed: {wanted}")
    return wanted


def encode_uui(fields: dict[str, str]) -> str:
    """RFC 7433 header value: hex of `k=v;k=v` (UTF-8), `;encoding=hex;purpose=veratur-case`."""
    payload = ";".join(f"{k}={v}" for k, v in fields.items()).encode("utf-8")
    if len(payload) > UUI_MAX_OCTETS:
        raise BadUui(f"UUI payload of {len(payload)} octets (max {UUI_MAX_OCTETS})")
    return f"{binascii.hexlify(payload).decode('ascii')};encoding=hex;purpose={UUI_PURPOSE}"


def decode_uui(value: str) -> dict[str, str]:
    """Fields of a Veratur User-to-User header value (what an agent desktop or test does with it)."""
    data, *params = [p.strip() for p in value.strip().split(";")]
    options = {}
    for p in params:
        name, _, v = p.partition("=")
        options[name.strip().lower()] = v.strip()
    if options.get("encoding", "hex").lower() != "hex":
        raise BadUui("only encoding=hex is understood")
    if options.get("purpose") != UUI_PURPOSE:
        raise BadUui(f"purpose is not {UUI_PURPOSE}")
    if not data or len(data) % 2 or len(data) > 2 * UUI_MAX_OCTETS:
        raise BadUui("UUI data must be an even number of hex digits within the size limit")
    try:
        text = binascii.unhexlify(data).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise BadUui(f"UUI data is not hex-encoded UTF-8: {exc}") from exc
    fields = {}
    for part in text.split(";"):
        name, sep, v = part.partition("=")
        if sep:
            fields[name] = v
    return fields


def case_headers(folio: str | None, call_id: str, reason: str) -> dict[str, str]:
    """The headers that carry the case to the agent (on the REFER, in its Refer-To, on a bridged INVITE)."""
    fields: dict[str, str] = {}
    headers: dict[str, str] = {}
    if folio and _FOLIO.match(folio):
        headers[CASE_HEADER] = folio
        fields["case"] = folio
    fields["call"] = re.sub(r"[^A-Za-z0-9@._+-]", "", call_id)[:MAX_CALL_ID_IN_UUI]
    fields["why"] = reason if reason in REASONS else "caller_request"
    headers[UUI_HEADER] = encode_uui(fields)
    return headers


def refer_to_uri(target: str, headers: dict[str, str]) -> str:
    """`<target?Header=value&...>`: the Refer-To with the case headers for the transferee's INVITE."""
    hvalues = "&".join(f"{quote(name, safe='-')}={quote(value, safe='')}" for name, value in headers.items())
    return f"<{target}?{hvalues}>" if hvalues else f"<{target}>"


@dataclass(frozen=True, slots=True)
class TransferPlan:
    """What the node will do, decided (and checked) before any SIP is sent."""
    mode: Literal["refer", "bridge"]
    target: str                        # the allowed target, canonical form
    headers: dict[str, str]            # X-Veratur-Case + User-to-User
    refer_to: str                      # the Refer-To the SIP edge sends: target with the headers embedded
    reason: str


def plan_transfer(config: EscalationConfig, folio: str | None, call_id: str, reason: str,
                  requested_target: str | None = None) -> TransferPlan:
    """Target = the agent queue unless a dialogue names another; either must be in `allowed_targets`."""
    target = check_target(requested_target or config.agent_queue_uri, config.allowed_targets)
    headers = case_headers(folio, call_id, reason)
    return TransferPlan(config.mode, target, headers, refer_to_uri(target, headers), reason)


def is_yes(turn: CallerTurn | None) -> bool:
    """A callback offer's answer: key 1, or a spoken yes."""
    if turn is None:
        return False
    if turn.dtmf:
        return turn.dtmf.startswith("1")
    decomposed = unicodedata.normalize("NFD", (turn.text or "").lower())
    folded = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    words = set(re.findall(r"[a-z0-9]+", folded))
    return bool(words & CALLBACK_YES_WORDS) and "no" not in words


# ---- the queue the agent console reads ------------------------------------------------------------------------
@runtime_checkable
class EscalationJournal(Protocol):
    """Where the engine reports an escalation (implemented by ivr.call.recorder.EscalationRecorder)."""

    async def escalation_requested(self, call_id: str, reason: str, target: str, mode: str) -> None: ...

    async def escalation_result(self, call_id: str, ok: bool, status_code: int, detail: str) -> None: ...

    async def callback_requested(self, call_id: str, accepted: bool, phone: str | None) -> None: ...


# ---- the flow in the call -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EscalationPhrases:
    handoff: str = "Le comunico con un agente. Por favor espere en la línea."
    offer_callback_folio: str = ("En este momento no pudimos comunicarle con un agente. Guardamos su folio "
                                 "{folio}. Si desea que un agente le devuelva la llamada a este "
                                 "número, marque 1 o diga sí. Para terminar, marque 2.")
    offer_callback: str = ("En este momento no pudimos comunicarle con un agente. Si desea que un agente le devuelva la llamada a este número, marque 1 o diga sí. "
                           "Para terminar, marque 2.")
    callback_yes_folio: str = "Listo. Un agente le llamará con su folio {folio}. Gracias por llamar. Hasta luego."
    callback_yes: str = "Listo. Un agente le devolverá la llamada. Gracias por llamar. Hasta luego."
    callback_no: str = "En este momento no hay agentes disponibles. Por favor llame más tarde. Hasta luego."

    def all(self) -> list[str]:
        return [self.handoff, self.offer_callback, self.callback_yes, self.callback_no]


@dataclass(frozen=True, slots=True)
class EscalationOutcome:
    disposition: Disposition           # transferred | transfer_failed | abandoned (set by the session on BYE)
    target: str | None
    status_code: int = 0
    callback: bool = False


@dataclass
class EscalationIO:
    """What the flow needs from the session: speak (not interruptible), ask, and the call's identity."""
    call_id: str
    folio: Callable[[], str | None]
    caller: str
    say: Callable[..., Awaitable[None]]                                  # say(*texts)
    ask: Callable[[Sequence[str], Expect], Awaitable[CallerTurn | None]]
    leg: CallLeg
    recorder: CallRecorder
    on_bridged: Callable[[str], None]                                    # the session keeps "transferred"
    gone: asyncio.Event                                                  # set when the caller's leg has ended
    shield_hangup: Callable[[bool], None]   # True: a hang-up doesn't cancel the flow (it checks `gone` itself)


def spoken_folio(folio: str) -> str:
    return " ".join(folio)


async def _note(io: EscalationIO, coro: Awaitable[None]) -> None:
    """A journal/transcript write that must never break the call."""
    try:
        await asyncio.wait_for(coro, 5.0)
    except Exception:
        log.exception("escalation record failed %s", kv(call_id=io.call_id))


async def _say(io: EscalationIO, text: str) -> None:
    await _note(io, io.recorder.add_turn(io.call_id, "portal", text))
    await io.say(text)


async def run_escalation(io: EscalationIO, config: EscalationConfig, texts: Sequence[str], reason: str,
                         phrases: EscalationPhrases | None = None,
                         requested_target: str | None = None) -> EscalationOutcome:
    """Hand the call to an agent; returns how it ended (the session then ends the call with that disposition)."""
    ph = phrases or EscalationPhrases()
    reason = reason if reason in REASONS else "caller_request"     # a dialogue payload names it: keep to the known
    journal = io.recorder if isinstance(io.recorder, EscalationJournal) else None
    folio = io.folio()
    try:
        plan = plan_transfer(config, folio, io.call_id, reason, requested_target)
    except ForbiddenTarget as exc:
        log.error("transfer refused %s", kv(call_id=io.call_id, case=folio or "-", error=str(exc)))
        if journal is not None:   # queued all the same, so a callback the caller asks for reaches an agent
            await _note(io, journal.escalation_requested(io.call_id, reason, "", config.mode))
            await _note(io, journal.escalation_result(io.call_id, False, 403, "transfer target not allowed"))
        return await _offer_callback(io, ph, journal, None, 403)
    if journal is not None:
        # before speaking: the agent console shows the call (and streams what follows) at once
        await _note(io, journal.escalation_requested(io.call_id, reason, plan.target, plan.mode))
    await _say(io, " ".join([*[t for t in texts if t.strip()], ph.handoff]))
    log.info("escalation %s", kv(call_id=io.call_id, case=folio or "-", reason=reason, mode=plan.mode,
                                 target=plan.target))
    # A successful REFER ends our leg before transfer() returns; that hang-up must not cut the flow short of
    # recording the result, so hang-ups are read from `gone` until the outcome is known.
    io.shield_hangup(True)
    try:
        # the edge bounds the wait itself (final NOTIFY / agent answer); this guards a stuck edge
        result = await asyncio.wait_for(io.leg.transfer(plan.target, plan.headers), config.transfer_timeout_s + 5)
    except TimeoutError:
        result = TransferResult(False, 408, "no final transfer result")
    except Exception as exc:
        log.warning("transfer error %s", kv(call_id=io.call_id, error=type(exc).__name__))
        result = TransferResult(False, 500, f"{type(exc).__name__}: {exc}"[:200])
    log.info("transfer result %s", kv(call_id=io.call_id, case=folio or "-", ok=result.ok, code=result.status_code))
    if journal is not None:
        await _note(io, journal.escalation_result(io.call_id, result.ok, result.status_code, result.reason))
    if result.ok:
        if plan.mode == "bridge":
            io.on_bridged(plan.target)
            await io.gone.wait()            # the bridged call runs in the SIP edge until one side hangs up
        if not io.gone.is_set():
            io.shield_hangup(False)
        return EscalationOutcome("transferred", plan.target, result.status_code)
    if io.gone.is_set():
        return EscalationOutcome("abandoned", plan.target, result.status_code)
    io.shield_hangup(False)
    return await _offer_callback(io, ph, journal, plan.target, result.status_code)


async def _offer_callback(io: EscalationIO, ph: EscalationPhrases, journal: EscalationJournal | None,
                          target: str | None, code: int) -> EscalationOutcome:
    folio = io.folio()
    offer = ph.offer_callback_folio.format(folio=spoken_folio(folio)) if folio else ph.offer_callback
    await _note(io, io.recorder.add_turn(io.call_id, "portal", offer))
    answer = await io.ask((offer,), Expect(kind="yes_no", phrases=("sí", "no"), max_digits=1))
    if answer is not None:
        text = answer.text if answer.text else f"[DTMF {answer.dtmf}]"
        await _note(io, io.recorder.add_turn(io.call_id, "caller", text, "callback_answer"))
    accepted = is_yes(answer)
    if journal is not None:
        await _note(io, journal.callback_requested(io.call_id, accepted, io.caller if accepted else None))
    log.info("callback offer %s", kv(call_id=io.call_id, case=folio or "-", accepted=accepted,
                                     caller=mask_phone(io.caller)))
    if accepted:
        await _say(io, ph.callback_yes_folio.format(folio=spoken_folio(folio)) if folio else ph.callback_yes)
    else:
        await _say(io, ph.callback_no)
    return EscalationOutcome("transfer_failed", target, code, accepted)
