"""A scripted SIP caller over plain UDP sockets with its own RTP, for the interoperability cases a sipp scenario
cannot play: RTP from a port other than the SDP's (NAT), an SSRC change, reordered or duplicated packets,
RFC 4733 events of any shape and payload type, offers with any codec list and ptime, a late offer (SDP in the
ACK), re-INVITE and UPDATE mid-call, through Kamailio (route set) or straight to a worker.

`SipDialog` keeps one dialog: a receiver thread queues the responses and answers the requests the far end sends
(BYE, re-INVITE/UPDATE for a session refresh, OPTIONS, INFO) with 200, so the call behaves like a real phone's.
`RtpSocket` sends packets built by `RtpStream` (paced 20 ms by default) and counts what it receives."""
from __future__ import annotations

import queue
import re
import secrets
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from testkit.pcaps import DTMF_EVENTS, ulaw_encode
from testkit.rawsip import Response

STATUS_LINE = re.compile(r"^SIP/2\.0 (\d{3}) ?([^\r\n]*)")


def sdp_body(host: str, port: int, codecs: dict[int, str], *, ptime: int = 20, direction: str = "sendrecv",
             version: int = 1, fmtp: dict[int, str] | None = None) -> str:
    """An audio offer/answer: `codecs` = {payload type: 'NAME/RATE'} in preference order."""
    lines = ["v=0", f"o=dialog 4242 {version} IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0",
             f"m=audio {port} RTP/AVP {' '.join(map(str, codecs))}"]
    lines += [f"a=rtpmap:{pt} {name}" for pt, name in codecs.items()]
    lines += [f"a=fmtp:{pt} {value}" for pt, value in (fmtp or {}).items()]
    lines += [f"a=ptime:{ptime}", f"a={direction}"]
    return "\r\n".join(lines) + "\r\n"


@dataclass
class RemoteMedia:
    host: str
    port: int
    payload_types: list[int]
    rtpmap: dict[int, str]
    direction: str

    @classmethod
    def parse(cls, body: str) -> RemoteMedia | None:
        c = re.search(r"^c=IN IP4 (\S+)", body, re.M)
        m = re.search(r"^m=audio (\d+) RTP/S?AVP ([\d ]+)", body, re.M)     # RTP/SAVP: SRTP
        if not c or not m:
            return None
        rtpmap = {int(pt): name.strip() for pt, name in re.findall(r"^a=rtpmap:(\d+) (\S+)", body, re.M)}
        d = re.search(r"^a=(sendrecv|sendonly|recvonly|inactive)\s*$", body, re.M)
        return cls(c.group(1), int(m.group(1)), [int(p) for p in m.group(2).split()], rtpmap,
                   d.group(1) if d else "sendrecv")

    def pt_of(self, name: str) -> int | None:
        return next((pt for pt, n in self.rtpmap.items() if n.lower().startswith(name.lower())), None)


# ---- RTP ----------------------------------------------------------------------------------------------------
_ALAW_SEG_ENDS = [0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF]


def alaw_encode(pcm: bytes) -> bytes:
    """G.711 A-law of s16le samples (ITU-T G.711 reference)."""
    out = bytearray()
    for (sample,) in struct.iter_unpack("<h", pcm):
        mask = 0xD5 if sample >= 0 else 0x55
        v = sample if sample >= 0 else -sample - 1
        seg = next((i for i, end in enumerate(_ALAW_SEG_ENDS) if v <= end), 8)
        if seg >= 8:
            out.append(0x7F ^ mask)
            continue
        aval = seg << 4
        aval |= (v >> 4) & 0x0F if seg < 2 else (v >> (seg + 3)) & 0x0F
        out.append(aval ^ mask)
    return bytes(out)


@dataclass
class RtpStream:
    """Sequence number, timestamp and SSRC of one outgoing stream; builds the packets, never sends them."""

    pt: int = 0
    ssrc: int = 0x11223344
    seq: int = 1000
    ts: int = 160_000
    marker_next: bool = True

    def _packet(self, pt: int, ts: int, payload: bytes, marker: bool = False) -> bytes:
        head = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, self.seq & 0xFFFF, ts & 0xFFFFFFFF,
                           self.ssrc)
        self.seq += 1
        return head + payload

    def audio(self, pcm: bytes, codec: str = "PCMU", ptime_ms: int = 20) -> list[bytes]:
        """s16le 8 kHz PCM as G.711 packets of `ptime_ms`."""
        coded = ulaw_encode(pcm) if codec == "PCMU" else alaw_encode(pcm)
        n = 8 * ptime_ms
        packets = []
        for i in range(0, len(coded) - n + 1, n):
            packets.append(self._packet(self.pt, self.ts, coded[i:i + n], self.marker_next))
            self.marker_next = False
            self.ts += n
        return packets

    def dtmf(self, digit: str, pt: int, duration_ms: int, *, end_repeats: int = 3, step_ms: int = 50,
             volume: int = 10) -> list[bytes]:
        """One RFC 4733 event: a start packet (marker, 20 ms), updates every `step_ms`, `end_repeats` end packets
        (same timestamp and duration, the RFC's redundancy), all at one timestamp; the audio clock moves on."""
        event, packets = DTMF_EVENTS[digit], []
        # The start packet covers one packet time (as carriers send it); pjmedia takes an event whose first
        # duration is not below the previous event's final one, same key, for that same event (docs/pjsua2.md).
        durations = [min(160, duration_ms * 8)] + list(range(step_ms * 8, duration_ms * 8, step_ms * 8))
        for k, dur in enumerate(durations):
            packets.append(self._packet(pt, self.ts, struct.pack("!BBH", event, volume, dur), k == 0))
        for _ in range(end_repeats):
            packets.append(self._packet(pt, self.ts, struct.pack("!BBH", event, 0x80 | volume, duration_ms * 8)))
        self.ts += duration_ms * 8
        return packets


class RtpSocket:
    """A UDP socket for RTP on 127.0.0.1; a thread counts what arrives (packets, payload types, first source)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.host, self.port = self.sock.getsockname()
        self.received = 0
        self.payload_types: dict[int, int] = {}
        self.sources: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._recv, daemon=True)
        self._thread.start()

    def _recv(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            if len(data) >= 12:
                self.count(data, peer)

    def count(self, data: bytes, peer: tuple[str, int]) -> None:
        """One RTP packet arrived (on the receive thread); subclasses extend it to keep more."""
        self.received += 1
        pt = data[1] & 0x7F
        self.payload_types[pt] = self.payload_types.get(pt, 0) + 1
        self.sources.add(peer)

    def send(self, packets: list[bytes], dest: tuple[str, int], interval_s: float = 0.02) -> None:
        """Send `packets` paced `interval_s` apart (on a monotonic schedule, so a late wake-up catches up)."""
        start = time.monotonic()
        for i, packet in enumerate(packets):
            delay = start + i * interval_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.sock.sendto(packet, dest)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


# ---- SIP ----------------------------------------------------------------------------------------------------
@dataclass
class Request:
    method: str
    text: str

    def header(self, name: str) -> str | None:
        return Response(0, "", self.text).header(name)


@dataclass
class SipDialog:
    """One call from a UDP socket of ours to `host:port` (a worker, or Kamailio: the route set is followed)."""

    host: str
    port: int
    user: str = "veratur"
    caller: str = "2281234567"
    local_host: str = "127.0.0.1"
    call_id: str = field(default_factory=lambda: f"dlg-{secrets.token_hex(8)}@127.0.0.1")
    from_tag: str = field(default_factory=lambda: secrets.token_hex(4))
    answer_sdp: str = ""                   # what we answer a re-INVITE/UPDATE offer from the far end with
    auto_answer: bool = True

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.local_host, 0))
        self.sock.settimeout(0.1)
        self.local_port = self.sock.getsockname()[1]
        self.cseq = 0
        self.to_tag = ""
        self.remote_target = f"sip:{self.user}@{self.host}:{self.port}"
        self.route: list[str] = []
        self.remote: RemoteMedia | None = None
        self.responses: queue.Queue[Response] = queue.Queue()
        self.requests: list[Request] = []           # what the far end sent us, in order
        self.invite_branch = ""
        self.invite_cseq = 0
        self.cancel_text = ""
        self.reinvite_branch = ""
        self._acked: bytes | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._recv, daemon=True)
        self._thread.start()

    # -- building and sending ---------------------------------------------------------------------------
    def _send(self, text: str) -> None:
        self.sock.sendto(text.encode(), (self.host, self.port))

    def _message(self, method: str, uri: str, cseq: int, branch: str, body: str, content_type: str,
                 extra: str, route: bool) -> str:
        to = f"<sip:{self.user}@{self.host}:{self.port}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        headers = [f"{method} {uri} SIP/2.0",
                   f"Via: SIP/2.0/UDP {self.local_host}:{self.local_port};branch={branch};rport",
                   f"From: <sip:{self.caller}@{self.local_host}>;tag={self.from_tag}", f"To: {to}",
                   f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}",
                   f"Contact: <sip:phone@{self.local_host}:{self.local_port}>", "Max-Forwards: 70"]
        if route and self.route:
            headers.append("Route: " + ", ".join(self.route))
        if body:
            headers.append(f"Content-Type: {content_type}")
        headers.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(headers) + "\r\n" + extra + "\r\n" + body

    def invite(self, body: str = "", extra: str = "", content_type: str = "application/sdp") -> None:
        """The initial INVITE (an empty `body` is a late offer: the answerer offers in its 2xx)."""
        self.cseq += 1
        self.invite_cseq = self.cseq
        self.invite_branch = f"z9hG4bK-dlg-{secrets.token_hex(6)}"
        self._invite_text = self._message("INVITE", self.remote_target, self.cseq, self.invite_branch, body,
                                          content_type, extra, route=False)
        self._send(self._invite_text)

    def cancel(self) -> None:
        """CANCEL the initial INVITE (same branch and CSeq number, RFC 3261 9.1)."""
        to_tag, self.to_tag = self.to_tag, ""
        self.cancel_text = self._message("CANCEL", self.remote_target, self.invite_cseq, self.invite_branch, "", "",
                                         "", route=False)
        self._send(self.cancel_text)
        self.to_tag = to_tag

    def ack(self, body: str = "") -> None:
        """ACK the 2xx of the last INVITE (a late offer's answer goes in `body`)."""
        text = self._message("ACK", self.remote_target, self.invite_cseq, f"z9hG4bK-ack-{secrets.token_hex(6)}",
                             body, "application/sdp", "", route=True)
        self._acked = text.encode()
        self._send(text)

    def ack_failure(self, response: Response) -> None:
        """ACK a non-2xx final answer to the last INVITE (same branch; a re-INVITE's along the route set)."""
        if self.invite_cseq != 1 or self.reinvite_branch:
            self._send(self._message("ACK", self.remote_target, self.invite_cseq, self.reinvite_branch, "", "", "",
                                     route=True))
            return
        tag = re.search(r"tag=([^;\s>]+)", response.header("To") or "")
        saved, self.to_tag = self.to_tag, tag.group(1) if tag else ""
        self._send(self._message("ACK", self.remote_target, self.invite_cseq, self.invite_branch, "", "", "",
                                 route=False))
        self.to_tag = saved

    def reinvite(self, body: str, extra: str = "") -> None:
        self.cseq += 1
        self.invite_cseq = self.cseq
        self.reinvite_branch = f"z9hG4bK-re-{secrets.token_hex(6)}"
        self._send(self._message("INVITE", self.remote_target, self.cseq, self.reinvite_branch,
                                 body, "application/sdp", extra, route=True))

    def reinvite_accepted(self, body: str, extra: str = "", attempts: int = 4,
                          timeout_s: float = 10.0) -> Response | None:
        """re-INVITE until it is not refused as crossing another INVITE: 491 (the far end's own re-INVITE crossed
        ours, RFC 3261 14.1) or 500 with Retry-After (RFC 3261 14.2: the far end still holds the previous INVITE
        transaction, e.g. our ACK for it was overtaken by the next re-INVITE in the proxy's parallel receivers; PJSIP
        answers so). The UAC tries again a little later, after Retry-After where one is given."""
        response = None
        for attempt in range(attempts):
            self.reinvite(body, extra)
            response = self.wait("INVITE", timeout_s)
            retry_after = response.header("Retry-After") if response is not None else None
            crossed = response is not None and (response.code == 491 or (response.code == 500 and retry_after))
            if not crossed:
                return response
            assert response is not None
            self.ack_failure(response)
            delay = 0.3 * (attempt + 1)
            if retry_after:
                try:
                    delay = min(float(retry_after.split(";", 1)[0].split("(", 1)[0].strip()), 10.0)
                except ValueError:
                    pass
            time.sleep(delay)
        return response

    def request(self, method: str, body: str = "", content_type: str = "application/sdp", extra: str = "") -> None:
        """An in-dialog request (BYE, UPDATE, INFO, OPTIONS...) along the route set."""
        self.cseq += 1
        self._send(self._message(method, self.remote_target, self.cseq, f"z9hG4bK-{method.lower()}-"
                                 f"{secrets.token_hex(6)}", body, content_type, extra, route=True))

    # -- receiving --------------------------------------------------------------------------------------
    def _recv(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except (TimeoutError, OSError):
                continue
            text = data.decode(errors="replace")
            m = STATUS_LINE.match(text)
            if m:
                response = Response(int(m.group(1)), m.group(2), text)
                cseq = response.header("CSeq") or ""
                if (response.code >= 200 and response.code < 300 and cseq.endswith("INVITE")
                        and self._acked is not None and cseq.split()[0] == str(self.invite_cseq)):
                    self.sock.sendto(self._acked, (self.host, self.port))    # a retransmitted 2xx: ACK again
                self.responses.put(response)
            elif text[:1].isalpha():
                request = Request(text.split(" ", 1)[0], text)
                self.requests.append(request)
                if self.auto_answer and request.method not in ("ACK",):
                    self.reply(request, 200)

    def reply(self, request: Request, code: int, reason: str = "OK", body: str = "") -> None:
        keep = [line for line in request.text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
                if line.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq",
                                                              "record-route")]
        if request.method in ("INVITE", "UPDATE") and not body:
            offered = request.text.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in request.text else ""
            body = self.answer_sdp if (offered.strip() or request.method == "INVITE") else ""
        lines = [f"SIP/2.0 {code} {reason}", *keep, f"Contact: <sip:phone@{self.local_host}:{self.local_port}>"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        via = re.search(r"^Via:.*?(\d+\.\d+\.\d+\.\d+):(\d+)", request.text, re.M | re.I)
        dest = (via.group(1), int(via.group(2))) if via else (self.host, self.port)
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), dest)

    def wait(self, method: str, timeout_s: float = 10.0, final: bool = True,
             retransmit: str | None = None) -> Response | None:
        """The next response to `method` (a final one when `final`); while none came, resend `retransmit`."""
        deadline = time.monotonic() + timeout_s
        next_resend = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            try:
                response = self.responses.get(timeout=0.1)
            except queue.Empty:
                if retransmit and time.monotonic() > next_resend:
                    self._send(retransmit)
                    next_resend = time.monotonic() + 1.0
                continue
            if not (response.header("CSeq") or "").endswith(method):
                continue
            retransmit = None                                  # an answer to it: the transaction is alive
            if final and response.code < 200:
                continue
            if method == "INVITE" and 200 <= response.code < 300:
                self._learn_dialog(response)
            return response
        return None

    def wait_invite_final(self, timeout_s: float = 10.0) -> Response | None:
        return self.wait("INVITE", timeout_s, retransmit=getattr(self, "_invite_text", None))

    def _learn_dialog(self, response: Response) -> None:
        tag = re.search(r"tag=([^;\s>]+)", response.header("To") or "")
        self.to_tag = tag.group(1) if tag else self.to_tag
        contact = re.search(r"<([^>]+)>", response.header("Contact") or "")
        if contact:
            self.remote_target = contact.group(1)
        rr = re.findall(r"^Record-Route:\s*(.*?)\r?$", response.text, re.M | re.I)
        if rr:
            self.route = [r.strip() for line in reversed(rr) for r in reversed(line.split(","))]
        body = response.text.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in response.text else ""
        media = RemoteMedia.parse(body)
        if media is not None:
            self.remote = media

    def wait_request(self, method: str, timeout_s: float = 10.0, since: int = 0) -> Request | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [r for r in self.requests[since:] if r.method == method]
            if found:
                return found[0]
            time.sleep(0.05)
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> SipDialog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
