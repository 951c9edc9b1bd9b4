"""Who may place a call on this worker, decided before it is answered: a SIP code and reason, or 0 to accept."""
from __future__ import annotations

import ipaddress

from ivr.sip.endpoint import EdgeConfig

RETRY_AFTER_S = 5
"""Sent with 503 so a caller's proxy retries later instead of at once."""


def admit(config: EdgeConfig, source_host: str, *, draining: bool, active_calls: int) -> tuple[int, str]:
    """0 to accept, or the SIP code and reason to refuse with."""
    if not config.accept_calls:
        return 403, "not accepting calls"
    try:
        address = ipaddress.ip_address(source_host)
    except ValueError:
        return 403, "unknown source"
    if not any(address in net for net in config.allowed_peers):
        return 403, "source not allowed"
    if draining:
        return 503, "shutting down"
    if active_calls >= config.max_calls:
        # 503 + Retry-After (RFC 3261 21.5.4), not 486: the caller is not busy, this worker is.
        return 503, "worker full"
    return 0, ""
