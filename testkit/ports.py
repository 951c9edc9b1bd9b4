"""Free loopback ports for the peers a test starts (other tests and helpers bind ports at the same time)."""
from __future__ import annotations

import os
import random
import socket
import time

HOST = "127.0.0.1"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_free(port: int, host: str = HOST) -> bool:
    """True when both UDP and TCP can bind `port` on `host` right now."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_port_block(count: int, low: int = 21000, high: int = 59000) -> int:
    """The first port of `count` consecutive ports free on UDP and TCP (Kamailio and the workers of one node
    take consecutive ports)."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(500):
        base = rng.randrange(low, high - count)
        if all(port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no block of {count} free ports found")
