"""`DbThreads`: the few threads the recorder runs its blocking case-bridge calls on, each call's wait bounded.

Why not `asyncio.to_thread`: a database that hangs (a blackholed connection, a stopped server process, a full disk)
answers nothing and raises nothing; psycopg has no client-side read timeout and `statement_timeout` is enforced by
the very server that is silent. The loop's default executor has min(32, cpus + 4) threads (6 on a 2-core node),
so a handful of stuck writes would also hold up everything else the worker runs there, and asyncio waits for the
default executor's threads at exit, as the interpreter does for any ThreadPoolExecutor's. Here the threads are
daemon threads the interpreter does not join, and `run` gives up waiting after `wait_s`: the caller (the
recorder) then keeps the write in its outbox. A call that had not started by then is dropped from the queue; one
already running is left to finish or fail on its own (the writes are idempotent, so a late commit of it and the
outbox's replay store it once).
"""
from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")


class DbTimeout(Exception):
    """The database did not answer within the bound."""


class DbThreads(Executor):
    """A fixed set of daemon threads behind a FIFO; `await run(fn, **kw)` with a bounded wait."""

    def __init__(self, size: int, name: str, wait_s: float) -> None:
        self.wait_s = wait_s
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None]
        self._jobs = queue.SimpleQueue()
        self._size = size
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:  # type: ignore[override]
        future: Future[T] = Future()
        self._jobs.put((future, fn, args, kwargs))
        return future

    async def run(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """`fn(**kwargs)` on one of the threads; DbTimeout when it has not returned within `wait_s`."""
        job = asyncio.get_running_loop().run_in_executor(self, lambda: fn(**kwargs))
        try:
            return await asyncio.wait_for(job, self.wait_s)
        except TimeoutError:
            raise DbTimeout(f"no answer from the database within {self.wait_s:.1f} s") from None

    def shutdown(self, wait: bool = False, *, cancel_futures: bool = True) -> None:
        """Stop the idle threads; one stuck in a call ends with it (daemon: it never holds the exit)."""
        for _ in range(self._size):
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():       # given up on before it started
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiter, who decides
                future.set_exception(exc)
            else:
                future.set_result(result)
