"""The outbound dialer of one worker: takes due callback jobs (case_bridge.callbacks, with a lease), places the
calls through the SIP edge, maps how each ended to an outcome and records the attempt.

Capacity: outbound calls never hold more than `outbound.max_share` of this worker's call slots, and never the
last free slot, so inbound callers are not refused because the node is busy calling out (every worker applies
the same share: the node's total holds too). Pacing per number: `outbound.pacing_s` between attempts (the job's
schedule is at least that far apart). What happens once the citizen answers is `converse(leg, job)`, which returns
the outcome (answered, opt_out, silent), or a `CallResult` with a detail and, for a call now bridged to an agent,
`handed_off`: the attempt is recorded at once (the job is done, its lease released: a conversation with an agent
can outlast any lease), the leg is left up, and the outbound slot is held until the bridge ends. This module knows
nothing about the dialogue.
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from case_bridge.callbacks import CallbackView
from case_bridge.models import utcnow
from case_bridge.service import CaseService
from foundation import dialplan
from foundation.config import Settings
from foundation.logs import kv
from ivr.sip.endpoint import SipError
from ivr.sip.leg import SipLeg

log = logging.getLogger("ivr.dialer")

BUSY_CODES = frozenset({486, 600, 603})
NO_ANSWER_CODES = frozenset({408, 480, 487})
RING_TIMEOUT_S = 30.0
OUTBOUND_HEADER = "X-Veratur-Outbound"   # the front door's token header (veratur.registrations.OUTBOUND_HEADER)
BRIDGE_MAX_S = 4 * 3600.0                # a bridged call back holds its slot at most this long (then it is hung up)


@dataclass(frozen=True)
class CallResult:
    """What a conversation reports besides the bare outcome."""
    outcome: str
    detail: str = ""
    # the leg now belongs to a bridge (ivr.sip.bridge ties it to the agent's call): not hung up by the dialer;
    # `finish` runs once it has ended (e.g. closing the call record)
    handed_off: bool = False
    finish: Callable[[], Awaitable[None]] | None = None


class Placer(Protocol):
    """What the dialer needs of the SIP edge (ivr.sip.edge.SipEdge.call)."""

    async def call(self, uri: str, headers: dict[str, str] | None = None, timeout_s: float = ...) -> SipLeg: ...


def outbound_slots(capacity: int, active_total: int, active_outbound: int, max_share: float) -> int:
    """How many new outbound calls may start now: within the share, and leaving one slot for an inbound caller."""
    share_cap = math.floor(capacity * max_share + 1e-9)
    return max(0, min(share_cap - active_outbound, capacity - 1 - active_total))


def outcome_for(code: int) -> str:
    if code in BUSY_CODES:
        return "busy"
    if code in NO_ANSWER_CODES:
        return "no_answer"
    return "failed"


def target_uri(number: str, route: str) -> str:
    """sip:<digits>@<route host:port> (the route is the PBX/trunk, or Kamailio in front of it)."""
    return f"sip:{number}@{route.removeprefix('sip:')}"


class Dialer:
    def __init__(self, service: CaseService, settings: Settings, owner: str, placer: Placer,
                 converse: Callable[[SipLeg, CallbackView], Awaitable[str | CallResult]], *, capacity: int,
                 active_calls: Callable[[], int], clock: Callable[[], datetime] = utcnow,
                 ring_timeout_s: float = RING_TIMEOUT_S,
                 precheck: Callable[[CallbackView], Awaitable[str | None]] | None = None) -> None:
        self.service, self.settings, self.owner, self.placer = service, settings, owner, placer
        self.converse, self.capacity, self.active_calls, self.clock = converse, capacity, active_calls, clock
        # why a job must not be dialled now (e.g. an agent's call back whose agent is gone): the conversation's own
        # `precheck` unless one is given; the attempt is then `failed` with that detail and nobody is called
        self.precheck = precheck if precheck is not None else getattr(converse, "precheck", None)
        self.ring_timeout_s = ring_timeout_s
        self.outbound_active = 0
        self.tasks: set[asyncio.Task[str]] = set()
        out = settings.outbound
        registrar = settings.sip.registrations[0].registrar if settings.sip.registrations else None
        self.route = out.route or registrar
        # Behind Kamailio the call goes to the front door, which relays it to the route (veratur.registrations:
        # route[OUTBOUND]) when it carries the node's token; the file is written with the front door's config.
        self.token: str | None = None
        token_file = settings.path(settings.data_dir) / "kamailio" / "outbound.token"
        if settings.sip.use_kamailio and token_file.exists():
            self.token = token_file.read_text(encoding="utf-8").strip()
            host = settings.sip.bind_address
            self.dial_via = f"sip:{'[' + host + ']' if ':' in host else host}:{settings.sip.port}"
        else:
            self.dial_via = self.route or ""

    async def run_once(self) -> list[asyncio.Task[str]]:
        """Lease what may be dialled now and start those calls; returns their tasks (each ends with the outcome)."""
        out = self.settings.outbound
        if not out.enabled or self.route is None:
            return []
        free = outbound_slots(self.capacity, self.active_calls(), self.outbound_active, out.max_share)
        if free <= 0:
            return []
        jobs = await asyncio.to_thread(self.service.lease_due, self.owner, now=self.clock(),
                                       lease_s=out.callback.lease_s, limit=free, pacing_s=out.pacing_s)
        started = []
        for job in jobs:
            self.outbound_active += 1
            task = asyncio.create_task(self._dial(job), name=f"callback-{job.id}")
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            started.append(task)
        return started

    async def _dial(self, job: CallbackView) -> str:
        out = self.settings.outbound
        sip_call_id: str | None = None
        detail = ""
        bridged: CallResult | None = None
        bridged_leg: SipLeg | None = None
        try:
            decision = dialplan.check(job.number, out.allowed_prefixes)   # the plan may have changed since
            refusal = await self.precheck(job) if self.precheck is not None else None
            if decision.number is None:
                outcome, detail = "failed", f"number refused: {decision.reason}"
            elif refusal:
                outcome, detail = "failed", refusal[:200]
            else:
                assert self.route is not None
                headers = {"X-Veratur-Callback": str(job.id), **({OUTBOUND_HEADER: self.token} if self.token else {}),
                           "P-Asserted-Identity": f'"{out.caller_name}" <sip:{out.caller_id}@'
                                                  f'{self.route.removeprefix("sip:")}>'}
                try:
                    leg = await self.placer.call(target_uri(decision.number, self.dial_via), headers,
                                                 timeout_s=self.ring_timeout_s)
                except SipError as exc:
                    code = exc.status_code
                    # "SIP 503 Trunk not reached over TLS ..." (the reason phrase says why, e.g. the front door's)
                    # (only the far end's reason phrase: other messages name the URI, i.e. the number)
                    text = str(exc)
                    reason = text.removeprefix(f"call failed: {code}").strip() if text.startswith(
                        "call failed: ") else ""
                    outcome = outcome_for(code)
                    detail = (f"SIP {code} {reason}".strip() if code else str(exc))[:200]
                else:
                    sip_call_id = leg.info.call_id
                    result: str | CallResult = "failed"
                    try:
                        result = await self.converse(leg, job)
                    finally:
                        handed = isinstance(result, CallResult) and result.handed_off and not leg.ended
                        if not leg.ended and not handed:   # e.g. a silent answer: nobody else will hang up
                            await leg.hangup()
                    if isinstance(result, CallResult):
                        outcome, detail = result.outcome, result.detail[:200]
                        if handed:
                            bridged, bridged_leg = result, leg
                    else:
                        outcome = result
            log.info("callback attempt %s", kv(event="callback_attempt", job=job.id, outcome=outcome,
                                              number=dialplan.mask(job.number), detail=detail))
            await asyncio.to_thread(self.service.record_attempt, job.id, self.owner, outcome, now=self.clock(),
                                    schedule=out.callback, sip_call_id=sip_call_id, detail=detail)
            if bridged is not None and bridged_leg is not None:
                await self._hold_bridge(job, bridged, bridged_leg)
            return outcome
        finally:
            self.outbound_active -= 1

    async def _hold_bridge(self, job: CallbackView, result: CallResult, leg: SipLeg) -> None:
        """The citizen talks with the agent: keep the slot until the bridge ends (either side hangs up)."""
        self.outbound_active += 1          # the agent's leg is a second call slot of this worker
        try:
            if not await leg.wait_ended(BRIDGE_MAX_S):
                await leg.hangup()
            log.info("callback bridge ended %s", kv(event="callback_bridge_ended", job=job.id))
        finally:
            self.outbound_active -= 1
            if result.finish is not None:
                try:
                    await result.finish()
                except Exception:
                    log.exception("callback bridge finish failed %s", kv(job=job.id))
