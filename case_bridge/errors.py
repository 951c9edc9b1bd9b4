"""Errors of the case-bridge service. Messages are Spanish and safe to show to the person who caused them."""
from __future__ import annotations


class CaseBridgeError(Exception):
    """Base of every error the service raises on purpose."""


class DatabaseUnavailable(CaseBridgeError):
    """The database can't be reached (connection refused, reset, timed out). Retry later or use the outbox."""


class CaseNotFound(CaseBridgeError):
    pass


class CallNotFound(CaseBridgeError):
    pass


class UnknownTramite(CaseBridgeError):
    pass


class ChannelNotAllowed(CaseBridgeError):
    pass


class InvalidInput(CaseBridgeError, ValueError):
    pass


class StaleCase(CaseBridgeError):
    """The case changed since the caller read it (optimistic locking)."""


class AlreadyTaken(CaseBridgeError):
    pass
