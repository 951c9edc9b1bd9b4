"""Hand-written SIP over a plain socket, for requests no well-behaved client would send (garbage, broken
INVITEs, unknown codecs, BYE for a call that does not exist) and for reading the exact answer."""
from __future__ import annotations

import re
import socket
import time
import uuid
from dataclasses import dataclass

GOOD_SDP = ("v=0\r\no=raw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio {port} RTP/AVP {pts}\r\n{rtpmaps}a=ptime:20\r\n")


def sdp(port: int = 40000, codecs: dict[int, str] | None = None) -> str:
    codecs = codecs or {0: "PCMU/8000"}
    rtpmaps = "".join(f"a=rtpmap:{pt} {name}\r\n" for pt, name in codecs.items())
    return GOOD_SDP.format(port=port, pts=" ".join(map(str, codecs)), rtpmaps=rtpmaps)


@dataclass
class Response:
    code: int
    reason: str
    text: str

    def header(self, name: str) -> str | None:
        m = re.search(rf"^{re.escape(name)}\s*:\s*(.*?)\r?$", self.text, re.IGNORECASE | re.MULTILINE)
        return m.group(1) if m else None


class RawSip:
    """A UDP socket on a free port that sends requests to `host:port` and reads responses."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.local_port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawSip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, (self.host, self.port))

    def request(self, method: str, *, call_id: str | None = None, body: str = "", content_type: str =
                "application/sdp", extra: str = "", omit: tuple[str, ...] = (), cseq: int = 1,
                branch: str | None = None, to_tag: str = "") -> tuple[str, str]:
        """Send a request; returns (call_id, branch)."""
        call_id = call_id or f"raw-{uuid.uuid4().hex}@127.0.0.1"
        branch = branch or f"z9hG4bK-raw-{uuid.uuid4().hex[:12]}"
        uri = f"sip:veratur@{self.host}:{self.port}"
        headers = {
            "Via": f"SIP/2.0/UDP 127.0.0.1:{self.local_port};branch={branch};rport",
            "From": f"<sip:2281234567@127.0.0.1:{self.local_port}>;tag=raw{cseq}",
            "To": f"<{uri}>" + (f";tag={to_tag}" if to_tag else ""),
            "Call-ID": call_id,
            "CSeq": f"{cseq} {method if method != 'ACK' else 'ACK'}",
            "Contact": f"<sip:raw@127.0.0.1:{self.local_port}>",
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
