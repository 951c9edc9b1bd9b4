"""Which numbers the node may dial: normalization and the `outbound.allowed_prefixes` dial plan.

A number on a case is what a citizen or clerk typed ("228 123 4567", "+52 228-123-4567"). It is dialled only if,
reduced to digits, it is a plausible length and starts with an allowed prefix; otherwise the reason is returned
(recorded on the callback job, never dialled). Logs show `mask()` only, never the number."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MIN_DIGITS = 7             # shorter is an extension or a typo, not a citizen's phone
MAX_DIGITS = 15            # E.164
_SEPARATORS = re.compile(r"[\s().-]")


@dataclass(frozen=True)
class DialDecision:
    number: str | None     # digits to dial, None when refused
    reason: str            # "ok" | "empty" | "not_a_number" | "too_short" | "too_long" | "not_allowed"

    @property
    def ok(self) -> bool:
        return self.number is not None


def normalize(raw: str | None) -> DialDecision:
    text = _SEPARATORS.sub("", (raw or "").strip())
    if not text:
        return DialDecision(None, "empty")
    if text.startswith("+"):
        text = text[1:]
    if not text.isdigit() or not text.isascii():
        return DialDecision(None, "not_a_number")
    if len(text) < MIN_DIGITS:
        return DialDecision(None, "too_short")
    if len(text) > MAX_DIGITS:
        return DialDecision(None, "too_long")
    return DialDecision(text, "ok")


def check(raw: str | None, allowed_prefixes: Sequence[str]) -> DialDecision:
    """The digits to dial, or why not (an empty dial plan allows nothing)."""
    decision = normalize(raw)
    if decision.number is None:
        return decision
    if not any(decision.number.startswith(p) for p in allowed_prefixes):
        return DialDecision(None, "not_allowed")
    return decision


def mask(number: str | None) -> str:
    """The last 2 digits only, for logs."""
    digits = re.sub(r"\D", "", number or "")
    return f"***{digits[-2:]}" if digits else "-"
