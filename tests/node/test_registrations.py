"""Registration of the node at a PBX (`sip.registrations`, Kamailio's uac module in the front door) against a
real registrar: a second Kamailio (registrar + usrloc + auth_db over db_text, testkit.pbx) on its own ports."""
from __future__ import annotations

import asyncio
import os
import re
import stat
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from foundation.config import ConfigError, Settings
from testkit.node import run_kamailio, run_node, start_calls, write_settings
from testkit.pbx import run_pbx
from testkit.ports import free_port_block
from testkit.sipp import SCENARIOS, screen_counts
from testkit.worker import parse_metrics
from veratur import kamailio, registrations
from veratur.webapp import build_app

PASSWORD = "s3cret-pbx"
CHECK_S = 2          # uac timer in these tests (the refresh and the retry happen on its ticks)
RETRY_S = 6
EXPIRES_S = 10


def reg_settings(tmp_path: Path, pbx_port: int, *, env_var: str = "VERATUR_TEST_PBX_PW",
                 outbound: dict[str, object] | None = None, **sip: object) -> tuple[Path, Settings]:
    return write_settings(tmp_path, outbound=outbound or {}, sip={
        "workers": 1, "registration_check_s": CHECK_S, "registration_retry_s": RETRY_S,
        "registrations": [{"name": "pbx", "registrar": f"sip:127.0.0.1:{pbx_port}", "user": "veratur",
                           "password_env": env_var, "expires": EXPIRES_S}], **sip},
        asr={"model": "ko-test"})


async def wait_state(k, monitor: registrations.RegistrationMonitor, state: str, timeout_s: float
                     ) -> registrations.RegistrationState:
    deadline = time.monotonic() + timeout_s
    while True:
        for line in k.log.read_bytes().splitlines():
            monitor.note_log_line(line)
        await monitor.poll(k.rpc)
        current = monitor.states["pbx"]
        if current.state == state or time.monotonic() > deadline:
            assert current.state == state, (current, k.log_text()[-2000:])
            return current
        await asyncio.sleep(0.5)


# ------------------------------------------------------------------ units (no SIP)
def test_password_sources_and_validation(tmp_path: Path) -> None:
    base = {"name": "pbx", "registrar": "sip:pbx.example.org:5060", "user": "5551234"}
    with pytest.raises(ValueError, match="exactly one of password_env and password_file"):
        Settings.model_validate({"sip": {"registrations": [base]}})
    with pytest.raises(ValueError, match="not sip:HOST"):
        Settings.model_validate({"sip": {"registrations": [{**base, "registrar": "sip:u@h;x=1",
                                                            "password_env": "P"}]}})
    with pytest.raises(ValueError, match="unique"):
        Settings.model_validate({"sip": {"registrations": [{**base, "password_env": "P"}] * 2}})
    reg = Settings.model_validate({"sip": {"registrations": [{**base, "password_env": "P"}]}}).sip.registrations[0]
    assert reg.password({"P": "x:y"}) == "x:y"
    with pytest.raises(ConfigError, match=r"password_env: \$P is not set"):
        reg.password({})
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    reg = Settings.model_validate({"sip": {"registrations": [{**base, "password_file": str(secret)}]}}
                                  ).sip.registrations[0]
    assert reg.password({}) == "from-file"


def test_table_is_private_and_the_config_holds_no_password(tmp_path: Path) -> None:
    _, settings = reg_settings(tmp_path, 5999)
    os.environ["VERATUR_TEST_PBX_PW"] = "p:w\\d"
    try:
        paths = kamailio.write_config(settings)
    finally:
        del os.environ["VERATUR_TEST_PBX_PW"]
    table = paths.db_dir / "uacreg"
    assert stat.S_IMODE(table.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.db_dir.stat().st_mode) == 0o700
    row = table.read_text().splitlines()[1]
    assert "p\\:w\\\\d" in row                               # db_text escaping of ':' and '\'
    assert "p:w" not in paths.cfg.read_text()
    assert 'loadmodule "uac.so"' in paths.cfg.read_text()
    # The uac timer re-sends what is due within interval + 3 s: the margin keeps failed attempts RETRY_S apart.
    assert f'"reg_retry_interval", {RETRY_S + CHECK_S + 3}' in paths.cfg.read_text()
    (tmp_path / "plain").mkdir()
    _, plain = write_settings(tmp_path / "plain")
    assert "uac.so" not in kamailio.render_config(plain, kamailio.KamailioPaths.for_settings(plain), "/x")


def test_missing_password_stops_config_generation(tmp_path: Path) -> None:
    _, settings = reg_settings(tmp_path, 5999, env_var="VERATUR_TEST_UNSET_PW")
    with pytest.raises(ConfigError, match="VERATUR_TEST_UNSET_PW is not set"):
        kamailio.write_config(settings)


def test_reg_dump_parsing_and_failure_attribution(tmp_path: Path) -> None:
    _, settings = reg_settings(tmp_path, 5999)
    dump = ("{\n\tl_uuid: pbx\n\tauth_password: secret\n\tflags: 20\n\ttimer_expires: 1010\n\treg_init: 990\n}\n")
    states = registrations.parse_reg_dump(dump, now=1000)
    assert states == [registrations.RegistrationState("pbx", "registered", 20, 10, 990)]
    assert registrations.parse_reg_dump(dump.replace("20", "16"), now=1000)[0].state == "failed"
    monitor = registrations.RegistrationMonitor(settings)
    monitor.note_log_line(b" 1(9) ERROR: uac [uac_reg.c:933]: uac_reg_tm_callback(): authentication failed for <pbx>")
    monitor.note_log_line(b"WARNING: <script>: event=registration_reply status=403 reason=Forbidden "
                          b"registrar=127.0.0.1:5999")
    snap = monitor.snapshot()["pbx"]
    assert snap["failed_attempts"] == 2 and snap["error"] == "registrar answered 403 Forbidden"
    assert "secret" not in repr(monitor.snapshot())


# ------------------------------------------------------------------ against a real registrar
@pytest.mark.sip
async def test_registers_refreshes_and_comes_back_after_a_registrar_restart(tmp_path: Path, logs: Path,
                                                                             monkeypatch: pytest.MonkeyPatch
                                                                             ) -> None:
    monkeypatch.setenv("VERATUR_TEST_PBX_PW", PASSWORD)
    pbx_port = free_port_block(1)
    _, settings = reg_settings(tmp_path, pbx_port)
    monitor = registrations.RegistrationMonitor(settings)
    async with run_pbx(tmp_path, pbx_port, {"veratur": PASSWORD}) as pbx:
        async with run_kamailio(settings, logs) as k:
            await wait_state(k, monitor, "registered", 10)
            contacts = await pbx.contacts()
            assert f"sip:pbx@127.0.0.1:{settings.sip.port}" in contacts, contacts
            # Refreshed before it expires: still registered after twice the expiry.
            await asyncio.sleep(2 * EXPIRES_S)
            assert (await wait_state(k, monitor, "registered", 1)).expires_in_s is not None
            assert pbx.log_text().count("pbx: registered user=veratur") >= 3
            # The registrar restarts and forgets every contact (usrloc in memory) ...
            pbx.proc.terminate()
            pbx.proc.wait(10)
            async with run_pbx(tmp_path, pbx_port, {"veratur": PASSWORD}) as pbx2:
                # ... the next refresh (at most EXPIRES_S later) registers the node there again.
                deadline = time.monotonic() + EXPIRES_S + CHECK_S + 5
                while "sip:pbx@" not in await pbx2.contacts() and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.5)
                assert "sip:pbx@" in await pbx2.contacts(), pbx2.log_text()[-2000:]
            assert "secret" not in k.log_text() and PASSWORD not in k.log_text()


@pytest.mark.sip
async def test_wrong_password_is_a_clear_state_without_a_retry_storm(tmp_path: Path, logs: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERATUR_TEST_PBX_PW", "not-the-password")
    pbx_port = free_port_block(1)
    _, settings = reg_settings(tmp_path, pbx_port)
    monitor = registrations.RegistrationMonitor(settings)
    async with run_pbx(tmp_path, pbx_port, {"veratur": PASSWORD}) as pbx:
        async with run_kamailio(settings, logs) as k:
            await asyncio.sleep(0.5)
            start = time.monotonic()
            window_s = 3 * RETRY_S
            await asyncio.sleep(window_s)
            state = await wait_state(k, monitor, "failed", 1)
            assert state.state == "failed"
            snap = monitor.snapshot()["pbx"]
            assert snap["error"] == "authentication failed (wrong user or password)", snap
            attempts = k.log_text().count("authentication failed for <pbx>")
            elapsed = time.monotonic() - start + 0.5
            # One attempt at start, then one per RETRY_S: no storm (with the uac default it retried every tick).
            assert 2 <= attempts <= elapsed / RETRY_S + 1, (attempts, elapsed)
            # Each attempt is one unauthenticated and one authenticated REGISTER at the registrar.
            assert pbx.log_text().count("register challenged") <= 2 * attempts + 2
            assert k.proc.poll() is None
            assert "not-the-password" not in k.log_text()


@pytest.mark.sip
@pytest.mark.slow
def test_call_through_the_pbx_reaches_the_node_and_is_answered(tmp_path: Path, logs: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`veratur up` (1 real worker) registers at the PBX; a sipp caller dials the registered user at the PBX;
    the call is relayed to the node's front door, answered by the worker, ended by the caller. /healthz and the
    supervisor's metrics show the registration."""
    monkeypatch.setenv("VERATUR_TEST_PBX_PW", PASSWORD)
    pbx_port = free_port_block(1)
    config, settings = reg_settings(tmp_path, pbx_port)

    async def with_pbx() -> None:
        async with run_pbx(tmp_path, pbx_port, {"veratur": PASSWORD}) as pbx:
            await asyncio.to_thread(node_part, pbx.port)

    def node_part(port: int) -> None:
        with run_node(config, settings, "--no-dialogue", "--no-web") as node:
            node.wait_for(r"Registration: pbx registered at sip:127\.0\.0\.1", 20)
            assert "Registers: pbx at" in node.output()
            # The PBX relays a call for the registered user to our Contact (the front door).
            pbx_settings = settings.model_copy(update={"sip": settings.sip.model_copy(update={"port": port})})
            calls = start_calls(pbx_settings, SCENARIOS / "uac_call.xml", logs, "via-pbx", 2, 1500, 2)
            assert calls.wait(40) == 0, (logs / "via-pbx.log").read_text()[-3000:]
            assert screen_counts(logs / "via-pbx.log") == (2, 0)
            metrics = parse_metrics(_get(f"http://127.0.0.1:{settings.metrics.port}/metrics"))
            assert metrics['veratur_sip_registration_up{registration="pbx"}'] == 1.0
            state = registrations.read_state_file(settings, 30)
            assert state and state["registrations"]["pbx"]["state"] == "registered"  # type: ignore[index]
            body = asyncio.run(_healthz(settings))
            assert body["registrations"]["pbx"]["state"] == "registered" and body["status"] == "ok", body
            assert PASSWORD not in node.output()
            assert re.search(r"event=call_dispatched", node.output())

    asyncio.run(with_pbx())


def _get(url: str) -> str:
    import urllib.request
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


async def _healthz(settings: Settings) -> dict:  # type: ignore[type-arg]
    app = build_app(settings, secret=b"k" * 32)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/healthz")
        return await resp.json()


class _Garbage(asyncio.DatagramProtocol):
    """A 'registrar' that answers every datagram with garbage: a truncated status line, then random bytes."""

    def __init__(self) -> None:
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        self.transport.sendto(b"SIP/2.0 2", addr)                          # type: ignore[attr-defined]
        self.transport.sendto(os.urandom(300), addr)                       # type: ignore[attr-defined]
        self.transport.sendto(b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n", addr)  # type: ignore[attr-defined]


@pytest.mark.sip
async def test_a_registrar_answering_garbage_leaves_a_clear_state_and_no_crash(
        tmp_path: Path, logs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERATUR_TEST_PBX_PW", PASSWORD)
    port = free_port_block(1)
    _, settings = reg_settings(tmp_path, port)
    monitor = registrations.RegistrationMonitor(settings)
    loop = asyncio.get_running_loop()
    transport, garbage = await loop.create_datagram_endpoint(_Garbage, local_addr=("127.0.0.1", port))
    try:
        async with run_kamailio(settings, logs) as k:
            await asyncio.sleep(RETRY_S + 3)
            state = await wait_state(k, monitor, "failed", 15)
            assert state.state == "failed"
            assert monitor.snapshot()["pbx"]["error"] == registrations.NO_REPLY
            assert 1 <= garbage.received <= 12, garbage.received    # retransmissions of a few attempts, no storm
            assert k.proc.poll() is None
            assert (await k.rpc("core.uptime")).strip()            # still answering its control socket
    finally:
        transport.close()


@pytest.mark.sip
async def test_outbound_call_through_the_registrar_answers_its_challenge(tmp_path: Path, logs: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A callback via the trunk we are registered at: the trunk challenges the INVITE (407), the front door
    answers with the registration's credentials (uac_auth, nothing in kamailio.cfg), the phone answers."""
    import dataclasses
    import ipaddress
    from datetime import UTC, datetime

    from case_bridge.service import CaseService
    from ivr.dialer import Dialer
    from ivr.sip.edge import EdgeConfig, SipEdge
    from testkit import sipp as sippkit
    from testkit.db import TEST_TRAMITES, migrated_sqlite
    from testkit.ports import free_udp_port
    from tests.engine.test_dialer import ANSWER_RR, UAS

    monkeypatch.setenv("VERATUR_TEST_PBX_PW", PASSWORD)
    pbx_port, phone_port = free_port_block(1), free_udp_port()
    _, settings = reg_settings(tmp_path, pbx_port, outbound={"enabled": True, "allowed_prefixes": ["228"]})
    service = CaseService.from_url(migrated_sqlite(tmp_path / "d.db"))
    service.upsert_tramites(TEST_TRAMITES)
    now = datetime(2026, 12, 2, 16, 0, tzinfo=UTC)
    folio = service.open_case("licencia_conducir", "phone").case.folio
    service.request_callback(folio, "2281234567", allowed_prefixes=["228"], now=now)
    script = tmp_path / "phone.xml"
    script.write_text(UAS.replace("@ANSWER@", ANSWER_RR))
    try:
        async with run_pbx(tmp_path, pbx_port, {"veratur": PASSWORD}, relay_numbers_to=phone_port) as pbx:
            async with run_kamailio(settings, logs) as k:
                assert PASSWORD not in k.paths.cfg.read_text()
                phone = await sippkit.start_async(script, cwd=tmp_path, port=phone_port, timeout_s=20)
                config = dataclasses.replace(EdgeConfig.from_settings(settings, settings.sip.worker_port(0), "t/w0"),
                                             transports=("udp",), randomize_rtp_port=True,
                                             allowed_peers=(ipaddress.ip_network("127.0.0.0/8"),))
                edge = SipEdge(config)
                await edge.start()

                async def converse(leg, view) -> str:  # type: ignore[no-untyped-def]
                    await asyncio.sleep(0.5)
                    await leg.hangup()
                    await leg.wait_ended(5)
                    return "answered"

                try:
                    dialer = Dialer(service, settings, "w0", edge, converse, capacity=4, active_calls=lambda: 0,
                                    clock=lambda: now, ring_timeout_s=10)
                    [task] = await dialer.run_once()
                    outcome = await asyncio.wait_for(task, 30)
                    code, text = await phone.wait(20)
                finally:
                    phone.kill()
                    await edge.stop(0)
                assert outcome == "answered", (k.log_text()[-2000:], pbx.log_text()[-2000:])
                assert code == 0, text
                assert "event=outbound_authenticated" in k.log_text()
                assert "pbx: outbound call authorized user=veratur" in pbx.log_text()
    finally:
        service.close()
