"""Endpointing: adaptive trailing silence, partials keeping the turn open, complete digit strings."""
from __future__ import annotations

import pytest

from ivr.dialogue.interface import Expect
from ivr.speech.endpointing import MAX_UTTERANCE_S, EndpointConfig, Endpointer, spoken_digits

CFG = EndpointConfig(silence_ms_free=900, silence_ms_closed=450)


def ends(ep: Endpointer, *, last_voiced: float, now: float, started: float = 0.0) -> bool:
    return ep.is_end(confirmed=True, last_voiced_at=last_voiced, speech_started_at=started, now=now)


@pytest.mark.parametrize(("kind", "threshold"), [("free", 0.9), ("yes_no", 0.45), ("menu", 0.45),
                                                 ("city", 0.45), ("digits", 0.45)])
def test_threshold_follows_expected_answer(kind: str, threshold: float) -> None:
    ep = Endpointer(CFG, Expect(kind=kind, max_digits=4))  # type: ignore[arg-type]
    assert not ends(ep, last_voiced=1.0, now=1.0 + threshold - 0.02)
    assert ends(ep, last_voiced=1.0, now=1.0 + threshold)


def test_not_confirmed_never_ends() -> None:
    ep = Endpointer(CFG)
    assert not ep.is_end(confirmed=False, last_voiced_at=0.0, speech_started_at=0.0, now=10.0)


def test_changing_partial_keeps_turn_open() -> None:
    ep = Endpointer(CFG, Expect(kind="free"))
    ep.on_partial("quiero saber", 1.5)         # the decoder produced words after the last voiced frame
    assert not ends(ep, last_voiced=1.0, now=2.0)
    assert ends(ep, last_voiced=1.0, now=2.4)
    ep.on_partial("quiero saber", 2.3)         # the same partial again does not extend
    assert ends(ep, last_voiced=1.0, now=2.4)


def test_complete_spoken_digit_string_ends_at_once() -> None:
    ep = Endpointer(CFG, Expect(kind="digits", max_digits=4))
    ep.on_partial("uno dos tres", 1.0)
    assert not ends(ep, last_voiced=1.0, now=1.02)
    ep.on_partial("uno dos tres cuatro", 1.04)
    assert ends(ep, last_voiced=1.04, now=1.06)


def test_runaway_utterance_is_cut() -> None:
    ep = Endpointer(CFG)
    assert ends(ep, last_voiced=MAX_UTTERANCE_S, now=MAX_UTTERANCE_S, started=0.0)


def test_spoken_digits() -> None:
    assert spoken_digits("mi folio es uno dos 3 cero") == "1230"
    assert spoken_digits("nada") == ""
