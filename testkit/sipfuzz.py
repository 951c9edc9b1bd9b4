"""A seeded SIP fuzzer on stdlib sockets: twelve families of broken or hostile messages, reproducible from the
seed, sent over UDP to a front door or a worker. Used by tests/chaos (a few thousand messages) and
bench/sip_soak.py (tens of thousands), both while real calls run."""
from __future__ import annotations

import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

FAMILIES = ("truncated", "huge_header", "bad_content_length", "invalid_sdp", "binary", "missing_via",
            "missing_call_id", "unknown_method", "unsupported_codec", "oversized_datagram", "bad_start_line",
            "header_chaos")
MAX_UDP_PAYLOAD = 65507


def _invite(rng: random.Random, host: str, port: int, src: tuple[str, int], *, sdp: str | None = None,
            omit: tuple[str, ...] = (), method: str = "INVITE", extra: str = "", length: str | None = None) -> str:
    tag = rng.getrandbits(32)
    # The default offer is G.729 only: a message parsed whole is refused (488) rather than answered, so the fuzzer
    # never holds a call slot the legitimate callers need (a well-formed call is not what is being tested).
    body = sdp if sdp is not None else (
        f"v=0\r\no=fuzz {tag} 1 IN IP4 {src[0]}\r\ns=-\r\nc=IN IP4 {src[0]}\r\nt=0 0\r\n"
        f"m=audio {rng.randrange(40000, 50000, 2)} RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n")
    headers = [
        ("Via", f"SIP/2.0/UDP {src[0]}:{src[1]};branch=z9hG4bKfz{rng.getrandbits(48):x};rport"),
        ("From", f"<sip:fuzz{tag % 1000}@{src[0]}>;tag=fz{tag:x}"),
        ("To", f"<sip:veratur@{host}:{port}>"),
        ("Call-ID", f"fuzz-{rng.getrandbits(64):x}@{src[0]}"),
        ("CSeq", f"1 {method}"),
        ("Contact", f"<sip:fuzz@{src[0]}:{src[1]}>"),
        ("Max-Forwards", "70"),
        ("Content-Type", "application/sdp"),
        ("Content-Length", length if length is not None else str(len(body.encode()))),
    ]
    lines = [f"{method} sip:veratur@{host}:{port} SIP/2.0"]
    lines += [f"{name}: {value}" for name, value in headers if name not in omit]
    return "\r\n".join(lines) + "\r\n" + extra + "\r\n" + body


def message(family: str, rng: random.Random, host: str, port: int, src: tuple[str, int]) -> bytes:
    """One message of `family` for a peer at host:port, sent from src."""
    if family == "truncated":
        whole = _invite(rng, host, port, src).encode()
        return whole[:rng.randrange(1, len(whole) - 1)]
    if family == "huge_header":
        name = rng.choice(["Subject", "X-Fuzz", "User-Agent", "P-Asserted-Identity"])
        return _invite(rng, host, port, src, extra=f"{name}: {'A' * rng.randrange(2000, 9000)}\r\n").encode()
    if family == "bad_content_length":
        return _invite(rng, host, port, src, length=rng.choice(["-1", "99999", "abc", "1", "4294967296", ""])
                       ).encode()
    if family == "invalid_sdp":
        body = rng.choice(["v=1\r\nm=audio x RTP/AVP\r\n", "garbage\r\n", "v=0\r\nc=IN IP4 999.1.1.1\r\n"
                           "m=audio 4000 RTP/AVP 0\r\n", "v=0\r\n" + "a=x\r\n" * 50, "\x00\x01\x02"])
        return _invite(rng, host, port, src, sdp=body).encode()
    if family == "binary":
        return rng.randbytes(rng.randrange(1, 1500))
    if family == "missing_via":
        return _invite(rng, host, port, src, omit=("Via",)).encode()
    if family == "missing_call_id":
        return _invite(rng, host, port, src, omit=("Call-ID",) + rng.choice([(), ("CSeq",), ("From", "To")])
                       ).encode()
    if family == "unknown_method":
        method = rng.choice(["invite", "FOO", "REGISTERX", "BYEE", "X" * 40, "PRACK", "PUBLISH"])
        return _invite(rng, host, port, src, method=method, sdp="").encode()
    if family == "unsupported_codec":
        codec = rng.choice(["18 G729/8000", "9 G722/8000", "111 opus/48000/2", "97 AMR/8000"])
        pt, name = codec.split(" ")
        sdp = (f"v=0\r\no=fuzz 1 1 IN IP4 {src[0]}\r\ns=-\r\nc=IN IP4 {src[0]}\r\nt=0 0\r\n"
               f"m=audio {rng.randrange(40000, 50000, 2)} RTP/AVP {pt}\r\na=rtpmap:{pt} {name}\r\n")
        return _invite(rng, host, port, src, sdp=sdp).encode()
    if family == "oversized_datagram":
        return _invite(rng, host, port, src, extra=f"X-Pad: {'B' * rng.randrange(20000, 60000)}\r\n"
                       ).encode()[:MAX_UDP_PAYLOAD]
    if family == "bad_start_line":
        line = rng.choice(["INVITE SIP/2.0", "INVITE sip:veratur SIP/3.0", "INVITE http://x/ SIP/2.0",
                           "SIP/2.0 200", " INVITE sip:a@b SIP/2.0", "INVITE sip:a@b"])
        return (line + _invite(rng, host, port, src).split("\r\n", 1)[1][0:]).encode()
    if family == "header_chaos":
        extra = rng.choice(["Via: SIP/2.0/UDP 1.2.3.4\r\n" * 40, "X-Nul: a\x00b\r\n", "Folded: a\r\n \r\n \r\n",
                            "CSeq: 2 INVITE\r\n", ": novalue\r\n", "Content-Length: 5\r\n"])
        return _invite(rng, host, port, src, extra=extra).encode("utf-8", errors="replace")
    raise ValueError(f"unknown family {family!r}")


@dataclass
class FuzzReport:
    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[int] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.sent.values())


def fuzz(targets: list[tuple[str, int]], count: int, *, seed: int, rate_per_s: float = 200.0,
         should_stop: Callable[[], bool] | None = None, src_host: str = "127.0.0.2") -> FuzzReport:
    """Send `count` messages spread over the families and `targets`, at most `rate_per_s`; count the answers.
    From `src_host`: an attacker is another host than the legitimate callers (127.0.0.1), so per-source limits
    at the front door are exercised as they are meant to work."""
    rng = random.Random(seed)
    report = FuzzReport()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.bind((src_host, 0))
    sock.setblocking(False)
    src = sock.getsockname()
    started = time.monotonic()
    try:
        for index in range(count):
            if should_stop is not None and should_stop():
                break
            family = FAMILIES[index % len(FAMILIES)]
            host, port = targets[rng.randrange(len(targets))]
            with _quiet():
                sock.sendto(message(family, rng, host, port, src), (host, port))
            report.sent[family] += 1
            _drain(sock, report)
            delay = started + (index + 1) / rate_per_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            _drain(sock, report)
            time.sleep(0.05)
    finally:
        sock.close()
    return report


class _quiet:
    """Ignore a send the kernel refuses (EMSGSIZE, ENOBUFS): the next message goes on."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return isinstance(exc, OSError)


def _drain(sock: socket.socket, report: FuzzReport) -> None:
    while True:
        try:
            data = sock.recv(65535)
        except (BlockingIOError, OSError):
            return
        if data.startswith(b"SIP/2.0 ") and data[8:11].isdigit():
            report.answers[int(data[8:11])] += 1
