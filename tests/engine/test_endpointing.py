"""Endpointing: adaptive trailing silence, partials keeping the turn open, complete digit strings."""
from __future__ import annotations

import pytest

from ivr.dialogue.interface import Expect
from ivr.speech.endpointing import MAX_UTTERANCE_S, EndpointConfig, Endpointer, digit_string_len, spoken_digits

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


WAIT = EndpointConfig(silence_ms_free=900, silence_ms_closed=450, silence_ms_digits=1200)


def test_an_incomplete_digit_string_waits_for_its_next_group() -> None:
    # a caller reads "1765 ... 4354": the pause between groups is longer than a closed answer's silence
    ep = Endpointer(WAIT, Expect(kind="digits", max_digits=8))
    assert not ep.wants_peek(last_voiced_at=1.0, now=1.4)
    assert ep.wants_peek(last_voiced_at=1.0, now=1.45)
    assert not ends(ep, last_voiced=1.0, now=1.6)       # the reading of this pause is not in yet
    ep.on_peek("1765", 1.0)                             # the recognizer read the first group: 4 of 8 digits
    ep.on_partial("1765", 1.8)
    assert not ends(ep, last_voiced=1.0, now=2.0)
    assert ends(ep, last_voiced=1.0, now=2.2)   # counted from the last voiced frame, not from the reading


def test_the_next_group_resets_the_wait_until_its_own_reading() -> None:
    ep = Endpointer(WAIT, Expect(kind="digits", max_digits=8))
    ep.on_peek("1765", 1.0)
    # the caller went on at 1.7 and paused again at 3.0: the old reading does not cut the new pause short
    assert not ends(ep, last_voiced=3.0, now=3.5)
    ep.on_peek("17654354", 3.0)
    ep.on_partial("17654354", 3.6)
    assert ends(ep, last_voiced=3.0, now=3.62)


def test_a_complete_peeked_digit_string_ends_at_once() -> None:
    ep = Endpointer(WAIT, Expect(kind="digits", max_digits=4))
    ep.on_peek("6963", 1.0)
    ep.on_partial("6963", 1.5)
    assert ends(ep, last_voiced=1.0, now=1.52)


@pytest.mark.parametrize("heard", ["no lo tengo", "asesor", "tres por favor"])
def test_words_at_a_digit_prompt_end_at_the_closed_silence(heard: str) -> None:
    # not a digit string being read in groups: nothing to wait for
    ep = Endpointer(WAIT, Expect(kind="digits", max_digits=8))
    ep.on_peek(heard, 1.0)
    assert ends(ep, last_voiced=1.0, now=1.46)


def test_an_empty_reading_at_a_digit_prompt_waits() -> None:
    # "2000" read as "dos cero cero cero" is refused by the repetition guard at the pause: the group that follows
    # must still join it (seen in the engine's grouped-folio call)
    ep = Endpointer(WAIT, Expect(kind="digits", max_digits=8))
    ep.on_peek("", 1.0)
    assert not ends(ep, last_voiced=1.0, now=2.0)
    assert ends(ep, last_voiced=1.0, now=2.2)


def test_a_slow_reading_is_capped_by_the_digit_wait() -> None:
    ep = Endpointer(WAIT, Expect(kind="digits", max_digits=8))
    assert not ends(ep, last_voiced=1.0, now=2.18)
    assert ends(ep, last_voiced=1.0, now=2.2)


@pytest.mark.parametrize("expect", [Expect(kind="yes_no"), Expect(kind="free"), Expect(kind="city"),
                                    Expect(kind="menu", phrases=("uno", "dos", "tres"), max_digits=1),
                                    Expect(kind="digits", max_digits=1)])
def test_only_digit_strings_of_a_known_length_wait(expect: Expect) -> None:
    # a menu answer ("tres", spoken or as a one-key digits prompt) never waits for a "next group"
    ep = Endpointer(WAIT, expect)
    assert ep.expected_digits is None
    assert not ep.wants_peek(last_voiced_at=1.0, now=3.0)
    closed = 0.45 if expect.kind != "free" else 0.9
    assert ends(ep, last_voiced=1.0, now=1.0 + closed)


def test_the_wait_is_off_at_or_below_the_closed_silence() -> None:
    off = EndpointConfig(silence_ms_free=900, silence_ms_closed=450, silence_ms_digits=450)
    ep = Endpointer(off, Expect(kind="digits", max_digits=8))
    assert not ep.digits_wait and not ep.wants_peek(last_voiced_at=1.0, now=3.0)
    assert ends(ep, last_voiced=1.0, now=1.45)


@pytest.mark.parametrize(("text", "n"), [("1765", 4), ("uno siete 6", 3), ("", 0), ("no lo tengo", None),
                                         ("folio 1765", None)])
def test_digit_string_len(text: str, n: int | None) -> None:
    assert digit_string_len(text) == n
