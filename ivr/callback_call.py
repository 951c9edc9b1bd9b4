"""The status-change callback conversation: what the node says once the citizen answers a callback call.

Order matters for privacy: who is calling and why (no detail of the case), then the PIN; only a verified PIN
hears the status and what is still missing. Keys: 9 stops future calls (honoured by case_bridge.callbacks
everywhere), 0 an agent, 1 repeats. No key within `first_input_s` of the greeting is taken as voicemail or a
silent answer (`silent`: retried on the schedule). Everything said and keyed is a transcript turn of the call
record (direction outbound), linked to the case as a phone Interaction with direction outbound (taken from the call
record; migration 0010) whose summary also says it was an outbound callback.

Returns the outcome for `case_bridge.callbacks.record_attempt`: answered | opt_out | silent.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from case_bridge.callbacks import AGENT_RETURN, CallbackView
from case_bridge.escalation import EscalationDesk
from case_bridge.service import CaseService
from case_bridge.views import STATUS_LABELS
from foundation.config import Settings
from foundation.logs import kv
from ivr.call.escalation import case_headers
from ivr.call.leg import DtmfIn, HangupIn
from ivr.call.prompt import Prompt
from ivr.dialer import CallResult
from ivr.sip.leg import SipLeg
from ivr.speech.tts import SpeechSynthesizer

log = logging.getLogger("ivr.callback_call")

PIN_DIGITS = 4
PIN_TRIES = 2
CHOICE_KEY_WAIT_S = 2.0     # after a lone 9 or 0: no further key this long = the choice, not a PIN's first digit
DIRECTION_NOTE = "Llamada saliente: aviso de cambio de estado"
STAFF_WHO = {"clerk_callback": "la oficina", "agent_callback": "el centro de atención"}


@dataclass
class CallbackTexts:
    greeting: str = ("Buenos días. Le llama {caller}, sobre un trámite que usted inició. "
                     "Para escuchar su estado, marque su PIN de cuatro dígitos. "
                     "Para hablar con un agente marque cero. Para no recibir más llamadas marque nueve.")
    bad_pin: str = "El PIN no coincide. Márquelo de nuevo, por favor."
    denied: str = "No pudimos verificar el PIN. Puede consultar su trámite en el portal o en una oficina. Adiós."
    staff_reason: str = "Le llamamos de parte de {who}: {note}."
    status: str = "Su trámite {tramite} está en estado: {status}."
    missing: str = "Todavía falta: {items}."
    nothing_missing: str = "No falta ningún documento."
    menu: str = "Para repetir marque uno. Para hablar con un agente marque cero. Para no recibir más llamadas marque nueve."
    opted_out: str = "Entendido. No volveremos a llamarle por sus trámites. Adiós."
    agent: str = "Le comunico con un agente."
    goodbye: str = "Gracias. Adiós."


class CallbackConversation:
    def __init__(self, service: CaseService, tts: SpeechSynthesizer, settings: Settings, *,
                 first_input_s: float = 8.0, key_timeout_s: float = 8.0, texts: CallbackTexts | None = None) -> None:
        self.service, self.tts, self.settings = service, tts, settings
        self.first_input_s, self.key_timeout_s = first_input_s, key_timeout_s
        self.texts = texts or CallbackTexts()

    async def precheck(self, job: CallbackView) -> str | None:
        """Before dialling (ivr.dialer): an agent's call back whose agent has no phone or account any more is not
        dialled at all (the citizen would only hear that nobody can take the call)."""
        if job.reason != AGENT_RETURN:
            return None
        from ivr.agent_callback import agent_refusal
        return await agent_refusal(self.service, self.settings, job)

    async def __call__(self, leg: SipLeg, job: CallbackView) -> str | CallResult:
        if job.reason == AGENT_RETURN:       # an agent's "Llamar de vuelta": the citizen goes to that agent
            from ivr.agent_callback import AgentReturnConversation
            return await AgentReturnConversation(self.service, self.tts, self.settings,
                                                 first_input_s=self.first_input_s,
                                                 key_timeout_s=self.key_timeout_s)(leg, job)
        call_id = leg.info.call_id
        talk = await _Talk.outbound(leg, self.tts, self.service, self.settings, job, DIRECTION_NOTE)
        try:
            outcome, disposition = await self._converse(talk, job)
        finally:
            talk.close()
        await asyncio.to_thread(self.service.set_call_summary, call_id, f"{DIRECTION_NOTE} ({outcome})")
        await asyncio.to_thread(self.service.close_call, call_id, disposition)
        log.info("callback conversation %s", kv(event="callback_conversation", job=job.id, outcome=outcome))
        return outcome

    async def _converse(self, talk: _Talk, job: CallbackView) -> tuple[str, str]:
        t = self.texts
        await talk.say(t.greeting.format(caller=self.settings.outbound.caller_name))
        first = await talk.key(self.first_input_s)
        if first is None:
            return ("answered", "abandoned") if talk.ended else ("silent", "abandoned")
        for attempt in range(PIN_TRIES):
            # 9 or 0 alone is a choice; followed by more keys it is the first digit of a PIN (a PIN may start
            # with either, and people key a PIN without pausing)
            rest = await talk.digits(PIN_DIGITS - 1, CHOICE_KEY_WAIT_S if first in "90" else self.key_timeout_s)
            if first in "90" and not rest:
                await talk.note(first, "dtmf_menu")
                return await self._control(talk, first, job)
            if len(rest) < PIN_DIGITS - 1:
                rest += await talk.digits(PIN_DIGITS - 1 - len(rest), self.key_timeout_s)
            pin = first + rest
            await talk.note(f"(PIN, {len(pin)} dígitos)", "dtmf_pin")
            result = await asyncio.to_thread(self.service.status_for, job.folio, pin=pin, call=talk.call_id,
                                             timeline=False)
            if result.reason == "ok" and result.case is not None:
                break
            if attempt == PIN_TRIES - 1 or result.reason == "locked":
                await talk.say_last(t.denied)
                return "answered", "completed"
            await talk.say(t.bad_pin)
            first = await talk.key(self.key_timeout_s) or ""
            if not first:
                return "answered", "abandoned"
        case = result.case
        assert case is not None
        missing = t.missing.format(items=", ".join(case.missing)) if case.missing else t.nothing_missing
        report = (t.status.format(tramite=case.tramite.name, status=STATUS_LABELS.get(case.status, case.status))
                  + " " + missing)
        if job.note:      # a clerk's or agent's reason: only after the PIN (it may say something about the case)
            who = STAFF_WHO.get(job.reason, "la oficina")
            report = t.staff_reason.format(who=who, note=job.note.rstrip(".")) + " " + report
        while True:
            await talk.say(report + " " + t.menu)
            key = await talk.key(self.key_timeout_s)
            if key is not None:
                await talk.note(key, "dtmf_menu")
            if key == "1":
                continue
            if key in ("9", "0"):
                return await self._control(talk, key, job)
            await talk.say_last(t.goodbye)
            return "answered", "completed"

    async def _control(self, talk: _Talk, key: str, job: CallbackView) -> tuple[str, str]:
        if key == "9":
            await talk.say_last(self.texts.opted_out)
            return "opt_out", "completed"
        await talk.say(self.texts.agent)
        target = self.settings.escalation.agent_queue_uri
        # The case goes with the call: queued for the agent console (which pops the case and this transcript)
        # and carried in the REFER (X-Veratur-Case + User-to-User, in the Refer-To too), as for inbound calls.
        try:
            await asyncio.to_thread(EscalationDesk(self.service).enqueue, talk.call_id, "caller_request", target)
        except Exception as exc:      # the agent still gets the call, only the console pop-up is missing
            log.error("callback escalation %s", kv(event="callback_enqueue_failed", job=job.id,
                                                   error=f"{type(exc).__name__}: {exc}"[:200]))
        result = await talk.leg.transfer(target, case_headers(job.folio, talk.call_id, "caller_request"))
        if not result.ok:
            await talk.hangup()
        return "answered", "transferred" if result.ok else "transfer_failed"


class _Talk:
    """Prompts and keys on one leg; every prompt and key is a transcript turn."""

    def __init__(self, leg: SipLeg, tts: SpeechSynthesizer, service: CaseService, call_id: str) -> None:
        self.leg, self.tts, self.service, self.call_id = leg, tts, service, call_id
        self.keys: asyncio.Queue[str] = asyncio.Queue()
        self.ended = False
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def outbound(cls, leg: SipLeg, tts: SpeechSynthesizer, service: CaseService, settings: Settings,
                       job: CallbackView, summary: str) -> _Talk:
        """The talk of a call the node placed to `job`'s number: the call recorded as outbound (the dashboard
        counts it as a callback, never among the calls received) and linked to the job's case with `summary`."""
        call_id = leg.info.call_id
        await asyncio.to_thread(service.link_call, call_id, settings.outbound.caller_id, called=job.number,
                                node=settings.node_name, direction="outbound")
        await asyncio.to_thread(service.link_call_case, call_id, job.folio, summary=summary)
        return cls(leg, tts, service, call_id)

    async def _read(self) -> None:
        async for event in self.leg.events():
            if isinstance(event, DtmfIn):
                self.keys.put_nowait(event.digit)
            elif isinstance(event, HangupIn):
                self.ended = True
                return

    async def say(self, text: str) -> None:
        if self.ended:
            return
        await asyncio.to_thread(self.service.add_turn, self.call_id, "portal", text)
        prompt = Prompt(self.leg, await self.tts.synthesize(text), text=text)
        prompt.start()
        waiter = asyncio.create_task(prompt.wait_for_playout())
        # A key pressed during the prompt cuts it (the citizen knows the menu).
        while not waiter.done() and not self.ended:
            if not self.keys.empty():
                prompt.interrupt()
                break
            await asyncio.sleep(0.05)
        await prompt.aclose()
        waiter.cancel()

    async def say_last(self, text: str) -> None:
        """Say `text`, the call's last words, then hang up."""
        await self.say(text)
        await self.hangup()

    async def key(self, timeout_s: float) -> str | None:
        try:
            return await asyncio.wait_for(self.keys.get(), timeout_s)
        except TimeoutError:
            return None

    async def note(self, text: str, intent: str) -> None:
        """A caller turn in the transcript (a PIN is noted as such, never its digits)."""
        await asyncio.to_thread(self.service.add_turn, self.call_id, "caller", text, intent)

    async def digits(self, count: int, timeout_s: float) -> str:
        got = ""
        while len(got) < count:
            digit = await self.key(timeout_s)
            if digit is None:
                break
            got += digit
        return got

    async def hangup(self) -> None:
        if not self.ended:
            await self.leg.hangup()

    def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(Exception):
            self._reader.exception() if self._reader.done() and not self._reader.cancelled() else None
