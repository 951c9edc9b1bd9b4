"""Folios: a misheard or mistyped digit is caught by the check digit before any lookup."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from case_bridge import folio as folios

payloads = st.text(alphabet="0123456789", min_size=7, max_size=7)


@given(payloads, st.integers(0, 7), st.integers(1, 9))
def test_every_single_digit_error_is_caught(payload: str, pos: int, delta: int) -> None:
    good = payload + folios.damm_digit(payload)
    bad = good[:pos] + str((int(good[pos]) + delta) % 10) + good[pos + 1:]
    assert folios.is_valid(good) and not folios.is_valid(bad)


@given(payloads, st.integers(0, 6))
def test_every_adjacent_swap_is_caught(payload: str, pos: int) -> None:
    good = payload + folios.damm_digit(payload)
    swapped = good[:pos] + good[pos + 1] + good[pos] + good[pos + 2:]
    assert swapped == good or not folios.is_valid(swapped)


def test_new_folios_are_valid_and_speakable() -> None:
    for _ in range(200):
        f = folios.new_folio()
        assert len(f) == 8 and f[0] != "0" and folios.normalize(f) == f
    assert folios.display("12345678") == "1234-5678"
    assert folios.speakable("12345678") == "1 2 3 4, 5 6 7 8"


@pytest.mark.parametrize("text", ["", "1234567", "123456789", "12a45678", "١٢٣٤٥٦٧٨", None, 12345678])
def test_malformed_inputs(text: object) -> None:
    with pytest.raises(folios.MalformedFolio):
        folios.normalize(text)  # type: ignore[arg-type]


def test_non_ascii_digits_are_refused() -> None:
    arabic = "".join(chr(0x0660 + int(d)) for d in folios.new_folio())   # the same digits, Arabic-Indic
    with pytest.raises(folios.MalformedFolio):
        folios.normalize(arabic)


def test_separators_are_accepted() -> None:
    f = folios.new_folio()
    assert folios.normalize(f" {f[:4]}-{f[4:]} ") == f and folios.normalize(f"{f[:4]} {f[4:]}") == f
