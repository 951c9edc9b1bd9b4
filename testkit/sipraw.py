"""Raw SIP over UDP for node tests: send hand-written (or deliberately broken) requests and collect the answers.

Used where sipp cannot express the case: garbage bytes, missing headers, bursts that must be counted by status."""
from __future__ import annotations

import re
import secrets
import socket
import time
from dataclasses import dataclass, field

STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ([^\r\n]*)")


def invite(host: str, port: int, src_host: str, src_port: int, call_id: str | None = None) -> bytes:
    call_id = call_id or secrets.token_hex(8)
    sdp = (f"v=0\r\no=- 1 1 IN IP4 {src_host}\r\ns=-\r\nc=IN IP4 {src_host}\r\nt=0 0\r\n"
           f"m=audio {src_port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    head = (f"INVITE sip:veratur@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src_host}:{src_port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"From: <sip:tester@{src_host}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:veratur@{host}:{port}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:tester@{src_host}:{src_port}>\r\n"
            f"Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n")
    return (head + sdp).encode()


def options(host: str, port: int, src_host: str, src_port: int) -> bytes:
    return (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src_host}:{src_port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"From: <sip:tester@{src_host}>;tag={secrets.token_hex(4)}\r\nTo: <sip:{host}:{port}>\r\n"
            f"Call-ID: {secrets.token_hex(8)}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()


@dataclass
class Answers:
    """Final answers received, as (status, reason, full message)."""

    finals: list[tuple[int, str, bytes]] = field(default_factory=list)

    def codes(self) -> list[int]:
        return [code for code, _, _ in self.finals]


class RawSip:
    """One UDP socket bound on src_host (any 127.x address works on Linux loopback)."""

    def __init__(self, src_host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((src_host, 0))
        self.host, self.port = self.sock.getsockname()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawSip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, packet: bytes, dest: tuple[str, int]) -> None:
        self.sock.sendto(packet, dest)

    def collect(self, expected: int, timeout_s: float = 5.0) -> Answers:
        """Read until `expected` final (>= 200) answers or the timeout."""
        answers = Answers()
        deadline = time.monotonic() + timeout_s
        while len(answers.finals) < expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(remaining)
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                break
            match = STATUS.match(data)
            if match and int(match.group(1)) >= 200:
                answers.finals.append((int(match.group(1)), match.group(2).decode(errors="replace"), data))
        return answers
