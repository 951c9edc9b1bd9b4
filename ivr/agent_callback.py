"""An agent's call back ("Llamar de vuelta" in the agent console): what the node says when the citizen answers, and
the hand-over to the agent who asked.

The job (case_bridge.callbacks, reason `agent_return`, `requested_by` the agent's username) is dialled by the
same dialer as every callback (share limit, pacing, dial plan, opt-out). Once the citizen answers:

1. who is calling and why, nothing about the case: "Le llama {caller_name}. Un agente del centro de atención le
   devuelve la llamada que usted pidió. Para hablar con el agente marque uno ..." (1 talk, 2 not now, 9 no more
   calls; no key within `first_input_s` = voicemail-like, `silent`);
2. on 1, the call goes to *that* agent: `escalation.agent_uris[<username>]`, with the case attached the way an
   escalation attaches it (`ivr.call.escalation.case_headers`: `X-Veratur-Case` and the RFC 7433 User-to-User
   header, in the INVITE of a bridge or the Refer-To of a REFER, per `escalation.mode`). A bridge keeps the leg up:
   the conversation returns `CallResult(handed_off=True)` and the dialer holds the slot until either side hangs up;
   the call record is closed `transferred` then.
3. The agent's phone busy / not answering: the citizen is told, the attempt is `failed` with the SIP code, and the
   agent's console shows it (retry or cancel there). An agent with no `agent_uris` entry (removed since the click)
   or whose account is gone or deactivated: the citizen is not called at all (`agent_refusal`, the dialer's
   precheck), the attempt is `failed` with that detail.

Every prompt and key is a transcript turn of the call record (direction outbound), linked to the case as a phone
Interaction with direction outbound. Logs carry the job id and call id, never the number.
"""
from __future__ import annotations

import asyncio
import logging

from case_bridge.callbacks import CallbackView
from case_bridge.service import CaseService
from foundation.config import Settings
from foundation.logs import kv
from ivr.call.escalation import ForbiddenTarget, case_headers, normalize_sip_uri
from ivr.callback_call import CallbackTexts, _Talk
from ivr.dialer import CallResult
from ivr.sip.leg import SipLeg
from ivr.speech.tts import SpeechSynthesizer

log = logging.getLogger("ivr.agent_callback")

DIRECTION_NOTE = "Llamada saliente: un agente devuelve la llamada"
GREETING = ("Buenos días. Le llama {caller}. Un agente del centro de atención le devuelve la llamada que usted "
            "pidió. Para hablar con el agente, marque uno. Si no desea hablar ahora, marque dos. "
            "Para no recibir más llamadas, marque nueve.")
CONNECTING = "Le comunico con el agente. Un momento, por favor."
AGENT_UNAVAILABLE = "En este momento el agente no pudo atender. Le volveremos a llamar. Gracias."
DECLINED = "Entendido. Gracias, hasta luego."
MENU_TRIES = 2

# job.detail values (case_bridge.web.callback_forms.DETAIL_LABELS shows them in Spanish)
BRIDGED = "connected to the agent"
REFERRED = "transferred to the agent"
DECLINED_DETAIL = "the citizen did not want to talk now"
HUNG_UP = "the citizen hung up before choosing"
NO_AGENT_URI = "agent has no SIP URI"
AGENT_INACTIVE = "agent account unknown or inactive"


def agent_uri(settings: Settings, username: str | None) -> str | None:
    """The agent's own SIP URI (canonical), or None when the agent has none configured or it is not plain."""
    uri = settings.escalation.agent_uris.get(username or "")
    if not uri:
        return None
    try:
        return normalize_sip_uri(uri)
    except ForbiddenTarget:
        return None


async def agent_refusal(service: CaseService, settings: Settings, job: CallbackView) -> str | None:
    """Why this agent's call back must not be dialled now (checked before the citizen's phone rings)."""
    if agent_uri(settings, job.requested_by) is None:
        return NO_AGENT_URI
    if await asyncio.to_thread(service.active_staff, job.requested_by or "") is None:
        return AGENT_INACTIVE
    return None


class AgentReturnConversation:
    def __init__(self, service: CaseService, tts: SpeechSynthesizer, settings: Settings, *,
                 first_input_s: float = 8.0, key_timeout_s: float = 8.0) -> None:
        self.service, self.tts, self.settings = service, tts, settings
        self.first_input_s, self.key_timeout_s = first_input_s, key_timeout_s
        self.texts = CallbackTexts()

    async def __call__(self, leg: SipLeg, job: CallbackView) -> CallResult:
        call_id = leg.info.call_id
        talk = await _Talk.outbound(leg, self.tts, self.service, self.settings, job,
                                    f"{DIRECTION_NOTE} ({job.requested_by or '-'})")
        result = CallResult("failed", "conversation error")
        disposition, target = "abandoned", None
        try:
            result, disposition, target = await self._converse(talk, job)
        finally:
            talk.close()
            log.info("agent callback %s", kv(event="agent_callback", job=job.id, call_id=call_id,
                                             case=job.folio, agent=job.requested_by or "-", outcome=result.outcome,
                                             detail=result.detail))
            await asyncio.to_thread(self.service.set_call_summary, call_id,
                                    f"{DIRECTION_NOTE} ({job.requested_by or '-'}: {result.outcome})")
            if not result.handed_off:
                await asyncio.to_thread(self.service.close_call, call_id, disposition, transfer_target=target)
        if result.handed_off:
            async def finish() -> None:
                await asyncio.to_thread(self.service.close_call, call_id, "transferred", transfer_target=target)
            return CallResult(result.outcome, result.detail, handed_off=True, finish=finish)
        return result

    async def _converse(self, talk: _Talk, job: CallbackView) -> tuple[CallResult, str, str | None]:
        for _ in range(MENU_TRIES):
            await talk.say(GREETING.format(caller=self.settings.outbound.caller_name))
            key = await talk.key(self.first_input_s)
            if key is None:
                if talk.ended:
                    return CallResult("answered", HUNG_UP), "abandoned", None
                return CallResult("silent"), "abandoned", None
            await talk.note(key, "dtmf_menu")
            if key == "1":
                return await self._hand_over(talk, job)
            if key == "2":
                await talk.say_last(DECLINED)
                return CallResult("answered", DECLINED_DETAIL), "completed", None
            if key == "9":
                await talk.say_last(self.texts.opted_out)
                return CallResult("opt_out"), "completed", None
        await talk.say_last(self.texts.goodbye)
        return CallResult("answered", HUNG_UP), "completed", None

    async def _hand_over(self, talk: _Talk, job: CallbackView) -> tuple[CallResult, str, str | None]:
        target = agent_uri(self.settings, job.requested_by)
        if target is None:
            await talk.say_last(AGENT_UNAVAILABLE)
            return CallResult("failed", NO_AGENT_URI), "transfer_failed", None
        await talk.say(CONNECTING)
        if talk.ended:
            return CallResult("answered", HUNG_UP), "abandoned", None
        headers = case_headers(job.folio, talk.call_id, "caller_request")
        try:
            result = await asyncio.wait_for(talk.leg.transfer(target, headers),
                                            self.settings.escalation.transfer_timeout_s + 5)
        except TimeoutError:
            result = None
        code = result.status_code if result is not None else 408
        if result is not None and result.ok:
            if talk.leg.ended:            # REFER: the citizen's phone called the agent; our leg is gone
                return CallResult("answered", REFERRED), "transferred", target
            return CallResult("answered", BRIDGED, handed_off=True), "transferred", target
        if talk.ended:
            return CallResult("answered", HUNG_UP), "abandoned", target
        await talk.say_last(AGENT_UNAVAILABLE)
        return CallResult("failed", f"agent did not answer: SIP {code}"), "transfer_failed", target
