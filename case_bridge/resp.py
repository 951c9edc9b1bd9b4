"""A lean asyncio Redis client for the one command of the status lookup's hot path (EVALSHA of the lockout check).

redis-py's asyncio client costs ~0.14 ms of CPU per command (connection-pool checkout, retry wrapper, timeout
context, RESP3 parser); this costs ~0.03 ms: one socket, commands pipelined on it, replies matched to callers
in order (Redis answers in order). Any error or timeout closes the connection and fails every pending call with
`RedisError`, so a caller never gets another caller's reply; the next call reconnects.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import select
from collections.abc import Coroutine
from typing import Any

from redis.asyncio.connection import parse_url
from redis.exceptions import NoScriptError, RedisError, ResponseError


def encode(*parts: bytes | str | int) -> bytes:
    items = [p if isinstance(p, bytes) else str(p).encode() for p in parts]
    return b"*%d\r\n" % len(items) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in items)


def _quiet(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class _Reply(Exception):
    """An error reply (-ERR ...) read off the wire: raised to its caller only."""


async def _read(reader: asyncio.StreamReader) -> Any:
    line = await reader.readuntil(b"\r\n")
    kind, body = line[:1], line[1:-2]
    if kind == b":":
        return int(body)
    if kind == b"+":
        return body
    if kind == b"-":
        return _Reply(body.decode(errors="replace"))
    if kind == b"$":
        n = int(body)
        return None if n < 0 else (await reader.readexactly(n + 2))[:-2]
    if kind == b"*":
        n = int(body)
        return None if n < 0 else [await _read(reader) for _ in range(n)]
    raise RedisError(f"unexpected reply from Redis: {line[:40]!r}")


class LeanRedis:
    """`await client.call("ECHO", "x")`; `await client.evalsha(script, sha, keys)` with the NOSCRIPT fallback."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self._opts = parse_url(url)
        self._timeout = timeout_s
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._connecting: asyncio.Lock | None = None
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._reader_task: asyncio.Task[None] | None = None

    @staticmethod
    def supports(url: str) -> bool:
        return url.startswith(("redis://", "unix://"))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is not None:
                return self._conn
            o = self._opts
            if "path" in o:
                opening = asyncio.open_unix_connection(o["path"])
            else:
                opening = asyncio.open_connection(o.get("host", "127.0.0.1"), o.get("port", 6379))
            reader, writer = await asyncio.wait_for(opening, self._timeout)
            setup = []
            if o.get("password"):
                setup.append(encode("AUTH", *([o["username"]] if o.get("username") else []), o["password"]))
            if o.get("db"):
                setup.append(encode("SELECT", o["db"]))
            for command in setup:
                writer.write(command)
                reply = await asyncio.wait_for(_read(reader), self._timeout)
                if isinstance(reply, _Reply):
                    writer.close()
                    raise RedisError(str(reply))
            self._conn = (reader, writer)
            self._reader_task = asyncio.get_running_loop().create_task(self._replies(reader))
            return self._conn

    async def _replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                reply = await _read(reader)
                if not self._pending:
                    raise RedisError("a reply nobody asked for")
                future = self._pending.popleft()
                if future.done():
                    continue
                if isinstance(reply, _Reply):
                    text = str(reply)
                    future.set_exception(NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text))
                else:
                    future.set_result(reply)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, RedisError) as exc:
            self._drop(exc)

    def _drop(self, exc: BaseException) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn[1].close()
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(RedisError(f"Redis connection lost: {type(exc).__name__}"))

    async def call(self, *parts: bytes | str | int) -> Any:
        try:
            _, writer = self._conn or await self._connect()
        except (OSError, TimeoutError) as exc:
            raise RedisError(f"cannot reach Redis: {type(exc).__name__}") from exc
        return await self._send(writer, parts)

    def begin(self, *parts: bytes | str | int) -> asyncio.Future[Any]:
        """The command written now when connected, its reply awaited later (the status lookup sends its database
        query meanwhile: both replies then wake the process once instead of twice). Not connected yet: a task
        that connects first."""
        if self._conn is None:
            return asyncio.ensure_future(self.call(*parts))
        return self._send(self._conn[1], parts)

    def _send(self, writer: asyncio.StreamWriter, parts: tuple[bytes | str | int, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(future)
        writer.write(encode(*parts))
        self._arm(loop, future, grace=True)
        return future

    def _arm(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], *, grace: bool) -> None:
        # one timer handle per call (cheaper than asyncio.wait_for); late replies would be out of step with the
        # callers from then on, so a timeout drops the connection
        timer = loop.call_later(self._timeout, self._expire, future, grace)
        future.add_done_callback(lambda _f: timer.cancel())

    def _expire(self, future: asyncio.Future[Any], grace: bool) -> None:
        if future.done():
            return
        if grace and self._reply_waiting():
            # Redis answered; the loop was late reading it (a busy machine: timers run before the I/O of the same
            # loop pass). Dropping here sent 2 s of lookups to the database path, the costliest answer exactly when
            # CPU is short (issue 19). Once more, then a timeout: a reply cut off halfway still fails in time.
            self._arm(asyncio.get_running_loop(), future, grace=False)
            return
        self._drop(TimeoutError("Redis did not answer in time"))

    def _reply_waiting(self) -> bool:
        """Bytes from Redis already received: in the stream's buffer, or in the socket, unread."""
        if self._conn is None:
            return False
        reader, writer = self._conn
        if getattr(reader, "_buffer", None):       # asyncio's StreamReader keeps what it read there
            return True
        sock = writer.get_extra_info("socket")
        try:
            return bool(sock is not None and select.select([sock.fileno()], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def evalsha(self, script: str, sha: str, keys: list[str]) -> Coroutine[Any, Any, Any]:
        """EVALSHA sent now (see `begin`); a NOSCRIPT answer (Redis restarted or flushed) is retried as EVAL,
        which sends the text and caches it again."""
        first = self.begin("EVALSHA", sha, len(keys), *keys)
        first.add_done_callback(_quiet)      # an answer nobody awaited (the caller gave up) is not an error

        async def reply() -> Any:
            try:
                return await first
            except NoScriptError:
                return await self.call("EVAL", script, len(keys), *keys)
        return reply()

    async def close(self) -> None:
        task = self._reader_task
        self._drop(ConnectionResetError("closed"))
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
