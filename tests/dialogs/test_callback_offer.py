"""The dialogue's offer at the end of a phone-started trámite, "¿Quiere que le llamemos cuando cambie el estado?",
at the action level on a real case service (migrated SQLite): after the read-back the offer is made only when the
node places callbacks and the caller's number is inside the dial plan; yes (spoken or key 1) stores a standby
callback to the number on record that the next status change makes due; no (or 2) stores nothing. The NLU is
not involved: bare yes/no and keys already reach action_yes_no / action_dtmf_menu, which read the question."""
from __future__ import annotations

import uuid
from typing import Any

from rasa_sdk.executor import CollectingDispatcher

from case_bridge.service import CaseService
from dialogs.actions.callback_offer import ACCEPTED_TEXT, OFFER_TEXT, QUESTION, REFUSED_NUMBER_TEXT
from dialogs.actions.control import ActionDtmfMenu, ActionYesNo
from dialogs.actions.resources import Resources
from dialogs.actions.start_case import ActionOpenCase
from tests.dialogs.conftest import caller_number, entity, tracker

# no CURP: a citizen (CURP) has one open case per trámite, and each test needs a case of its own
SLOTS = {"start_tramite": "acta-nacimiento-copia", "confirm_start": True,
         "start_answers": {"nombre_completo": "Ana Pérez López",
                           "fecha_nacimiento": "1 de enero de 1990", "municipio_registro": "Xalapa"}}


def calling(resources: Resources, prefixes: tuple[str, ...] = ("228",)) -> Resources:
    return Resources(resources.cities, resources.tramites, resources.cases, prefixes)


async def opened(res: Resources, number: str) -> tuple[str, list[dict[str, Any]]]:
    """A case opened on the phone by `number`; (folio, the read-back message as the tracker keeps it)."""
    d = CollectingDispatcher()
    # a call id of its own: the opening is idempotent per call (an unknown call id opens without the link)
    events = await ActionOpenCase(res).run(d, tracker("sí", "affirm", slots=SLOTS, metadata={
        "caller_number": number, "call_id": f"{uuid.uuid4().hex}@test"}), {})
    folio = next(e["value"] for e in events if e.get("name") == "case_folio")
    readback = [{"text": d.messages[-1]["text"], "custom": d.messages[-1]["custom"]}]
    return folio, readback


def last(d: CollectingDispatcher) -> dict[str, Any]:
    return d.messages[-1]


async def test_yes_stores_a_standby_callback_made_due_by_a_status_change(resources: Resources,
                                                                         case_service: CaseService) -> None:
    res, number = calling(resources), caller_number()
    folio, readback = await opened(res, number)
    meta = {"caller_number": number}
    d = CollectingDispatcher()
    await ActionYesNo(res).run(d, tracker("no", "deny", previous_bot=readback, slots={"case_folio": folio},
                                          metadata=meta), {})
    assert last(d)["text"] == OFFER_TEXT and last(d)["custom"]["question"] == QUESTION
    assert last(d)["custom"]["expect"]["kind"] == "yes_no"
    offer = [{"text": OFFER_TEXT, "custom": last(d)["custom"]}]
    d2 = CollectingDispatcher()
    await ActionYesNo(res).run(d2, tracker("sí", "affirm", previous_bot=offer, slots={"case_folio": folio},
                                           metadata=meta), {})
    assert last(d2)["text"] == ACCEPTED_TEXT and last(d2)["custom"]["question"] == "anything_else"
    [job] = case_service.callbacks_for(folio)
    assert (job.state, job.number, job.reason) == ("standby", number, "status_changed")
    case_service.update_status(folio, "in_review", "documentos recibidos", channel="office", actor="clerk")
    assert case_service.callbacks_for(folio)[0].state == "pending"


async def test_keys_two_declines_and_one_accepts(resources: Resources, case_service: CaseService) -> None:
    res = calling(resources)
    for key, expected in (("2", []), ("1", ["standby"])):
        number = caller_number()
        folio, _ = await opened(res, number)
        offer = [{"text": OFFER_TEXT, "custom": {"question": QUESTION}}]
        d = CollectingDispatcher()
        await ActionDtmfMenu(res).run(d, tracker(f'/dtmf{{"digits":"{key}"}}', "dtmf",
                                                 entities=[entity("digits", key)], previous_bot=offer,
                                                 slots={"case_folio": folio}, metadata={"caller_number": number}), {})
        assert [j.state for j in case_service.callbacks_for(folio)] == expected
        assert (last(d).get("response") == "utter_anything_else") == (key == "2")


async def test_no_offer_when_the_node_does_not_call_or_the_number_is_outside_the_plan(
        resources: Resources, case_service: CaseService) -> None:
    for res, number in ((calling(resources, ()), caller_number()),          # outbound off: no prefixes
                        (calling(resources), "5512345678"),                  # outside the plan
                        (calling(resources), "")):                           # withheld number
        folio, readback = await opened(res, number or caller_number())
        d = CollectingDispatcher()
        await ActionYesNo(res).run(d, tracker("no", "deny", previous_bot=readback, slots={"case_folio": folio},
                                              metadata={"caller_number": number}), {})
        assert last(d).get("response") == "utter_anything_else"
        assert case_service.callbacks_for(folio) == []


async def test_an_opted_out_number_is_told_and_not_queued(resources: Resources, case_service: CaseService) -> None:
    res, number = calling(resources), caller_number()
    case_service.opt_out(number, channel="phone")
    folio, _ = await opened(res, number)
    d = CollectingDispatcher()
    await ActionYesNo(res).run(d, tracker("sí", "affirm", previous_bot=[{"text": OFFER_TEXT,
                                                                          "custom": {"question": QUESTION}}],
                                          slots={"case_folio": folio}, metadata={"caller_number": number}), {})
    assert last(d)["text"] == REFUSED_NUMBER_TEXT
    assert [j.state for j in case_service.callbacks_for(folio)] == ["opted_out"]
