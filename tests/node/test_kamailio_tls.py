"""SIP over TLS at the front door (sip.tls, veratur/kamailio_tls.py) with a real Kamailio and its tls module.

sipp here is built without TLS (`sipp -v`: SIPp v3.6.1-SCTP-PCAP-RTPSTREAM), so the trunk is a Python `ssl` client
that checks the front door's certificate (the self-signed one made at first start) and speaks SIP over that one
connection: OPTIONS answered by the front door, then a call relayed to a real pjsua2 worker over UDP on
loopback, answered, ACKed and hung up along the route set (Kamailio's double Record-Route: the TLS side carries
transport=tls). Off by default: the shipped config generates no TLS at all."""
from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import re
import shutil
import socket
import ssl
import uuid
from pathlib import Path

import pytest

from foundation.config import ConfigError, Settings, load_settings
from ivr.sip.edge import EdgeConfig, SipEdge
from tests.node.conftest import HOST, free_port_block, run_kamailio, write_settings
from veratur import kamailio

pytestmark = [pytest.mark.sip, pytest.mark.timeout(120)]

needs_tls_module = pytest.mark.skipif(
    not any(Path(d, "tls.so").exists() for d in ("/usr/lib/x86_64-linux-gnu/kamailio/modules",
                                                 "/usr/lib/kamailio/modules")) or shutil.which("openssl") is None,
    reason="Kamailio's tls.so (Debian kamailio-tls-modules, installed by scripts/setup.sh) or openssl missing")


class TlsSip:
    """One TLS connection to the front door, verified against `cafile`; reads SIP messages off the stream."""

    def __init__(self, port: int, cafile: Path, client_cert: tuple[Path, Path] | None = None) -> None:
        ctx = ssl.create_default_context(cafile=str(cafile))      # verifies the chain and the IP in the SAN
        if client_cert is not None:
            ctx.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
        raw = socket.create_connection((HOST, port), timeout=5)
        self.sock = ctx.wrap_socket(raw, server_hostname=HOST)
        self.local = self.sock.getsockname()
        self.buf = b""

    def send(self, text: str) -> None:
        self.sock.sendall(text.replace("\n", "\r\n").encode())

    def read(self, timeout_s: float = 5.0) -> tuple[str, dict[str, list[str]], str]:
        """(first line, headers lower-cased -> values, body) of the next message."""
        self.sock.settimeout(timeout_s)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("front door closed the TLS connection")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        length = int(headers.get("content-length", ["0"])[0])
        while len(self.buf) < length:
            self.buf += self.sock.recv(65536)
        body, self.buf = self.buf[:length].decode(), self.buf[length:]
        return lines[0], headers, body

    def final(self, timeout_s: float = 10.0) -> tuple[str, dict[str, list[str]], str]:
        """The next final response (provisional ones and stray requests skipped)."""
        while True:
            first, headers, body = self.read(timeout_s)
            if first.startswith("SIP/2.0 ") and not first.startswith("SIP/2.0 1"):
                return first, headers, body

    def close(self) -> None:
        self.sock.close()


def tls_settings(tmp_path: Path) -> tuple[Settings, int]:
    tls_port = free_port_block(1)
    _, settings = write_settings(tmp_path, sip={"workers": 1, "transports": ["udp"],
                                                "tls": {"enabled": True, "port": tls_port}})
    return settings, tls_port


def test_tls_is_off_by_default_and_checked(tmp_path: Path) -> None:
    shipped = load_settings()
    assert shipped.sip.tls.enabled is False
    paths = kamailio.KamailioPaths.for_settings(shipped.model_copy(update={"data_dir": tmp_path}))
    text = kamailio.render_config(shipped, paths, module_dir="/nowhere")
    # no module, no enable_tls, no TLS listener (comments may name the transport: only directives count)
    directives = [line.split("#", 1)[0] for line in text.lower().splitlines()]
    assert not [d for d in directives if re.search(r"tls\.so|enable_tls|listen\s*=\s*tls:|modparam\(\"tls\"", d)]
    with pytest.raises(ConfigError, match="both certificate and private_key"):
        write_settings(tmp_path, sip={"tls": {"enabled": True, "certificate": "/etc/x.crt"}})
    with pytest.raises(ConfigError, match="needs ca_list"):
        write_settings(tmp_path, sip={"tls": {"enabled": True, "require_client_certificate": True}})
    with pytest.raises(ConfigError, match="is the SIP port or a worker's port"):
        write_settings(tmp_path, sip={"port": 6000, "worker_base_port": 6001, "workers": 2,
                                      "tls": {"enabled": True, "port": 6002}})


@needs_tls_module
async def test_options_and_a_call_over_tls_reach_a_worker(tmp_path: Path) -> None:
    settings, tls_port = tls_settings(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    async with run_kamailio(settings, logs) as k:
        cert = k.paths.cfg.parent / "tls" / "veratur-sip.crt"
        key = k.paths.cfg.parent / "tls" / "veratur-sip.key"
        assert cert.exists() and key.stat().st_mode & 0o077 == 0           # the key is the node's alone
        assert f"listen=tls:{HOST}:{tls_port}" in k.paths.cfg.read_text()
        first_cert = cert.read_bytes()
        kamailio.write_config(settings)                                     # a restart keeps the same pair
        assert cert.read_bytes() == first_cert

        # a worker: a real pjsua2 edge on the worker port, answering every call
        config = dataclasses.replace(EdgeConfig.from_settings(settings, settings.sip.worker_port(0), "tls/w0"),
                                     transports=("udp",), randomize_rtp_port=True,
                                     allowed_peers=(ipaddress.ip_network("127.0.0.0/8"),))
        answered: list[str] = []
        edge = SipEdge(config, on_call=lambda leg: answered.append(leg.info.call_id))
        await edge.start()
        trunk = await asyncio.to_thread(TlsSip, tls_port, cert)
        try:
            lhost, lport = trunk.local[0], trunk.local[1]
            via = f"Via: SIP/2.0/TLS {lhost}:{lport};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport"
            trunk.send(f"OPTIONS sip:{HOST}:{tls_port};transport=tls SIP/2.0\n{via}\nMax-Forwards: 70\n"
                       f"From: <sip:trunk@{lhost}>;tag=o1\nTo: <sip:{HOST}>\nCall-ID: {uuid.uuid4().hex}\n"
                       f"CSeq: 1 OPTIONS\nContent-Length: 0\n\n")
            first, headers, _ = await asyncio.to_thread(trunk.final)
            assert first == "SIP/2.0 200 OK" and "INVITE" in headers["allow"][0]

            # the dispatcher probes the worker before it takes calls: retry the INVITE until it is answered
            call_id = f"{uuid.uuid4().hex}@tls-trunk"
            sdp = (f"v=0\no=trunk 1 1 IN IP4 {HOST}\ns=-\nc=IN IP4 {HOST}\nt=0 0\n"
                   f"m=audio {free_port_block(2, 40000, 50000)} RTP/AVP 0\na=rtpmap:0 PCMU/8000\n")
            body = sdp.replace("\n", "\r\n")
            first = ""
            for cseq in range(1, 11):
                branch = f"z9hG4bK{uuid.uuid4().hex[:12]}"
                trunk.send(f"INVITE sip:2281234567@{HOST}:{tls_port};transport=tls SIP/2.0\n"
                           f"Via: SIP/2.0/TLS {lhost}:{lport};branch={branch};rport\nMax-Forwards: 70\n"
                           f"From: <sip:2281234567@{lhost}>;tag=t{cseq}\nTo: <sip:portal@{HOST}>\n"
                           f"Call-ID: {call_id}-{cseq}\nCSeq: {cseq} INVITE\n"
                           f"Contact: <sip:trunk@{lhost}:{lport};transport=tls>\nContent-Type: application/sdp\n"
                           f"Content-Length: {len(body)}\n\n" + sdp)
                first, headers, _ = await asyncio.to_thread(trunk.final, 15.0)
                if first.startswith("SIP/2.0 200"):
                    break
                # a refusal (503 while the worker is not yet in rotation) is ACKed like any final answer
                trunk.send(f"ACK sip:2281234567@{HOST}:{tls_port};transport=tls SIP/2.0\n"
                           f"Via: SIP/2.0/TLS {lhost}:{lport};branch={branch};rport\nMax-Forwards: 70\n"
                           f"From: <sip:2281234567@{lhost}>;tag=t{cseq}\nTo: {headers['to'][0]}\n"
                           f"Call-ID: {call_id}-{cseq}\nCSeq: {cseq} ACK\nContent-Length: 0\n\n")
                await asyncio.sleep(1.0)
            assert first.startswith("SIP/2.0 200"), (first, k.log_text()[-1500:])
            record_route = [r for value in headers["record-route"] for r in value.split(",")]
            assert any("transport=tls" in r for r in record_route), record_route   # the TLS side of the double RR
            route = ", ".join(reversed([r.strip() for r in record_route]))
            contact = re.search(r"<([^>]+)>", headers["contact"][0]).group(1)     # type: ignore[union-attr]
            dialog = (f"From: <sip:2281234567@{lhost}>;tag=t{cseq}\nTo: {headers['to'][0]}\n"
                      f"Call-ID: {call_id}-{cseq}\nRoute: {route}\nMax-Forwards: 70\n")
            trunk.send(f"ACK {contact} SIP/2.0\nVia: SIP/2.0/TLS {lhost}:{lport};branch=z9hG4bK{uuid.uuid4().hex[:12]}"
                       f";rport\n{dialog}CSeq: {cseq} ACK\nContent-Length: 0\n\n")
            await asyncio.sleep(1.0)
            assert answered and answered[-1] == f"{call_id}-{cseq}"             # the worker has the call
            trunk.send(f"BYE {contact} SIP/2.0\nVia: SIP/2.0/TLS {lhost}:{lport};branch=z9hG4bK{uuid.uuid4().hex[:12]}"
                       f";rport\n{dialog}CSeq: {cseq + 1} BYE\nContent-Length: 0\n\n")
            first, _, _ = await asyncio.to_thread(trunk.final)
            assert first == "SIP/2.0 200 OK"                                     # the BYE went the route set
        finally:
            trunk.close()
            await edge.stop(0)
        log = k.log_text()
    assert "ERROR" not in "\n".join(line for line in log.splitlines() if "tls" in line.lower())


def options(port: int) -> str:
    return (f"OPTIONS sip:{HOST}:{port};transport=tls SIP/2.0\nVia: SIP/2.0/TLS {HOST}:1;branch=z9hG4bK{uuid.uuid4().hex}"
            f"\nFrom: <sip:t@{HOST}>;tag=1\nTo: <sip:{HOST}>\nCall-ID: {uuid.uuid4().hex}\nCSeq: 1 OPTIONS\n"
            f"Content-Length: 0\n\n")


@needs_tls_module
async def test_require_client_certificate_refuses_a_trunk_without_one(tmp_path: Path) -> None:
    """Mutual TLS: a trunk presenting a certificate from ca_list gets answers; one presenting none gets no session."""
    settings0, _ = tls_settings(tmp_path)
    async with run_kamailio(settings0, tmp_path) as k0:            # a certificate pair to play the trunk's
        trunk_cert = k0.paths.cfg.parent / "tls" / "veratur-sip.crt"
        trunk_key = k0.paths.cfg.parent / "tls" / "veratur-sip.key"
    tls_port = free_port_block(1)
    (tmp_path / "mtls").mkdir()
    _, settings = write_settings(tmp_path / "mtls", sip={"workers": 1, "transports": ["udp"], "tls": {
        "enabled": True, "port": tls_port, "ca_list": str(trunk_cert), "require_client_certificate": True}})
    async with run_kamailio(settings, tmp_path / "mtls") as k:
        cert = k.paths.cfg.parent / "tls" / "veratur-sip.crt"
        assert "require_certificate = yes" in (k.paths.cfg.parent / "tls" / "tls.cfg").read_text()
        trusted = await asyncio.to_thread(TlsSip, tls_port, cert, (trunk_cert, trunk_key))
        try:
            trusted.send(options(tls_port))
            first, _, _ = await asyncio.to_thread(trusted.final)
            assert first == "SIP/2.0 200 OK"
        finally:
            trusted.close()
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            anonymous = await asyncio.to_thread(TlsSip, tls_port, cert)
            anonymous.send(options(tls_port))
            await asyncio.to_thread(anonymous.read, 5.0)        # TLS 1.3 reports the refusal on the first read


@needs_tls_module
async def test_registration_over_tls_at_a_real_registrar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sip.registrations[].transport tls: the node REGISTERs over TLS (digest auth) at a real registrar
    (testkit.pbx with a TLS listener), verifying the registrar's certificate through sip.tls.ca_list."""
    from testkit.pbx import run_pbx
    from veratur import registrations

    monkeypatch.setenv("VERATUR_TEST_PBX_PW", "s3cret-pbx")
    pbx_port, pbx_tls = free_port_block(1), free_port_block(1)
    async with run_pbx(tmp_path, pbx_port, {"veratur": "s3cret-pbx"}, tls_port=pbx_tls) as pbx:
        pbx_cert = tmp_path / "pbx" / "tls" / "veratur-sip.crt"
        _, settings = write_settings(tmp_path, sip={
            "workers": 1, "registration_check_s": 2, "registration_retry_s": 6,
            "tls": {"enabled": True, "port": free_port_block(1), "ca_list": str(pbx_cert)},
            "registrations": [{"name": "pbx", "registrar": f"sip:{HOST}:{pbx_tls}", "user": "veratur",
                               "password_env": "VERATUR_TEST_PBX_PW", "expires": 30, "transport": "tls"}]})
        logs = tmp_path / "logs"
        logs.mkdir()
        async with run_kamailio(settings, logs) as k:
            assert "verify_certificate = yes" in (k.paths.cfg.parent / "tls" / "tls.cfg").read_text()
            monitor = registrations.RegistrationMonitor(settings)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while True:
                for line in k.log.read_bytes().splitlines():
                    monitor.note_log_line(line)
                await monitor.poll(k.rpc)
                state = monitor.states["pbx"]
                if state.state == "registered" or loop.time() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert state.state == "registered", (state, k.log_text()[-1500:], pbx.log_text()[-1500:])
            dump = await pbx.contacts()
            assert "veratur" in dump and f"tls:{HOST}:{pbx_tls}" in dump, dump    # received on the TLS socket
    (tmp_path / "x").mkdir()
    with pytest.raises(ConfigError, match="use transport tls"):
        write_settings(tmp_path / "x", sip={"registrations": [{
            "name": "pbx", "registrar": f"sip:{HOST}:5061", "user": "v", "password_env": "P", "transport": "tls"}]})


# ------------------------------------------------------------------ outbound calls to a trunk over TLS
def outbound_tls_settings(tmp_path: Path, trunk_port: int, ca_list: Path | None) -> Settings:
    tls = {"enabled": True, "port": free_port_block(1), **({"ca_list": str(ca_list)} if ca_list else {})}
    _, settings = write_settings(tmp_path, sip={"workers": 1, "transports": ["udp"], "tls": tls},
                                 outbound={"enabled": True, "allowed_prefixes": ["228"],
                                           "route": f"sip:{HOST}:{trunk_port}", "transport": "tls"},
                                 asr={"model": "ko-test"})
    return settings


def trunk_pair(directory: Path) -> tuple[Path, Path]:
    """A trunk's own certificate (self-signed, SAN 127.0.0.1), made like the node's."""
    from veratur.kamailio_tls import self_signed
    return self_signed(directory, HOST)


async def place_callback(settings: Settings, tmp_path: Path, converse):  # type: ignore[no-untyped-def]
    """One callback job on a fresh database, dialled by a real Dialer on a real pjsua2 edge at the worker port
    (the dispatcher destination the front door takes outbound calls from). Returns (outcome, job view)."""
    from datetime import UTC, datetime

    from case_bridge.service import CaseService
    from ivr.dialer import Dialer
    from testkit.db import TEST_TRAMITES, migrated_sqlite

    service = CaseService.from_url(migrated_sqlite(tmp_path / "d.db"))
    try:
        service.upsert_tramites(TEST_TRAMITES)
        now = datetime(2026, 12, 2, 16, 0, tzinfo=UTC)
        folio = service.open_case("licencia_conducir", "phone").case.folio
        service.request_callback(folio, "2281234567", allowed_prefixes=["228"], now=now)
        config = dataclasses.replace(EdgeConfig.from_settings(settings, settings.sip.worker_port(0), "tls/w0"),
                                     transports=("udp",), randomize_rtp_port=True,
                                     allowed_peers=(ipaddress.ip_network("127.0.0.0/8"),))
        edge = SipEdge(config)
        await edge.start()
        try:
            dialer = Dialer(service, settings, "w0", edge, converse, capacity=4, active_calls=lambda: 0,
                            clock=lambda: now, ring_timeout_s=15)
            assert dialer.token                                   # behind the front door, with its token
            [task] = await dialer.run_once()
            outcome = await asyncio.wait_for(task, 40)
        finally:
            await edge.stop(0)
        [job] = service.callbacks_for(folio)
        return outcome, job
    finally:
        service.close()


def test_outbound_transport_is_validated(tmp_path: Path) -> None:
    out = {"enabled": True, "route": f"sip:{HOST}:5061", "transport": "tls"}
    with pytest.raises(ConfigError, match=r"outbound.transport tls: set sip.tls.enabled"):
        write_settings(tmp_path, outbound=out)
    with pytest.raises(ConfigError, match=r"outbound.transport.*Input should be 'udp', 'tcp' or 'tls'"):
        write_settings(tmp_path, outbound={**out, "transport": "sctp"})
    with pytest.raises(ConfigError, match=r"use_kamailio must be true"):
        write_settings(tmp_path, sip={"use_kamailio": False, "tls": {"enabled": True, "port": free_port_block(1)}},
                       outbound=out)
    settings = outbound_tls_settings(tmp_path, 5999, None)
    paths = kamailio.KamailioPaths.for_settings(settings)
    text = kamailio.render_config(settings, paths, module_dir="/nowhere")
    assert f'$ru = "sip:" + $var(number) + "@{HOST}:5999;transport=tls";' in text
    # unset: udp to a plain route (no transport parameter, as before) ...
    _, plain = write_settings(tmp_path, outbound={"enabled": True, "route": f"sip:{HOST}:5999"})
    assert plain.outbound_transport == "udp"
    assert f'"@{HOST}:5999";' in kamailio.render_config(plain, paths, module_dir="/nowhere")
    # ... and the registration's transport when the route is its registrar
    _, via_reg = write_settings(tmp_path, outbound={"enabled": True}, sip={
        "tls": {"enabled": True, "port": free_port_block(1)},
        "registrations": [{"name": "pbx", "registrar": f"sip:{HOST}:5998", "user": "v", "password_env": "P",
                           "transport": "tls"}]})
    assert via_reg.outbound_transport == "tls"


@needs_tls_module
@pytest.mark.parametrize("answer_delay_s", [0.0, 2.0], ids=["prompt", "slow_trunk"])
async def test_outbound_call_to_a_trunk_over_tls(tmp_path: Path, answer_delay_s: float) -> None:
    """A callback placed by a worker leaves the front door over TLS (outbound.transport tls), the front door checks
    the trunk's certificate against sip.tls.ca_list, the trunk (Python ssl UAS) answers, gets ACK and BYE. A trunk
    that takes 2 s to answer at all is still answered (route[OUTBOUND]'s fr_timer is 4 s, not the workers' 1 s)."""
    from testkit.tls_trunk import tls_trunk

    trunk_cert, trunk_key = trunk_pair(tmp_path / "trunk")
    trunk_port = free_port_block(1)
    settings = outbound_tls_settings(tmp_path, trunk_port, trunk_cert)
    logs = tmp_path / "logs"
    logs.mkdir()
    async with tls_trunk(trunk_cert, trunk_key, trunk_port) as trunk, run_kamailio(settings, logs) as k:
        trunk.answer_delay_s = answer_delay_s
        tls_cfg = (k.paths.cfg.parent / "tls" / "tls.cfg").read_text()
        assert re.search(r"\[client:default\][^\[]*verify_certificate = yes", tls_cfg), tls_cfg
        answered: list[str] = []

        async def converse(leg, view) -> str:  # type: ignore[no-untyped-def]
            answered.append(leg.info.call_id)
            await trunk.wait_for("ACK", 10)
            await asyncio.sleep(1.0)                      # media flows a moment
            await leg.hangup()
            await leg.wait_ended(5)
            return "answered"

        outcome, job = await place_callback(settings, tmp_path, converse)
        assert outcome == "answered", (job.detail, trunk.handshake_errors, k.log_text()[-2000:])
        bye = await trunk.wait_for("BYE", 10)
        log = k.log_text()
    assert job.state == "done" and job.attempts == 1
    invite = await trunk.wait_for("INVITE", 0)
    assert invite.uri == f"sip:2281234567@{HOST}:{trunk_port};transport=tls"
    assert invite.header("Via")[0].startswith("SIP/2.0/TLS ")        # the front door's hop is TLS
    assert not invite.header("X-Veratur-Outbound")                     # the token never leaves the node
    assert invite.header("X-Veratur-Callback") == [str(job.id)]
    assert any("transport=tls" in rr for rr in invite.header("Record-Route"))
    assert bye.header("Call-ID") == invite.header("Call-ID") and answered
    assert trunk.handshake_errors == [] and trunk.rtp_packets > 0
    assert "event=outbound_relayed transport=tls" in log


@needs_tls_module
async def test_outbound_call_to_a_trunk_whose_certificate_fails_verification(tmp_path: Path) -> None:
    from testkit.tls_trunk import tls_trunk

    trusted_cert, _ = trunk_pair(tmp_path / "trusted")          # the CA the node is told to trust
    wrong_cert, wrong_key = trunk_pair(tmp_path / "trunk")      # what the trunk presents: not from ca_list
    trunk_port = free_port_block(1)
    settings = outbound_tls_settings(tmp_path, trunk_port, trusted_cert)
    logs = tmp_path / "logs"
    logs.mkdir()
    async with tls_trunk(wrong_cert, wrong_key, trunk_port) as trunk, run_kamailio(settings, logs) as k:
        async def converse(leg, view) -> str:  # type: ignore[no-untyped-def]
            raise AssertionError("a trunk with an unverified certificate must never get the call")

        outcome, job = await place_callback(settings, tmp_path, converse)
        error = await trunk.wait_handshake_error(5)
        assert (await k.rpc("core.uptime")).strip()                 # the front door is still up
        log = k.log_text()
    # the node refused the trunk's certificate: the trunk saw the handshake end with the node's alert, no SIP
    assert "UNKNOWN_CA" in error and trunk.requests == [], (error, trunk.requests)
    assert "certificate verify failed" in log and "event=outbound_unreachable transport=tls" in log
    # a failed attempt with the reason (not a no-answer), retried at the first spacing like any failure
    assert outcome == "failed" and job.last_outcome == "failed", (outcome, job)
    assert job.detail == "SIP 503 Trunk not reached over TLS (connection, certificate, or no answer in 4 s)", job.detail
    assert job.state == "pending" and job.attempts == 1


@needs_tls_module
async def test_outbound_call_to_a_trunk_that_is_down_fails_with_the_reason(tmp_path: Path) -> None:
    """Nothing listens on the trunk's TLS port: Kamailio's relay fails at once (477), a failed attempt with that
    reason, the front door still up."""
    cert, _ = trunk_pair(tmp_path / "trunk")
    settings = outbound_tls_settings(tmp_path, free_port_block(1), cert)
    logs = tmp_path / "logs"
    logs.mkdir()
    async with run_kamailio(settings, logs) as k:
        async def converse(leg, view) -> str:  # type: ignore[no-untyped-def]
            raise AssertionError("nobody can answer")

        outcome, job = await place_callback(settings, tmp_path, converse)
        assert (await k.rpc("core.uptime")).strip()
    assert outcome == "failed" and job.state == "pending" and job.attempts == 1, job
    assert job.detail.startswith("SIP 477 "), job.detail
