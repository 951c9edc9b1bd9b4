"""DTMF collection: digits pressed by the caller become one answer.

Ends on the terminator (`#` by default, not included), on `max_digits`, or after the inter-digit timeout with
at least one digit. Pure: the caller passes the time and asks for the deadline.
"""
from __future__ import annotations

from foundation.vocabulary import DTMF_DIGITS
from ivr.dialogue.interface import Expect

VALID_DIGITS = frozenset(DTMF_DIGITS)


class DtmfCollector:
    def __init__(self, inter_digit_timeout_s: float, expect: Expect | None = None) -> None:
        self.inter_digit_timeout_s = inter_digit_timeout_s
        self.expect = expect or Expect()
        self.digits = ""
        self.last_digit_at: float | None = None

    def set_expect(self, expect: Expect) -> None:
        self.expect = expect

    @property
    def max_digits(self) -> int:
        # A menu or yes/no is answered with one key whatever the reply says; other answers use max_digits.
        return max(1, self.expect.max_digits) if self.expect.kind == "digits" else 1

    def push(self, digit: str, now: float) -> str | None:
        """Add one key press; return the complete answer when this key completes it. Unknown keys are ignored."""
        if digit not in VALID_DIGITS:
            return None
        self.last_digit_at = now
        if digit == self.expect.terminator and self.expect.kind == "digits":
            return self._take() if self.digits else None
        self.digits += digit
        if len(self.digits) >= self.max_digits:
            return self._take()
        return None

    def deadline(self) -> float | None:
        """When the inter-digit timeout ends a partial answer, or None when nothing is pending."""
        if not self.digits or self.last_digit_at is None:
            return None
        return self.last_digit_at + self.inter_digit_timeout_s

    def expire(self, now: float) -> str | None:
        """The partial answer if its inter-digit timeout has passed."""
        deadline = self.deadline()
        if deadline is not None and now >= deadline:
            return self._take()
        return None

    @property
    def pending(self) -> bool:
        return bool(self.digits)

    def _take(self) -> str:
        digits, self.digits = self.digits, ""
        return digits

    def reset(self) -> None:
        self.digits = ""
        self.last_digit_at = None
