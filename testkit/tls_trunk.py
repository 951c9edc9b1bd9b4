"""A SIP trunk over TLS for the outbound tests (sipp here has no TLS): a Python `ssl` server that takes the front
door's TLS connection, answers INVITE with 100 and 200 + SDP, takes the ACK and answers BYE 200, and records every
request it got and every TLS handshake that failed (with the reason), so a test can tell "the call reached the
trunk" from "the node refused the trunk's certificate".

    async with tls_trunk(cert, key, port) as trunk:
        ...                                 # the node calls sip:<number>@127.0.0.1:<port>;transport=tls
        await trunk.wait_for("BYE", 10)
        trunk.requests, trunk.handshake_errors
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"


@dataclass
class SipRequest:
    method: str
    uri: str
    headers: list[tuple[str, str]]          # in order, names as sent
    body: str
    peer: tuple[str, int]

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class TlsTrunk:
    port: int
    context: ssl.SSLContext
    requests: list[SipRequest] = field(default_factory=list)
    handshake_errors: list[str] = field(default_factory=list)
    connections: int = 0
    rtp_port: int = 0
    rtp_packets: int = 0
    answer_delay_s: float = 0.0             # a slow trunk: wait this long before the first answer to an INVITE
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, method: str, timeout_s: float) -> SipRequest:
        """The first request with `method` (waits until it arrives)."""
        async with asyncio.timeout(timeout_s):
            while True:
                for request in self.requests:
                    if request.method == method:
                        return request
                self._changed.clear()
                await self._changed.wait()

    async def wait_handshake_error(self, timeout_s: float) -> str:
        async with asyncio.timeout(timeout_s):
            while not self.handshake_errors:
                self._changed.clear()
                await self._changed.wait()
        return self.handshake_errors[0]

    def _note(self) -> None:
        self._changed.set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        peer = writer.get_extra_info("peername")
        try:
            await writer.start_tls(self.context)             # the handshake here, so its failure is seen
        except (ssl.SSLError, OSError) as exc:
            self.handshake_errors.append(f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}")
            self._note()
            writer.close()
            return
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                    return
                lines = head.decode(errors="replace").split("\r\n")
                headers = []
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers.append((name.strip(), value.strip()))
                length = int(next((v for n, v in headers if n.lower() in ("content-length", "l")), "0"))
                body = (await reader.readexactly(length)).decode(errors="replace") if length else ""
                first = lines[0].split(" ")
                if lines[0].startswith("SIP/2.0"):
                    continue                                 # a response (none expected): ignore
                request = SipRequest(first[0], first[1], headers, body, (peer[0], peer[1]))
                self.requests.append(request)
                self._note()
                if request.method == "INVITE" and self.answer_delay_s:
                    await asyncio.sleep(self.answer_delay_s)
                for response in self._answer(request):
                    writer.write(response.encode())
                await writer.drain()
        finally:
            writer.close()

    def _answer(self, req: SipRequest) -> list[str]:
        if req.method == "ACK":
            return []
        copied = "".join(f"{n}: {v}\r\n" for n, v in req.headers
                         if n.lower() in ("via", "v", "from", "f", "call-id", "i", "cseq", "record-route"))
        to = req.header("To") or req.header("t")
        to_value = to[0] if to else ""
        if req.method == "INVITE" and ";tag=" not in to_value:
            to_value += ";tag=trunk1"
        base = f"{copied}To: {to_value}\r\n"
        if req.method != "INVITE":
            return [f"SIP/2.0 200 OK\r\n{base}Content-Length: 0\r\n\r\n"]
        sdp = (f"v=0\r\no=trunk 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
               f"m=audio {self.rtp_port} RTP/AVP 0 120\r\na=rtpmap:0 PCMU/8000\r\n"
               f"a=rtpmap:120 telephone-event/8000\r\na=sendrecv\r\n")
        return [f"SIP/2.0 100 Trying\r\n{base}Content-Length: 0\r\n\r\n",
                f"SIP/2.0 200 OK\r\n{base}Contact: <sip:trunk@{HOST}:{self.port};transport=tls>\r\n"
                f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"]


class _Rtp(asyncio.DatagramProtocol):
    def __init__(self, trunk: TlsTrunk) -> None:
        self.trunk = trunk

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) >= 12 and data[0] >> 6 == 2:
            self.trunk.rtp_packets += 1


@contextlib.asynccontextmanager
async def tls_trunk(cert: Path, key: Path, port: int) -> AsyncIterator[TlsTrunk]:
    """The trunk listening for SIP over TLS on HOST:port with `cert`/`key` (no client certificate asked)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    trunk = TlsTrunk(port, context)
    loop = asyncio.get_running_loop()
    rtp, _ = await loop.create_datagram_endpoint(lambda: _Rtp(trunk), local_addr=(HOST, 0), family=socket.AF_INET)
    trunk.rtp_port = rtp.get_extra_info("sockname")[1]
    server = await asyncio.start_server(trunk.serve, HOST, port)
    try:
        yield trunk
    finally:
        server.close()
        rtp.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)

