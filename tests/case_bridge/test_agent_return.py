"""An agent's "Llamar de vuelta" jobs (case_bridge/callbacks.py: request/retry/cancel_agent_return) on SQLite and
PostgreSQL: one job per case however many clicks (also two at once, in threads), no number = refused and nothing
stored, one attempt per click (busy leaves it failed for the agent, no schedule), retry paced per number, cancel,
another agent's job refused, opt-out honoured at the click and at the retry."""
from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from case_bridge.callbacks import AGENT_RETURN
from case_bridge.errors import InvalidInput
from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from foundation.config import CallbackConfig

PREFIXES = ["228"]
SCHEDULE = CallbackConfig(attempts=3, spacing_s=[600], quiet_start="00:00", quiet_end="00:00",
                          timezone="America/Mexico_City", lease_s=60)
T0 = datetime(2026, 12, 2, 16, 0, tzinfo=UTC)
NUMBER = "2281234567"


@pytest.fixture
def ana(svc: CaseService) -> str:
    """An active agent account (the agent who asks must be one); unique per test (the database is shared)."""
    name = f"ana{uuid.uuid4().hex[:8]}"
    svc.create_staff(name, "clave-de-prueba-larga", "agent", "Ana")
    return name


def new_case(svc: CaseService, phone: str | None = NUMBER) -> str:
    citizen = CitizenInfo("Rosa Hernández", phone=phone) if phone else None
    return svc.open_case("licencia_conducir", "phone", citizen=citizen).case.folio


def test_a_click_queues_one_job_due_now_for_that_agent(svc: CaseService, ana: str) -> None:
    folio = new_case(svc)
    job, created = svc.request_agent_return(folio, None, agent=ana, allowed_prefixes=PREFIXES, now=T0)
    assert created and (job.state, job.reason, job.requested_by, job.number) == ("pending", AGENT_RETURN, ana, NUMBER)
    again, created_again = svc.request_agent_return(folio, None, agent=ana, allowed_prefixes=PREFIXES, now=T0)
    assert (again.id, created_again) == (job.id, False)                      # a double click: the same job
    assert [j.id for j in svc.callbacks_for(folio)] == [job.id]
    [leased] = [j for j in svc.lease_due("n1", now=T0, lease_s=60, limit=50) if j.id == job.id]
    assert leased.requested_by == ana
    # while it is being dialled a click still returns it (no second call, no error)
    assert svc.request_agent_return(folio, None, agent=ana, allowed_prefixes=PREFIXES, now=T0)[0].id == job.id


def test_the_number_the_caller_left_wins_over_the_case(svc: CaseService, ana: str) -> None:
    job, _ = svc.request_agent_return(new_case(svc), "228 765 4321", agent=ana, allowed_prefixes=PREFIXES,
                                      now=T0)
    assert job.number == "2287654321"


def test_two_clicks_at_once_make_one_job(svc: CaseService, ana: str) -> None:
    folio = new_case(svc)
    results: list[tuple[int, bool]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def click() -> None:
        start.wait()
        try:
            view, created = svc.request_agent_return(folio, None, agent=ana, allowed_prefixes=PREFIXES, now=T0)
            results.append((view.id, created))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=click) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors, errors
    assert len({job_id for job_id, _ in results}) == 1 and sorted(c for _, c in results) == [False, True]
    assert len(svc.callbacks_for(folio)) == 1


def test_a_case_without_a_phone_number_is_refused_and_nothing_stored(svc: CaseService, ana: str) -> None:
    folio = new_case(svc, phone=None)
    with pytest.raises(InvalidInput, match="no tiene número"):
        svc.request_agent_return(folio, None, agent=ana, allowed_prefixes=PREFIXES, now=T0)
    assert svc.callbacks_for(folio) == []


def test_numbers_outside_the_plan_or_opted_out_are_recorded_not_dialled(svc: CaseService, ana: str) -> None:
    foreign, _ = svc.request_agent_return(new_case(svc), "+1 202 555 0143", agent=ana,
                                          allowed_prefixes=PREFIXES, now=T0)
    assert (foreign.state, foreign.detail) == ("invalid", "number refused: not_allowed")
    svc.opt_out("2289990001", channel="phone", now=T0)
    stopped, _ = svc.request_agent_return(new_case(svc), "2289990001", agent=ana, allowed_prefixes=PREFIXES,
                                          now=T0)
    assert stopped.state == "opted_out"
    leased = svc.lease_due("n-bad", now=T0 + timedelta(hours=1), lease_s=60, limit=100)
    assert not {foreign.id, stopped.id} & {j.id for j in leased}


def test_busy_leaves_it_to_the_agent_who_retries_paced_or_cancels(svc: CaseService, ana: str) -> None:
    folio = new_case(svc)
    beto = f"beto{uuid.uuid4().hex[:8]}"                # another agent: may not retry or cancel ana's call
    svc.create_staff(beto, "clave-de-prueba-larga", "agent", "Beto")
    job, _ = svc.request_agent_return(folio, None, agent=ana, allowed_prefixes=PREFIXES, now=T0)
    assert job.id in [j.id for j in svc.lease_due("n1", now=T0, lease_s=60, limit=50)]
    busy = svc.record_attempt(job.id, "n1", "busy", now=T0, schedule=SCHEDULE, detail="SIP 486")
    assert (busy.state, busy.attempts, busy.last_outcome) == ("failed", 1, "busy")     # no automatic retry
    assert job.id not in [j.id for j in svc.lease_due("n1", now=T0 + timedelta(hours=2), lease_s=60, limit=50)]
    with pytest.raises(InvalidInput, match="otro agente"):
        svc.retry_agent_return(job.id, beto, now=T0)
    retried = svc.retry_agent_return(job.id, ana, now=T0 + timedelta(seconds=10), pacing_s=120)
    assert retried.state == "pending" and retried.next_attempt_at == T0 + timedelta(seconds=120)   # paced
    assert job.id not in [j.id for j in svc.lease_due("n1", now=T0 + timedelta(seconds=60), lease_s=60, limit=50)]
    with pytest.raises(InvalidInput, match="otro agente"):
        svc.cancel_agent_return(job.id, beto, now=T0)
    cancelled = svc.cancel_agent_return(job.id, ana, now=T0 + timedelta(seconds=20))
    assert cancelled.state == "cancelled"
    with pytest.raises(InvalidInput, match="ya no se puede"):
        svc.retry_agent_return(job.id, ana, now=T0)
    # a new click after a cancelled one is a new job
    fresh, created = svc.request_agent_return(folio, None, agent=ana, allowed_prefixes=PREFIXES, now=T0)
    assert created and fresh.id != job.id


def test_opt_out_between_attempts_stops_the_retry(svc: CaseService, ana: str) -> None:
    job, _ = svc.request_agent_return(new_case(svc), "2289990002", agent=ana, allowed_prefixes=PREFIXES, now=T0)
    svc.lease_due("n1", now=T0, lease_s=60, limit=50)
    svc.record_attempt(job.id, "n1", "no_answer", now=T0, schedule=SCHEDULE)
    svc.opt_out("2289990002", channel="web", now=T0)
    assert svc.retry_agent_return(job.id, ana, now=T0 + timedelta(minutes=5)).state == "opted_out"


def test_a_standby_acceptance_becomes_the_agents_call_and_an_active_call_refuses(svc: CaseService, ana: str) -> None:
    folio = new_case(svc)
    standby = svc.accept_callback(folio, NUMBER, allowed_prefixes=PREFIXES, now=T0)
    job, created = svc.request_agent_return(folio, None, agent=ana, allowed_prefixes=PREFIXES, now=T0)
    assert created and job.id == standby.id and (job.reason, job.state) == (AGENT_RETURN, "pending")
    other = new_case(svc)
    status_job = svc.request_callback(other, NUMBER, allowed_prefixes=PREFIXES, now=T0)
    assert status_job.id in [j.id for j in svc.lease_due("n2", now=T0, lease_s=60, limit=50)]
    with pytest.raises(InvalidInput, match="llamada en curso"):
        svc.request_agent_return(other, None, agent=ana, allowed_prefixes=PREFIXES, now=T0)
    with pytest.raises(InvalidInput, match="desconocida"):
        svc.cancel_agent_return(status_job.id, ana, now=T0)                # not an agent's call back


def test_an_unknown_or_inactive_agent_cannot_ask(svc: CaseService, ana: str) -> None:
    folio = new_case(svc)
    with pytest.raises(InvalidInput, match="agente desconocido"):
        svc.request_agent_return(folio, None, agent="nadie", allowed_prefixes=PREFIXES, now=T0)
    clerk = f"ofi{uuid.uuid4().hex[:8]}"
    svc.create_staff(clerk, "clave-de-prueba-larga", "clerk", "Ventanilla")
    with pytest.raises(InvalidInput, match="agente desconocido"):
        svc.request_agent_return(folio, None, agent=clerk, allowed_prefixes=PREFIXES, now=T0)
    job, _ = svc.request_agent_return(folio, None, agent=ana, allowed_prefixes=PREFIXES, now=T0)
    svc.lease_due("n1", now=T0, lease_s=60, limit=50)
    svc.record_attempt(job.id, "n1", "no_answer", now=T0, schedule=SCHEDULE)
    svc.set_active(ana, False)
    with pytest.raises(InvalidInput, match="agente desconocido"):
        svc.retry_agent_return(job.id, ana, now=T0)
    assert svc.active_staff(ana) is None
    assert [j.state for j in svc.callbacks_for(folio)] == ["failed"]


@pytest.mark.parametrize("uri", ['"Ana" <sip:2001@pbx>', "sip:2001@pbx?X-Evil=1", "sip:2001@pbx\r\nX-Evil: 1",
                                 "tel:+522281234567", "sip:2001@pbx; lr"])
def test_agent_uris_must_be_plain_sip_uris(uri: str) -> None:
    from foundation.config import EscalationConfig
    with pytest.raises(ValueError, match="not a plain SIP URI"):
        EscalationConfig(agent_uris={"ana": uri})
    assert EscalationConfig(agent_uris={"ana": "sip:2001@pbx.example.net:5060;transport=tcp"}).agent_uris


def test_agent_uris_keys_are_usernames() -> None:
    from foundation.config import EscalationConfig
    with pytest.raises(ValueError, match="not a staff username"):
        EscalationConfig(agent_uris={"ana maría": "sip:2001@pbx"})
