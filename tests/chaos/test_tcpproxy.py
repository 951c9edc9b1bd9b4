"""The storage-outage relay itself (testkit.tcpproxy.ChaosProxy) in front of a plain echo server: it relays, a cut
resets every connection and every new one, a blackhole answers nothing while keeping connections open, and a
restore relays again (resetting what the blackhole held, so a client stuck on it notices)."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from testkit.tcpproxy import ChaosProxy

SILENT_S = 0.3          # "nothing came back" = nothing within this long (the echo answers in well under 1 ms)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := _recv(conn):
                conn.sendall(data)

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    server.close()


def _recv(conn: socket.socket) -> bytes:
    try:
        return conn.recv(4096)
    except OSError:
        return b""


def connect(proxy: ChaosProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    sock.settimeout(SILENT_S)
    return sock


def answer(sock: socket.socket, data: bytes = b"ping") -> bytes | str:
    """What came back for `data`: the bytes, 'silent' (nothing within SILENT_S) or 'reset' (RST or EOF)."""
    try:
        sock.sendall(data)
        got = sock.recv(4096)
    except TimeoutError:
        return "silent"
    except OSError:
        return "reset"
    return got or "reset"


def answer_new(proxy: ChaosProxy) -> bytes | str:
    """`answer` on a new connection. In cut mode the relay resets at accept; on a loaded machine that RST can land
    before the client's connect() has read its result, so the connect itself reports the reset."""
    try:
        sock = connect(proxy)
    except OSError:
        return "reset"
    return answer(sock)


def test_relay_cut_blackhole_restore(echo_port: int) -> None:
    with ChaosProxy(echo_port) as proxy:
        before = connect(proxy)
        assert answer(before) == b"ping"

        proxy.cut()
        assert answer(before) == "reset"                       # the open connection died at once
        assert answer_new(proxy) == "reset"                    # and a new one is reset at accept
        assert proxy.open_connections() == 0

        proxy.restore()
        relayed = connect(proxy)
        assert answer(relayed) == b"ping"

        proxy.blackhole()
        assert answer(relayed) == "silent"                     # the open connection stays up, unanswered
        held = connect(proxy)                                  # a new one is accepted ...
        assert answer(held) == "silent"                        # ... and never answered either

        proxy.restore()
        assert answer(held) == "reset"                         # what the blackhole held is reset on restore
        assert answer(relayed) == "reset"
        assert answer_new(proxy) == b"ping"
        assert proxy.accepted == 5


def test_via_rewrites_only_the_target_address() -> None:
    with ChaosProxy(5432) as proxy:
        assert (proxy.via("postgresql+psycopg://postgres@127.0.0.1:5432/cases")
                == f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/cases")
        with pytest.raises(ValueError):
            proxy.via("redis://127.0.0.1:6379/0")
