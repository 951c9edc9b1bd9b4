"""`escalation.mode: bridge`: the node itself calls the agent and joins the two calls' audio.

For PBXs that do not accept REFER. The agent gets a new INVITE carrying the same case headers as a REFER would
(`X-Veratur-Case`, RFC 7433 `User-to-User`); once it answers, both calls' audio streams are connected to each other
in pjsua's conference bridge (no Python on the audio path) and the session's own media ports are detached, so the
speech engine no longer hears the conversation. The two calls are then tied: when either side hangs up, the other
gets a BYE.

The agent call needs a second pjsua call slot: with the PyPI wheel's 4 calls per worker, a worker in bridge mode
should admit at most 2 callers (`sip.max_calls_per_worker: 2`); with no slot free the INVITE cannot be placed and
the caller gets the transfer-failed path (callback offer), never a dropped call.

Runs on the event loop; SIP work goes through `SipEdge` (which owns the pjsua thread).
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from foundation.logs import kv
from ivr.call.leg import TransferResult

if TYPE_CHECKING:
    from ivr.sip.edge import SipEdge
    from ivr.sip.leg import SipLeg

log = logging.getLogger("ivr.sip.bridge")

LEG_WAIT_S = 24 * 3600.0          # a bridged call is bounded by the session's max duration, not here
HANGUP_WAIT_S = 3.0


async def bridge_transfer(edge: SipEdge, leg: SipLeg, target_uri: str, headers: dict[str, str],
                          ring_timeout_s: float) -> TransferResult:
    """Call `target_uri` with `headers`; on answer bridge it with `leg` and return ok (status 200).

    Failures come back as a TransferResult with the agent side's SIP code (486 busy, 404, 408 no answer,
    503 no call slot), the caller's call untouched."""
    from ivr.sip.edge import SipError

    if leg.ended:
        return TransferResult(False, 481, "caller already gone")
    try:
        agent = await edge.call(target_uri, headers, timeout_s=ring_timeout_s)
    except SipError as exc:
        code = exc.status_code or 503
        log.info("bridge call failed %s", kv(call_id=leg.info.call_id, target=target_uri, code=code))
        return TransferResult(False, code, str(exc)[:200])
    except Exception as exc:             # pjsua refused to place the call (e.g. no call slot left)
        log.warning("bridge call not placed %s", kv(call_id=leg.info.call_id, error=str(exc)[:200]))
        return TransferResult(False, 503, f"agent call not placed: {exc}"[:200])
    if leg.ended:
        await agent.hangup()
        return TransferResult(False, 487, "caller left while the agent answered")
    if not await edge.connect_audio(leg, agent):
        await agent.hangup()
        return TransferResult(False, 500, "could not connect the audio of both calls")
    edge.track_bridge(asyncio.create_task(_tie(leg, agent), name=f"bridge-{leg.info.call_id}"))
    log.info("bridged %s", kv(call_id=leg.info.call_id, agent_call_id=agent.info.call_id, target=target_uri))
    return TransferResult(True, 200, "bridged")


async def _tie(caller: SipLeg, agent: SipLeg) -> None:
    """When one side of a bridged call hangs up, hang up the other."""
    waits = {asyncio.create_task(caller.wait_ended(LEG_WAIT_S)), asyncio.create_task(agent.wait_ended(LEG_WAIT_S))}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        for side in (caller, agent):
            if not side.ended:
                try:
                    await side.hangup()
                    await side.wait_ended(HANGUP_WAIT_S)
                except Exception:
                    log.exception("bridge hangup failed %s", kv(call_id=side.info.call_id))
        log.info("bridge ended %s", kv(call_id=caller.info.call_id, caller=caller.hangup_reason or "-",
                                       agent=agent.hangup_reason or "-"))
