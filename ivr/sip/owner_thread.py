"""The hand-over between the asyncio loop and pjsua2's one owner thread.

Every pjsua call is made on the owner thread (pjsua2 objects are not thread-safe, and a call from a thread pjlib
does not know aborts the process). The loop queues commands here; the owner thread runs them between
`libHandleEvents` slices and completes the loop's futures with `call_soon_threadsafe`. Timers (ringing delay,
hang-up grace) run on the owner thread too.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import queue
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("ivr.sip.edge")

T = TypeVar("T")


class OwnerThreadCommands:
    """Commands and timers for the owner thread, submitted from the loop (or from the owner thread itself)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any] | None]] = \
            queue.SimpleQueue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()

    # -- loop side ------------------------------------------------------------------------------------
    async def submit(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the owner thread and await its result (or its exception)."""
        assert self.loop is not None
        future: asyncio.Future[T] = self.loop.create_future()
        self._commands.put((fn, future))
        return await future

    def post(self, fn: Callable[[], Any]) -> None:
        """Run `fn` on the owner thread; nobody waits (a failure is logged)."""
        self._commands.put((fn, None))

    # -- owner-thread side ----------------------------------------------------------------------------
    def resolve(self, future: asyncio.Future[Any] | None, result: Any = None,
                error: BaseException | None = None) -> None:
        """Complete a loop future from the owner thread."""
        if future is None or self.loop is None:
            return

        def done() -> None:
            if not future.done():
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)
        try:
            self.loop.call_soon_threadsafe(done)
        except RuntimeError:
            pass

    def to_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:
                pass

    def run_pending(self) -> None:
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                result = fn()
            except Exception as exc:
                if future is None:
                    log.exception("SIP command failed")
                self.resolve(future, error=exc)
            else:
                self.resolve(future, result)

    def schedule(self, delay_s: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._timer_seq), fn))

    def run_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            try:
                fn()
            except Exception:
                log.exception("SIP timer failed")

    def clear_timers(self) -> None:
        self._timers.clear()
