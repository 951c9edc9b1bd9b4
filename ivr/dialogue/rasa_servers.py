"""`RasaServers`: the Rasa servers a node's calls may use, and which of them refused a connection lately.

With one server (the default) this is just its URL. With several (dialogue.rasa_failover_urls: dialogue nodes that
share the Redis tracker and lock store), each call starts on a server chosen by its Call-ID, so the calls of a node
spread over the servers and a conversation stays on one server while it answers. A server that refused a
connection is tried last for `retry_after_s`, so the calls after it do not each pay the failed connect first.
"""
from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable

RETRY_AFTER_S = 10.0
"""How long a server that refused a connection is put last (a restarted Rasa needs 30-40 s to load anyway)."""


class RasaServers:
    def __init__(self, urls: Iterable[str], *, retry_after_s: float = RETRY_AFTER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.urls = list(dict.fromkeys(url.rstrip("/") for url in urls))
        if not self.urls:
            raise ValueError("at least one Rasa server URL is needed")
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._down_until: dict[str, float] = {}

    def order(self, call_id: str, current: str | None = None) -> list[str]:
        """The servers to try for a turn of `call_id`: the one the call is on (else its Call-ID's), then the
        others in ring order; servers marked down go last, in the same order."""
        n = len(self.urls)
        if current in self.urls:
            start = self.urls.index(current)
        else:
            start = zlib.crc32(call_id.encode("utf-8", "replace")) % n
        ring = [self.urls[(start + i) % n] for i in range(n)]
        now = self._clock()
        return sorted(ring, key=lambda url: self._down_until.get(url, 0.0) > now)

    def mark_down(self, url: str) -> None:
        self._down_until[url] = self._clock() + self.retry_after_s

    def mark_up(self, url: str) -> None:
        self._down_until.pop(url, None)

    def is_down(self, url: str) -> bool:
        return self._down_until.get(url, 0.0) > self._clock()
