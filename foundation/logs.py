"""Structured one-line logs (`key=value`), with helpers that keep personal data out of them."""
from __future__ import annotations

import logging
import re
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), format=_FORMAT, stream=sys.stderr, force=True)
    # One line per health probe (every few seconds) would drown the node's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def kv(**fields: object) -> str:
    """`call_id=... case=...` with values quoted when they hold spaces."""
    parts = []
    for key, value in fields.items():
        text = str(value)
        parts.append(f"{key}={text!r}" if (" " in text or not text) else f"{key}={text}")
    return " ".join(parts)


_CURP = re.compile(r"\b[A-Z]{4}\d{6}[HMX][A-Z]{5}[A-Z0-9]\d\b")


def mask_phone(number: str | None) -> str:
    """Keep the last 4 digits of a phone number: '2281234567' -> '******4567'."""
    if not number:
        return "-"
    digits = re.sub(r"\D", "", number)
    return "*" * max(len(digits) - 4, 0) + digits[-4:] if digits else "***"


def mask_curp(curp: str | None) -> str:
    """Keep the first 4 and last 2 characters of a CURP."""
    if not curp:
        return "-"
    return curp[:4] + "*" * max(len(curp) - 6, 0) + curp[-2:]


def scrub(text: str) -> str:
    """Mask any CURP and any run of 7+ digits (a phone number) inside free text before logging it."""
    text = _CURP.sub(lambda m: mask_curp(m.group(0)), text)
    return re.sub(r"\d{7,}", lambda m: mask_phone(m.group(0)), text)
