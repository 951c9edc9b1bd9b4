"""How many utterances wait for their final decode in one decoding pool, and how long the next one will wait.

A `DecodeBacklog` is shared by every stream that decodes in one pool: the worker's bounded pool (`in_worker`), or
the recognition service's (the service counts its own and reports it in its replies; the worker's client keeps
the latest report, `ServiceLoad`). A stream registers an utterance when its end of speech is decided and removes
it when its final is out (or dropped). The estimate is deliberately simple:

    wait ≈ recent final-decode seconds × utterances waiting / pool size

where "recent" is the mean of the last `WINDOW` final decodes (wall time, so the contention of a shared machine is
in it). With no decode measured yet the estimate is 0: the session's elapsed-time bound still holds then.
Thread-safe (streams register from the event loop, decodes finish on pool threads); every call is O(1).
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW = 8                 # final decodes the recent mean is taken over
SERVICE_REPORT_MAX_AGE_S = 30.0   # a service report older than this is not used (the service went quiet)


@dataclass(frozen=True, slots=True)
class BacklogSnapshot:
    waiting: int               # utterances ended whose final is not out yet (queued or decoding)
    pool_size: int
    recent_decode_s: float     # mean wall time of the last final decodes (0.0: none measured yet)

    @property
    def wait_s(self) -> float:
        """Estimated wait for a final registered now (it is counted in `waiting`)."""
        return self.recent_decode_s * self.waiting / max(1, self.pool_size)


class DecodeBacklog:
    def __init__(self, pool_size: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.pool_size = max(1, int(pool_size))
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting: dict[object, float] = {}           # key -> registered at
        self._recent: collections.deque[float] = collections.deque(maxlen=WINDOW)
        self.finals_total = 0
        self.dropped_total = 0
        self.service: ServiceLoad | None = None            # the recognition service's own report (remote streams)

    def enqueue(self, key: object) -> None:
        with self._lock:
            self._waiting[key] = self._clock()

    def done(self, key: object, decode_s: float | None) -> None:
        """The final of `key` is out; `decode_s`: what its decode took (None: not decoded here, e.g. cancelled)."""
        with self._lock:
            self._waiting.pop(key, None)
            if decode_s is not None:
                self._recent.append(max(0.0, decode_s))
                self.finals_total += 1

    def drop(self, key: object) -> None:
        """`key` will not be decoded (the session gave up waiting): it no longer counts."""
        with self._lock:
            if self._waiting.pop(key, None) is not None:
                self.dropped_total += 1

    def forget(self, keys: Callable[[object], bool]) -> None:
        """Remove every key for which `keys(key)` is true (a stream closed with finals still counted)."""
        with self._lock:
            for key in [k for k in self._waiting if keys(k)]:
                del self._waiting[key]

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def snapshot(self) -> BacklogSnapshot:
        with self._lock:
            recent = sum(self._recent) / len(self._recent) if self._recent else 0.0
            return BacklogSnapshot(len(self._waiting), self.pool_size, recent)

    def estimate_wait_s(self) -> float:
        """Estimated wait for a final registered now: the local pool's, or the service's when it reports more."""
        local = self.snapshot().wait_s
        service = self.service
        if service is None:
            return local
        return max(local, service.wait_s())


class ServiceLoad:
    """The latest backlog a recognition service reported in its replies (`{"backlog": {...}}`), shared by every
    stream of one worker's client: any stream's reply updates what all of them see."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: BacklogSnapshot | None = None
        self._at = 0.0

    def update(self, snapshot: BacklogSnapshot, at: float | None = None) -> None:
        with self._lock:
            self._snapshot, self._at = snapshot, time.monotonic() if at is None else at

    def latest(self, now: float | None = None) -> BacklogSnapshot | None:
        with self._lock:
            if self._snapshot is None:
                return None
            if (time.monotonic() if now is None else now) - self._at > SERVICE_REPORT_MAX_AGE_S:
                return None
            return self._snapshot

    def wait_s(self, now: float | None = None) -> float:
        """Estimated wait at the service for a final sent now: one more than it reported waiting."""
        snap = self.latest(now)
        if snap is None:
            return 0.0
        return snap.recent_decode_s * (snap.waiting + 1) / max(1, snap.pool_size)
