"""Hand-written SIP over a plain UDP socket, for requests no well-behaved client would send (garbage, broken
INVITEs, unknown codecs, BYE for a call that does not exist, bursts counted by status) and for reading the exact
answer the peer sent back.

One sender for every test: `RawSip(host, port)` talks to one peer (`request`, `responses`, `final`);
`send(packet, dest)` + `collect(n)` count final answers of pre-built packets (`invite`, `options`) from any
127.x source address (`src_host`), as the Kamailio tests need."""
from __future__ import annotations

import re
import secrets
import socket
import time
import uuid
from dataclasses import dataclass, field

GOOD_SDP = ("v=0\r\no=raw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio {port} RTP/AVP {pts}\r\n{rtpmaps}a=ptime:20\r\n")
STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ([^\r\n]*)")


def sdp(port: int = 40000, codecs: dict[int, str] | None = None) -> str:
    codecs = codecs or {0: "PCMU/8000"}
    rtpmaps = "".join(f"a=rtpmap:{pt} {name}\r\n" for pt, name in codecs.items())
    return GOOD_SDP.format(port=port, pts=" ".join(map(str, codecs)), rtpmaps=rtpmaps)


def invite(host: str, port: int, src_host: str, src_port: int, call_id: str | None = None) -> bytes:
    """A complete PCMU INVITE to `host:port` from `src_host:src_port` (media port src_port + 2)."""
    call_id = call_id or secrets.token_hex(8)
    body = (f"v=0\r\no=- 1 1 IN IP4 {src_host}\r\ns=-\r\nc=IN IP4 {src_host}\r\nt=0 0\r\n"
            f"m=audio {src_port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    head = (f"INVITE sip:veratur@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src_host}:{src_port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"From: <sip:tester@{src_host}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:veratur@{host}:{port}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:tester@{src_host}:{src_port}>\r\n"
            f"Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n")
    return (head + body).encode()


def options(host: str, port: int, src_host: str, src_port: int) -> bytes:
    return (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src_host}:{src_port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"From: <sip:tester@{src_host}>;tag={secrets.token_hex(4)}\r\nTo: <sip:{host}:{port}>\r\n"
            f"Call-ID: {secrets.token_hex(8)}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()


@dataclass
class Response:
    code: int
    reason: str
    text: str

    def header(self, name: str) -> str | None:
        m = re.search(rf"^{re.escape(name)}\s*:\s*(.*?)\r?$", self.text, re.IGNORECASE | re.MULTILINE)
        return m.group(1) if m else None


@dataclass
class Answers:
    """Final answers received, as (status, reason, full message)."""

    finals: list[tuple[int, str, bytes]] = field(default_factory=list)

    def codes(self) -> list[int]:
        return [code for code, _, _ in self.finals]


class RawSip:
    """A UDP socket on a free port of `src_host` (any 127.x address works on Linux loopback), aimed at the peer
    `host:port` (the peer may be left out when every packet names its destination in `send`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, src_host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((src_host, 0))
        self.local_host, self.local_port = self.sock.getsockname()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawSip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pre-built packets, counted by final status -------------------------------------------------------------
    def send(self, packet: bytes, dest: tuple[str, int] | None = None) -> None:
        self.sock.sendto(packet, dest or (self.host, self.port))

    def invite_packet(self, call_id: str | None = None) -> bytes:
        """`invite()` to the peer from this socket."""
        return invite(self.host, self.port, self.local_host, self.local_port, call_id)

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

    # -- requests to the peer, answers read one by one -----------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        self.send(data)

    def request(self, method: str, *, call_id: str | None = None, body: str = "", content_type: str =
                "application/sdp", extra: str = "", omit: tuple[str, ...] = (), cseq: int = 1,
                branch: str | None = None, to_tag: str = "") -> tuple[str, str]:
        """Send a request; returns (call_id, branch)."""
        call_id = call_id or f"raw-{uuid.uuid4().hex}@127.0.0.1"
        branch = branch or f"z9hG4bK-raw-{uuid.uuid4().hex[:12]}"
        uri = f"sip:veratur@{self.host}:{self.port}"
        headers = {
            "Via": f"SIP/2.0/UDP {self.local_host}:{self.local_port};branch={branch};rport",
            "From": f"<sip:2281234567@{self.local_host}:{self.local_port}>;tag=raw{cseq}",
            "To": f"<{uri}>" + (f";tag={to_tag}" if to_tag else ""),
            "Call-ID": call_id,
            "CSeq": f"{cseq} {method}",
            "Contact": f"<sip:raw@{self.local_host}:{self.local_port}>",
            "Max-Forwards": "70",
        }
        if body:
            headers["Content-Type"] = content_type
        headers["Content-Length"] = str(len(body.encode()))
        lines = [f"{method} {uri} SIP/2.0"] + [f"{k}: {v}" for k, v in headers.items() if k not in omit]
        text = "\r\n".join(lines) + "\r\n" + extra + "\r\n" + body
        self.send_raw(text.encode())
        return call_id, branch

    def responses(self, timeout_s: float = 3.0, until_final: bool = True) -> list[Response]:
        """Responses received until a final one (or the timeout)."""
        out: list[Response] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                break
            text = data.decode(errors="replace")
            m = re.match(r"SIP/2\.0 (\d{3}) ?(.*?)\r?\n", text)
            if not m:
                continue                              # a request from the worker (e.g. BYE): not for us here
            out.append(Response(int(m.group(1)), m.group(2), text))
            if until_final and int(m.group(1)) >= 200:
                break
        return out

    def final(self, timeout_s: float = 3.0) -> Response | None:
        finals = [r for r in self.responses(timeout_s) if r.code >= 200]
        return finals[-1] if finals else None

    def ack_failure(self, call_id: str, branch: str, response: Response) -> None:
        """ACK a non-2xx final answer to an INVITE (same branch, the To tag of the answer)."""
        to = response.header("To") or ""
        tag = re.search(r"tag=([^;\s]+)", to)
        self.request("ACK", call_id=call_id, branch=branch, to_tag=tag.group(1) if tag else "")

    def bye_after_ok(self, call_id: str, response: Response) -> None:
        to = response.header("To") or ""
        tag = re.search(r"tag=([^;\s]+)", to)
        self.request("ACK", call_id=call_id, to_tag=tag.group(1) if tag else "")
        self.request("BYE", call_id=call_id, cseq=2, to_tag=tag.group(1) if tag else "")
