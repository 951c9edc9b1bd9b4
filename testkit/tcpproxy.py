"""A TCP relay in front of a real server (PostgreSQL, Redis) that a test can cut or blackhole: a storage outage
made on demand, without stopping the shared server every other test uses.

    with ChaosProxy(5432) as proxy:           # its own event loop in a thread: usable from sync tests
        url = proxy.via("postgresql+psycopg://postgres@127.0.0.1:5432/db")     # the same URL, through the relay
        proxy.cut()          # every connection reset at once, new ones reset at accept (a stopped server)
        proxy.blackhole()    # connections stay open, nothing is ever answered, new ones are accepted and
                             # held silent (a network partition, or a server that hangs: SIGSTOP, full disk)
        proxy.restore()      # relaying again; connections held by the blackhole are reset then

Why both modes: a refused or reset connection is noticed by any client at once; a silent one only by a client
that bounds its own wait. Note that in blackhole mode this machine's kernel still ACKs what the client sends (the
relay is a userspace process), so TCP-level timeouts (tcp_user_timeout, keepalives) do not fire: it models a hung
server exactly and a partition as far as the application sees it.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

Mode = Literal["pass", "cut", "blackhole"]


class ChaosProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.mode: Mode = "pass"
        self.accepted = 0                                    # connections accepted since start (any mode)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()      # client-side and upstream writers alike
        self._held: set[asyncio.StreamWriter] = set()       # client connections sitting in the blackhole

    # -- control (from any thread) -----------------------------------------------------------------------
    def start(self) -> ChaosProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def cut(self) -> None:
        self._call(self._set("cut"))

    def blackhole(self) -> None:
        self._call(self._set("blackhole"))

    def restore(self) -> None:
        self._call(self._set("pass"))

    def via(self, url: str) -> str:
        """`url` (postgresql://…@127.0.0.1:5432/db, redis://127.0.0.1:6379/0) pointed at this relay instead."""
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
        if (host, port) != self.target:
            raise ValueError(f"{url!r} does not point at the relay's target {self.target}")
        netloc = parts.netloc.rsplit("@", 1)
        netloc[-1] = f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc="@".join(netloc)))

    def open_connections(self) -> int:
        """Client and upstream sockets the relay holds now (a cut leaves none)."""
        return len(self._conns)

    def __enter__(self) -> ChaosProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- on the proxy's loop -------------------------------------------------------------------------------
    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_all()
        # the relays and held connections end with their sockets; cancel what is left so the loop closes clean
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _set(self, mode: Mode) -> None:
        previous, self.mode = self.mode, mode
        if mode == "cut" or (previous == "blackhole" and mode == "pass"):
            # cut: everything dies now. Leaving the blackhole: what TCP does to a connection after its peer was
            # silent too long; the client notices and reconnects.
            self._reset_all()

    def _reset_all(self) -> None:
        for w in list(self._conns):
            _reset(w)
        self._conns.clear()
        self._held.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "cut":
            _reset(writer)
            return
        self._conns.add(writer)
        if self.mode == "blackhole":
            await self._swallow(reader, writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            self._conns.discard(writer)
            return
        self._conns.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if self.mode == "blackhole":
                        continue                 # dropped, both ways: nobody hears anything any more
                    dst.write(data)
                    await dst.drain()
            _reset(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._conns -= {writer, up_writer}

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._held.add(writer)
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while await reader.read(65536):
                pass
        self._held.discard(writer)
        self._conns.discard(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), as a dead server's host or a cut link would, not a polite FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
