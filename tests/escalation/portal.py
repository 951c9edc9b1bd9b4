"""A real portal in the test process: the pjsua2 SIP edge + the call engine (real Vosk test model, real espeak-ng
TTS, the YAML DTMF menu) + the case recorder with the escalation journal on a real database.

Built from the same parts as `veratur ivr` (ivr.worker wires SipEdge -> Engine.handle_call); the one test seam is
`CaseLookupMenu`: the DTMF menu, where a keyed folio that exists links the call to its case — what Rasa's status
form does after the PIN check — so a call can carry a case without a Rasa server in these tests.
"""
from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from case_bridge.service import CaseService
from foundation.config import Settings
from ivr.call.recorder import EscalationRecorder
from ivr.dialogue.interface import CallerTurn, DialogueReply, TurnContext
from ivr.dialogue.menu import MenuDialogue, MenuSpec, load_menu
from ivr.engine import Engine
from ivr.metrics import EngineMetrics
from ivr.sip.edge import EdgeConfig, SipEdge
from ivr.sip.leg import SipLeg


class CaseLookupMenu(MenuDialogue):
    """The DTMF menu; a keyed folio that exists in the case bridge links the call to that case."""

    def __init__(self, spec: MenuSpec, service: CaseService) -> None:
        super().__init__(spec)
        self.service = service

    async def turn(self, ctx: TurnContext, turn: CallerTurn) -> DialogueReply:
        reply = await super().turn(ctx, turn)
        if reply.intent == "tramite_status_folio" and turn.dtmf:
            case = await asyncio.to_thread(self.service.find_case, turn.dtmf.strip("#"))
            if case is not None:
                reply = dataclasses.replace(reply, case_folio=case.folio)
        return reply


def portal_settings(tmp: Path, db_url: str, *, agent_uri: str, mode: str = "refer", transfer_timeout_s: float = 6.0,
                    no_input_timeout_s: float = 6.0, allowed: list[str] | None = None) -> Settings:
    base = Settings()
    return base.model_copy(update={
        "data_dir": tmp,
        "asr": base.asr.model_copy(update={"model": "ko-test", "max_parallel_decoders": 1}),
        "tts": base.tts.model_copy(update={"cache_dir": tmp / "tts"}),
        "turns": base.turns.model_copy(update={"no_input_timeout_s": no_input_timeout_s}),
        "database": base.database.model_copy(update={"url": db_url}),
        "sip": base.sip.model_copy(update={"media_timeout_s": 90.0}),   # sipp sends RTP only while it keys
        "escalation": base.escalation.model_copy(update={
            "mode": mode, "agent_queue_uri": agent_uri, "allowed_targets": allowed or [agent_uri],
            "transfer_timeout_s": transfer_timeout_s}),
    })


@dataclass
class Portal:
    settings: Settings
    service: CaseService
    recorder: EscalationRecorder
    engine: Engine
    edge: SipEdge
    legs: list[SipLeg] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    async def start(cls, settings: Settings, service: CaseService,
                    dialogue: Callable[[MenuSpec, CaseService], MenuDialogue] = CaseLookupMenu) -> Portal:
        recorder = EscalationRecorder(service, data_dir=settings.data_dir, name="esc-w0")
        await recorder.start()
        menu = load_menu()
        engine = await Engine.create(settings, EngineMetrics(), recorder=recorder, menu=menu,
                                     dialogue_factory=lambda _info: dialogue(menu, service))
        config = dataclasses.replace(EdgeConfig.from_settings(settings, 0, "esc/w0"), transports=("udp",),
                                     randomize_rtp_port=True,
                                     allowed_peers=(ipaddress.ip_network("127.0.0.0/8"),))
        holder: list[Portal] = []
        edge = SipEdge(config, on_call=lambda leg: holder[0]._on_call(leg))
        portal = cls(settings, service, recorder, engine, edge)
        holder.append(portal)
        await edge.start()
        return portal

    @property
    def uri(self) -> str:
        return self.edge.local_uri()

    @property
    def port(self) -> int:
        return self.edge.local_ports["udp"]

    def _on_call(self, leg: SipLeg) -> None:
        self.legs.append(leg)
        task = asyncio.create_task(self._run(leg), name=f"esc-call-{leg.info.call_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, leg: SipLeg) -> None:
        try:
            await self.engine.handle_call(leg)
        finally:
            if not leg.ended:
                await leg.hangup()
                await leg.wait_ended(3.0)

    async def wait_calls_done(self, timeout_s: float = 60.0) -> None:
        if self.tasks:
            await asyncio.wait_for(asyncio.gather(*list(self.tasks), return_exceptions=True), timeout_s)

    async def stop(self) -> None:
        await self.edge.stop(0)
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=10)
        await self.engine.close()
        await self.recorder.stop()
