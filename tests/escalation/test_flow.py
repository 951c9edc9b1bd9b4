"""The in-call escalation flow (ivr.call.escalation.run_escalation) over in-memory seams: order of the journal writes,
the forbidden target (no transfer attempted), a hang-up during the transfer, the bridge hold."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from foundation.config import EscalationConfig
from ivr.call.escalation import EscalationIO, run_escalation
from ivr.call.leg import TransferResult
from ivr.dialogue.interface import CallerTurn, Expect

QUEUE = "sip:agentes@127.0.0.1:5090"


@dataclass
class Leg:
    result: TransferResult = TransferResult(True, 200)
    transfers: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    on_transfer: object = None

    async def transfer(self, target: str, headers: dict[str, str]) -> TransferResult:
        self.transfers.append((target, headers))
        if callable(self.on_transfer):
            self.on_transfer()
        await asyncio.sleep(0.01)
        return self.result


@dataclass
class Journal:
    events: list[tuple[object, ...]] = field(default_factory=list)

    async def call_started(self, info: object) -> str | None:
        return None

    async def add_turn(self, call_id: str, speaker: str, text: str, intent: str | None = None,
                       confidence: float | None = None) -> None:
        self.events.append(("turn", speaker, text))

    async def link_case(self, call_id: str, folio: str) -> None:
        return None

    async def call_ended(self, call_id: str, disposition: str, transfer_target: str | None = None) -> None:
        return None

    async def escalation_requested(self, call_id: str, reason: str, target: str, mode: str) -> None:
        self.events.append(("requested", reason, target, mode))

    async def escalation_result(self, call_id: str, ok: bool, status_code: int, detail: str) -> None:
        self.events.append(("result", ok, status_code))

    async def callback_requested(self, call_id: str, accepted: bool, phone: str | None) -> None:
        self.events.append(("callback", accepted, phone))


def make_io(leg: Leg, journal: Journal, answer: CallerTurn | None = None,
            folio: str | None = "12345678") -> tuple[EscalationIO, list[str], list[bool]]:
    said: list[str] = []
    bridged: list[bool] = []
    gone = asyncio.Event()

    async def say(*texts: str) -> None:
        said.append(" ".join(texts))

    async def ask(texts: Sequence[str], expect: Expect) -> CallerTurn | None:
        said.append(" ".join(texts))
        return answer

    io = EscalationIO(call_id="c1", folio=lambda: folio, caller="2281234567", say=say, ask=ask, leg=leg,  # type: ignore[arg-type]
                      recorder=journal, on_bridged=lambda target: bridged.append(True), gone=gone,  # type: ignore[arg-type]
                      shield_hangup=lambda on: None)
    return io, said, bridged


async def test_journal_order_and_success() -> None:
    leg, journal = Leg(), Journal()
    io, said, _ = make_io(leg, journal)
    outcome = await run_escalation(io, EscalationConfig(agent_queue_uri=QUEUE, allowed_targets=[QUEUE]),
                                   ("Con gusto.",), "caller_request")
    assert outcome.disposition == "transferred" and outcome.target == QUEUE
    kinds = [e[0] for e in journal.events]
    assert kinds == ["requested", "turn", "result"]                 # queued before the hand-off is spoken
    assert said == ["Con gusto. Le comunico con un agente. Por favor espere en la línea."]
    assert leg.transfers[0][1]["X-Veratur-Case"] == "12345678"


async def test_unknown_reason_is_queued_as_a_caller_request() -> None:
    leg, journal = Leg(), Journal()
    io, _, _ = make_io(leg, journal)
    await run_escalation(io, EscalationConfig(agent_queue_uri=QUEUE, allowed_targets=[QUEUE]), (), "x" * 500)
    assert journal.events[0] == ("requested", "caller_request", QUEUE, "refer")


async def test_forbidden_target_attempts_no_transfer() -> None:
    leg, journal = Leg(), Journal()
    io, said, _ = make_io(leg, journal, CallerTurn(dtmf="1", event="dtmf"))
    config = EscalationConfig(agent_queue_uri=QUEUE, allowed_targets=[QUEUE])
    outcome = await run_escalation(io, config, (), "caller_request", requested_target="sip:1900@evil.example")
    assert leg.transfers == [] and outcome.disposition == "transfer_failed"
    assert [e for e in journal.events if e[0] != "turn"] == [
        ("requested", "caller_request", "", "refer"), ("result", False, 403), ("callback", True, "2281234567")]


async def test_hangup_during_transfer_is_abandoned_without_offer() -> None:
    leg, journal = Leg(result=TransferResult(False, 481, "call ended during transfer")), Journal()
    io, said, _ = make_io(leg, journal)
    leg.on_transfer = io.gone.set
    outcome = await run_escalation(io, EscalationConfig(agent_queue_uri=QUEUE, allowed_targets=[QUEUE]), (),
                                   "no_input")
    assert outcome.disposition == "abandoned"
    assert ("result", False, 481) in journal.events
    assert not any("devuelva" in s for s in said)


async def test_failure_offer_declined_by_silence() -> None:
    leg, journal = Leg(result=TransferResult(False, 486, "Busy Here")), Journal()
    io, said, _ = make_io(leg, journal, answer=None, folio=None)
    outcome = await run_escalation(io, EscalationConfig(agent_queue_uri=QUEUE, allowed_targets=[QUEUE]), (),
                                   "no_match")
    assert outcome.disposition == "transfer_failed" and outcome.status_code == 486 and not outcome.callback
    assert ("callback", False, None) in journal.events
    assert "folio" not in said[1]                                   # no case: the offer doesn't mention one


async def test_bridge_holds_until_the_call_ends() -> None:
    leg, journal = Leg(), Journal()
    io, _, bridged = make_io(leg, journal)
    config = EscalationConfig(mode="bridge", agent_queue_uri=QUEUE, allowed_targets=[QUEUE])
    task = asyncio.create_task(run_escalation(io, config, (), "caller_request"))
    await asyncio.sleep(0.1)
    assert bridged == [True] and not task.done()                    # the agent talks; the flow waits
    io.gone.set()
    outcome = await asyncio.wait_for(task, 2)
    assert outcome.disposition == "transferred"
    assert leg.transfers[0][0] == QUEUE                              # bridge: the plain target, headers apart
