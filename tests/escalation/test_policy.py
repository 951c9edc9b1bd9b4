"""Escalation policy without SIP: allowed targets, the case headers (RFC 7433 UUI), Refer-To embedding."""
from __future__ import annotations

import binascii
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundation.config import EscalationConfig
from ivr.call.escalation import (
    UUI_MAX_OCTETS,
    BadUui,
    ForbiddenTarget,
    case_headers,
    check_target,
    decode_uui,
    encode_uui,
    is_yes,
    normalize_sip_uri,
    plan_transfer,
    refer_to_uri,
)
from ivr.dialogue.interface import CallerTurn

QUEUE = "sip:agentes@127.0.0.1:5090"


def test_case_headers_carry_folio_and_hex_uui_with_purpose() -> None:
    headers = case_headers("12345678", "abc-123@host", "no_match")
    assert headers["X-Veratur-Case"] == "12345678"
    data, encoding, purpose = headers["User-to-User"].split(";")
    assert encoding == "encoding=hex" and purpose == "purpose=veratur-case"
    assert all(c in "0123456789abcdef" for c in data)
    assert binascii.unhexlify(data).decode() == "case=12345678;call=abc-123@host;why=no_match"
    assert decode_uui(headers["User-to-User"]) == {"case": "12345678", "call": "abc-123@host", "why": "no_match"}


def test_no_folio_means_no_case_header_but_still_a_uui() -> None:
    headers = case_headers(None, "c1", "caller_request")
    assert "X-Veratur-Case" not in headers
    assert decode_uui(headers["User-to-User"]) == {"call": "c1", "why": "caller_request"}


def test_header_injection_through_folio_or_call_id_is_impossible() -> None:
    headers = case_headers("1234\r\nX-Evil: 1", "id\r\nVia: x", "because\r\nX: y")
    assert "X-Veratur-Case" not in headers                      # not a folio: dropped, not passed on
    fields = decode_uui(headers["User-to-User"])
    assert "\r" not in fields["call"] and "\n" not in fields["call"] and fields["why"] == "caller_request"
    assert "\r" not in headers["User-to-User"] and "\n" not in headers["User-to-User"]


def test_uui_respects_the_128_octet_limit() -> None:
    long_id = "x" * 300
    fields = decode_uui(case_headers("12345678", long_id, "no_input")["User-to-User"])
    assert len(fields["call"]) == 64
    with pytest.raises(BadUui):
        encode_uui({"data": "y" * UUI_MAX_OCTETS})


@pytest.mark.parametrize("value", ["zz;encoding=hex;purpose=veratur-case", "6162;encoding=base64;purpose=veratur-case",
                                   "616;encoding=hex;purpose=veratur-case", "6162;encoding=hex;purpose=other",
                                   ";encoding=hex;purpose=veratur-case", "ff;encoding=hex;purpose=veratur-case"])
def test_decode_uui_refuses_what_is_not_ours(value: str) -> None:
    with pytest.raises(BadUui):
        decode_uui(value)


def test_refer_to_embeds_the_headers_escaped() -> None:
    headers = case_headers("12345678", "c1", "caller_request")
    refer_to = refer_to_uri(QUEUE, headers)
    assert refer_to.startswith(f"<{QUEUE}?X-Veratur-Case=12345678&User-to-User=") and refer_to.endswith(">")
    query = refer_to[1:-1].split("?", 1)[1]
    assert ";" not in query and " " not in query                # ';' would end the URI's headers part
    pairs = dict(p.split("=", 1) for p in query.split("&"))
    assert unquote(pairs["User-to-User"]) == headers["User-to-User"]


def test_only_allowed_targets_pass() -> None:
    allowed = [QUEUE, "sip:supervisores@127.0.0.1:5091"]
    assert check_target("SIP:agentes@127.0.0.1:5090", allowed) == QUEUE
    assert check_target("sip:agentes@127.0.0.1:5090", allowed) == QUEUE
    for bad in ["sip:agentes@127.0.0.1:5099", "sip:otro@127.0.0.1:5090", "sip:agentes@evil.example:5090",
                "tel:+5212281234567", "sip:agentes@127.0.0.1:5090?X-Evil=1", "<sip:agentes@127.0.0.1:5090>",
                "sip:agentes@127.0.0.1:5090\r\nVia: x", "sip:agentes@127.0.0.1:5090;transport=tcp", "", "http://x"]:
        with pytest.raises(ForbiddenTarget):
            check_target(bad, allowed)


def test_plan_uses_the_queue_and_refuses_anything_else() -> None:
    config = EscalationConfig(mode="refer", agent_queue_uri=QUEUE, allowed_targets=[QUEUE])
    plan = plan_transfer(config, "12345678", "c1", "caller_request")
    assert plan.target == QUEUE and plan.mode == "refer" and plan.headers["X-Veratur-Case"] == "12345678"
    with pytest.raises(ForbiddenTarget):
        plan_transfer(config, "12345678", "c1", "caller_request", requested_target="sip:9999@127.0.0.1:5060")


@given(st.text(max_size=80))
def test_no_text_becomes_an_allowed_target_unless_it_is_one(text: str) -> None:
    try:
        result = check_target(text, [QUEUE])
    except ForbiddenTarget:
        return
    assert result == QUEUE


@given(st.text(max_size=40), st.text(max_size=120), st.sampled_from(["no_match", "bogus"]))
def test_case_headers_always_decode(folio: str, call_id: str, reason: str) -> None:
    headers = case_headers(folio, call_id, reason)
    fields = decode_uui(headers["User-to-User"])
    assert fields["why"] in ("no_match", "caller_request")
    assert all(ch not in v for v in headers.values() for ch in "\r\n")
    assert normalize_sip_uri(QUEUE) == QUEUE


@pytest.mark.parametrize(("turn", "yes"), [
    (CallerTurn(dtmf="1", event="dtmf"), True), (CallerTurn(dtmf="2", event="dtmf"), False),
    (CallerTurn(text="sí por favor"), True), (CallerTurn(text="Si"), True), (CallerTurn(text="no gracias"), False),
    (CallerTurn(text="no sé"), False), (None, False)])
def test_callback_answer(turn: CallerTurn | None, yes: bool) -> None:
    assert is_yes(turn) is yes


def test_rasa_payload_names_the_transfer_reason() -> None:
    from ivr.dialogue.rasa import parse_messages
    locked = parse_messages([{"text": "Le comunico con un asesor.",
                              "custom": {"transfer": True, "transfer_reason": "verification_locked"}}])
    assert locked.transfer and locked.transfer_reason == "verification_locked"
    headers = case_headers("12345678", "c1", locked.transfer_reason or "")
    assert decode_uui(headers["User-to-User"])["why"] == "verification_locked"
