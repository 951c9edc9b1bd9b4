"""The call-detail counters a session keeps (ivr.call.stats), on the scripted calls of test_session."""
from __future__ import annotations

import pytest

from ivr.call.stats import CallStats, step_name
from testkit.sounds import silence, speech

from .test_session import Call, P, free

pytestmark = pytest.mark.timeout(30)


async def test_no_match_call_counts_per_step_and_transfer_reason() -> None:
    nomatch = free("No entendí.", "¿Qué desea?", intent="nlu_fallback")
    call = Call(free("¿Qué desea?"), [nomatch], texts=["blabla", "blabla", "blabla"])
    for i in range(3):
        await call.wait_prompt_done(i)
        await call.leg.say(speech("모르겠어요") + silence(600))
    assert await call.result() == "transferred"
    summary = call.session.stats.summary(call.session.turn_latencies, worker="w0")
    assert (summary["speech_turns"], summary["dtmf_turns"], summary["no_match_count"]) == (3, 0, 3)
    assert summary["transfer_reason"] == "no_match"
    tallies = {(k, key): n for k, key, n in summary["tallies"]}
    assert tallies[("intent", "nlu_fallback")] == 3
    assert tallies[("no_match", "¿Qué desea?")] >= 1
    assert sum(n for (k, _), n in tallies.items() if k == "no_match") == 3
    assert summary["latency_p50_ms"] is not None and summary["latency_max_ms"] >= summary["latency_p50_ms"]


async def test_no_input_call_counts_attempts_on_the_same_step() -> None:
    call = Call(free("Diga su trámite."), [])
    assert await call.result() == "transferred"
    stats = call.session.stats
    assert stats.no_input == 3 and stats.step_no_input == {"Diga su trámite.": 3}
    assert stats.asked["Diga su trámite."] == 3            # first ask + two re-asks; the third no-input transfers
    assert stats.transfer_reason == "no_input" and P.still_there


def test_step_names_are_masked_and_cities_counted() -> None:
    assert step_name(["Hola.", "Su número 2281234567 es correcto?", " "]) == "Su número ******4567 es correcto?"
    s = CallStats()
    s.ask(["¿Qué ciudad?"])
    s.caller_turn(dtmf=False, expect_kind="city", text="  Xalapa ", intent="turismo")
    s.caller_turn(dtmf=True, expect_kind="menu", text=None, intent="menu_1")
    out = s.summary([0.4, 0.2, 0.9])
    assert (out["turns_count"], out["latency_p50_ms"], out["latency_max_ms"]) == (2, 400, 900)
    assert ["city", "xalapa", 1] in out["tallies"]
