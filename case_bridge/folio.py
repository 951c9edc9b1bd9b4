"""Folios: short, speakable case numbers that catch a misheard digit before any lookup.

A folio is 7 random digits plus a Damm check digit (8 digits, shown `1234-5678`). The Damm algorithm detects every
single-digit error and every swap of two adjacent digits, so "uno dos tres..." misheard by the recognizer or keyed
wrong is refused as malformed instead of reaching the database (and the lockout counter). Random rather than
sequential, so a folio reveals nothing about others and can't be enumerated.
"""
from __future__ import annotations

import re
import secrets

FOLIO_PAYLOAD_DIGITS = 7
FOLIO_DIGITS = FOLIO_PAYLOAD_DIGITS + 1

# The Damm quasigroup of order 10 (weakly totally anti-symmetric): Damm (2004).
_DAMM = (
    (0, 3, 1, 7, 5, 9, 8, 6, 4, 2),
    (7, 0, 9, 2, 1, 5, 4, 8, 6, 3),
    (4, 2, 0, 6, 8, 7, 1, 3, 5, 9),
    (1, 7, 5, 0, 9, 8, 3, 4, 2, 6),
    (6, 1, 2, 3, 0, 4, 5, 9, 7, 8),
    (3, 6, 7, 4, 2, 0, 9, 5, 8, 1),
    (5, 8, 6, 9, 7, 2, 0, 1, 3, 4),
    (8, 9, 4, 5, 3, 6, 2, 0, 1, 7),
    (9, 4, 3, 8, 6, 1, 7, 2, 0, 5),
    (2, 5, 8, 1, 4, 3, 6, 7, 9, 0),
)

_SEPARATORS = re.compile(r"[\s\-\.]")


class MalformedFolio(ValueError):
    """The text is not a folio: wrong length, not digits, or a failed check digit."""


def damm_digit(digits: str) -> str:
    """The check digit that makes `digits + check` validate."""
    interim = 0
    for ch in digits:
        interim = _DAMM[interim][int(ch)]
    return str(interim)


def is_valid(digits: str) -> bool:
    return digits.isascii() and digits.isdigit() and damm_digit(digits) == "0"


def new_folio() -> str:
    payload = "".join(secrets.choice("0123456789") for _ in range(FOLIO_PAYLOAD_DIGITS))
    if payload[0] == "0":  # a leading zero is easily dropped when read aloud or keyed
        payload = str(secrets.randbelow(9) + 1) + payload[1:]
    return payload + damm_digit(payload)


def normalize(text: str) -> str:
    """The canonical 8 digits of a folio typed or spoken with spaces/dashes; raise MalformedFolio if invalid."""
    if not isinstance(text, str):
        raise MalformedFolio("el folio debe ser texto")
    digits = _SEPARATORS.sub("", text.strip())
    if len(digits) != FOLIO_DIGITS or not (digits.isascii() and digits.isdigit()):
        raise MalformedFolio(f"el folio tiene {FOLIO_DIGITS} dígitos")
    if not is_valid(digits):
        raise MalformedFolio("el folio no es válido (dígito verificador)")
    return digits


def display(folio: str) -> str:
    """`12345678` -> `1234-5678` for pages and receipts."""
    return f"{folio[:4]}-{folio[4:]}"


def speakable(folio: str) -> str:
    """Digits grouped for TTS: '1 2 3 4, 5 6 7 8'."""
    return " ".join(folio[:4]) + ", " + " ".join(folio[4:])
