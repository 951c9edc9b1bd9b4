"""DTMF collection: terminator, max digits, inter-digit timeout, one-key menus."""
from __future__ import annotations

from ivr.call.dtmf import DtmfCollector
from ivr.dialogue.interface import Expect


def test_terminator_ends_and_is_not_included() -> None:
    c = DtmfCollector(3.0, Expect(kind="digits", max_digits=12))
    assert [c.push(d, 1.0 + i) for i, d in enumerate("123")] == [None, None, None]
    assert c.push("#", 4.0) == "123"
    assert not c.pending


def test_terminator_alone_is_ignored() -> None:
    c = DtmfCollector(3.0, Expect(kind="digits", max_digits=4))
    assert c.push("#", 1.0) is None
    assert not c.pending


def test_max_digits_completes_without_terminator() -> None:
    c = DtmfCollector(3.0, Expect(kind="digits", max_digits=4))
    results = [c.push(d, float(i)) for i, d in enumerate("4321")]
    assert results == [None, None, None, "4321"]


def test_inter_digit_timeout() -> None:
    c = DtmfCollector(3.0, Expect(kind="digits", max_digits=10))
    c.push("5", 10.0)
    c.push("6", 11.0)
    assert c.deadline() == 14.0
    assert c.expire(13.9) is None
    assert c.expire(14.0) == "56"
    assert c.deadline() is None


def test_menu_takes_one_key() -> None:
    c = DtmfCollector(3.0, Expect(kind="menu"))
    assert c.push("2", 1.0) == "2"
    assert c.push("*", 2.0) == "*"


def test_unknown_key_ignored() -> None:
    c = DtmfCollector(3.0, Expect(kind="digits", max_digits=2))
    assert c.push("x", 1.0) is None
    assert not c.pending
