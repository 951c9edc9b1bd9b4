"""Former name of the node tests' raw SIP sender, kept for tests written against it: everything lives in
`testkit.rawsip` now (`RawSip(src_host=...)`, `send`, `collect`, `invite`, `options`)."""
from __future__ import annotations

from testkit.rawsip import STATUS, Answers, invite, options
from testkit.rawsip import RawSip as _RawSip

__all__ = ["STATUS", "Answers", "RawSip", "invite", "options"]


class RawSip(_RawSip):
    """`RawSip(src_host)` of the old API, where `.host`/`.port` were this socket's own address."""

    def __init__(self, src_host: str = "127.0.0.1") -> None:
        super().__init__(src_host, 0, src_host=src_host)
        self.host, self.port = self.local_host, self.local_port
