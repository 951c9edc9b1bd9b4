"""Health probes the supervisor uses on its children: a SIP OPTIONS ping over UDP, an HTTP GET, and reading one
gauge from a Prometheus text page. Each probe answers a value or None; none of them raises on a dead peer."""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import secrets
import socket

import httpx

SIP_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ")


def _sip_host(address: str) -> str:
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


def options_request(host: str, port: int, local_host: str, local_port: int, call_id: str) -> bytes:
    """A minimal out-of-dialog OPTIONS (RFC 3261 §11) from the supervisor's probe socket."""
    branch = "z9hG4bK" + secrets.token_hex(8)
    target = f"sip:{_sip_host(host)}:{port}"
    lines = [
        f"OPTIONS {target} SIP/2.0",
        f"Via: SIP/2.0/UDP {_sip_host(local_host)}:{local_port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:health@{_sip_host(local_host)}:{local_port}>;tag={secrets.token_hex(4)}",
        f"To: <{target}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        "Accept: application/sdp",
        "User-Agent: veratur-supervisor",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


class _OptionsProtocol(asyncio.DatagramProtocol):
    def __init__(self, call_id: str) -> None:
        self.call_id = call_id.encode()
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        match = SIP_STATUS.match(data)
        # Only final answers to our own Call-ID count; a 100 Trying or a stray packet does not.
        if match and self.call_id in data and not self.status.done():
            code = int(match.group(1))
            if code >= 200:
                self.status.set_result(code)


async def sip_options(host: str, port: int, timeout_s: float = 2.0, retransmit_s: float = 0.5) -> int | None:
    """Send OPTIONS to host:port over UDP; the final status code, or None when nothing answered in time."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    call_id = f"{secrets.token_hex(8)}@veratur-health"
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _OptionsProtocol(call_id), local_addr=(host if host not in ("0.0.0.0", "::") else "127.0.0.1", 0),
        family=family)
    try:
        local_host, local_port = transport.get_extra_info("sockname")[:2]
        packet = options_request(host, port, local_host, local_port, call_id)
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            transport.sendto(packet, (host, port))
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(protocol.status),
                                              min(retransmit_s, max(deadline - loop.time(), 0.01)))
        return None
    finally:
        transport.close()


async def http_ok(url: str, timeout_s: float = 2.0, accept_any: bool = False, uds: str | None = None) -> bool:
    """True when GET url answers 2xx (with accept_any: any answer below 500, i.e. the server is up). `uds`: over
    that Unix socket (url then only gives the path)."""
    try:
        transport = httpx.AsyncHTTPTransport(uds=uds) if uds else None
        async with httpx.AsyncClient(timeout=timeout_s, transport=transport) as client:
            response = await client.get(url)
        return response.status_code < 500 if accept_any else 200 <= response.status_code < 300
    except (httpx.HTTPError, OSError):
        return False


async def metric_value(url: str, name: str, timeout_s: float = 2.0) -> float | None:
    """The value of an unlabelled gauge/counter `name` on a Prometheus text page, or None."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(url)
    except (httpx.HTTPError, OSError):
        return None
    if response.status_code != 200:
        return None
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{\}})? ([0-9.eE+-]+)$", re.MULTILINE)
    match = pattern.search(response.text)
    return float(match.group(1)) if match else None
