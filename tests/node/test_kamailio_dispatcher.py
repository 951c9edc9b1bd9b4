"""The generated Kamailio config against real Kamailio, with sipp processes standing in for the pjsua2 workers.

These pin down the dispatcher behaviour (call load, 503 + Retry-After, failover, draining, rate limit, source
check, sanity) independently of the IVR engine; test_node_real_workers.py repeats the core cases with real
`veratur ivr` workers."""
from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest

from testkit.rawsip import RawSip, options
from testkit.sipp import SCENARIOS as SHARED_SCENARIOS
from tests.node.conftest import (
    HOST,
    SCENARIOS,
    free_port_block,
    run_kamailio,
    sipp_binary,
    start_sipp,
    stop_group,
    uas_args,
    wait_options,
    write_settings,
)
from veratur import kamailio

pytestmark = pytest.mark.sip


def start_workers(settings, logs: Path) -> list[subprocess.Popen[bytes]]:
    media = free_port_block(4 * settings.sip.workers, 40000, 50000)
    return [start_sipp(uas_args(settings.sip.worker_port(i), media + 4 * i), logs, f"uas{i}")
            for i in range(settings.sip.workers)]


def uac(settings, logs: Path, name: str, calls: int, hold_ms: int, rate: int, src: str = HOST) -> subprocess.Popen:
    return start_sipp(["-sf", str(SHARED_SCENARIOS / "uac_call.xml"), "-i", src, "-p", str(free_port_block(1)),
                       "-mp", str(free_port_block(4, 40000, 50000)), "-m", str(calls), "-l", str(calls),
                       "-r", str(rate), "-d", str(hold_ms), "-recv_timeout", "15000",
                       f"{HOST}:{settings.sip.port}"], logs, name)


def expect_503(settings, logs: Path) -> str:
    """One INVITE that must get 503 + Retry-After; returns the Retry-After value sipp logged."""
    log = logs / "reject.log"
    done = subprocess.run([sipp_binary(), "-sf", str(SCENARIOS / "uac_expect_503.xml"), "-i", HOST,
                           "-p", str(free_port_block(1)), "-m", "1", "-nostdin", "-timeout", "15",
                           "-recv_timeout", "10000", "-log_file", str(log), "-trace_logs",
                           f"{HOST}:{settings.sip.port}"], capture_output=True, cwd=logs, timeout=30)
    assert done.returncode == 0, done.stdout.decode(errors="replace")[-2000:]
    match = re.search(r"retry_after=(\d+)", log.read_text())
    assert match, log.read_text()
    return match.group(1)


async def wait_loads(k, expected: dict[str, int], timeout_s: float = 10.0) -> dict[str, tuple[str, int]]:
    states: dict[str, tuple[str, int]] = {}
    for _ in range(int(timeout_s / 0.2)):
        states = await kamailio.worker_states(k.paths)
        if {duid: load for duid, (_, load) in states.items()} == expected:
            return states
        await asyncio.sleep(0.2)
    raise AssertionError(f"dispatcher loads {states} never became {expected}")


async def test_full_node_answers_503_with_retry_after_and_frees_slots(tmp_path: Path, logs: Path) -> None:
    _, settings = write_settings(tmp_path, sip={"workers": 2})
    workers = start_workers(settings, logs)
    try:
        async with run_kamailio(settings, logs) as k:
            calls = uac(settings, logs, "uac", calls=8, hold_ms=4000, rate=20)
            states = await wait_loads(k, {"w0": 4, "w1": 4})
            assert all(flags.startswith("A") for flags, _ in states.values())
            retry_after = await asyncio.to_thread(expect_503, settings, logs)
            assert int(retry_after) == kamailio.RETRY_AFTER_FULL_S
            assert await asyncio.to_thread(calls.wait, 40) == 0, (logs / "uac.log").read_text()[-3000:]
            await wait_loads(k, {"w0": 0, "w1": 0})
            assert "reason=no_worker_free" in k.log_text()
    finally:
        for proc in workers:
            stop_group(proc)


async def test_dead_worker_fails_over_and_is_marked_inactive(tmp_path: Path, logs: Path) -> None:
    _, settings = write_settings(tmp_path, sip={"workers": 2})
    workers = start_workers(settings, logs)
    try:
        async with run_kamailio(settings, logs) as k:
            stop_group(workers[0])          # worker 0 dies before any call
            calls = uac(settings, logs, "uac", calls=4, hold_ms=500, rate=4)
            assert await asyncio.to_thread(calls.wait, 60) == 0, (logs / "uac.log").read_text()[-3000:]
            # OPTIONS probing (not the failed INVITEs) takes it out: within a ping interval and a probe timeout.
            deadline = asyncio.get_running_loop().time() + kamailio.DS_PING_INTERVAL_S + kamailio.FR_TIMER_MS / 1000 + 2
            states = await kamailio.worker_states(k.paths)
            while not states["w0"][0].startswith(("I", "T")) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.3)
                states = await kamailio.worker_states(k.paths)
            assert states["w0"][0].startswith(("I", "T")), states
            assert states["w1"][0].startswith("A"), states
            await wait_loads(k, {"w0": 0, "w1": 0})
    finally:
        for proc in workers:
            stop_group(proc)


async def test_drained_worker_gets_no_new_calls(tmp_path: Path, logs: Path) -> None:
    _, settings = write_settings(tmp_path, sip={"workers": 2})
    workers = start_workers(settings, logs)
    try:
        async with run_kamailio(settings, logs) as k:
            await kamailio.set_worker_state(k.paths, 0, "d")
            calls = uac(settings, logs, "uac", calls=3, hold_ms=3000, rate=10)
            await wait_loads(k, {"w0": 0, "w1": 3})
            assert await asyncio.to_thread(calls.wait, 40) == 0
            states = await kamailio.worker_states(k.paths)
            assert states["w0"][0].startswith("D"), states
    finally:
        for proc in workers:
            stop_group(proc)


async def test_new_call_rate_limit_answers_503(tmp_path: Path, logs: Path) -> None:
    _, settings = write_settings(tmp_path, sip={"workers": 1, "new_calls_per_second": 3})
    workers = start_workers(settings, logs)
    try:
        async with run_kamailio(settings, logs):
            # 8 new calls in the same second from 4 addresses, 2 each: under the per-source share (which is never
            # above the node's rate), over the node's 3 a second
            sources = [RawSip(HOST, settings.sip.port, src_host=f"127.0.0.{n}") for n in (1, 5, 6, 7)]
            try:
                for raw in sources * 2:
                    raw.send(raw.invite_packet())
                replies = [await asyncio.to_thread(raw.collect, 2, 5.0) for raw in sources]
            finally:
                for raw in sources:
                    raw.close()
            finals = [final for answers in replies for final in answers.finals]
            limited = [msg for code, reason, msg in finals if code == 503 and reason == "Too Many New Calls"]
            assert len(limited) >= 4, [a.codes() for a in replies]
            assert all(b"Retry-After: 1" in msg for msg in limited)
    finally:
        for proc in workers:
            stop_group(proc)


async def test_source_outside_allowed_peers_gets_403(tmp_path: Path, logs: Path) -> None:
    # Workers and Kamailio on 127.0.0.1; the caller comes from 127.0.0.3, outside the allowed network.
    _, settings = write_settings(tmp_path, sip={"workers": 1, "allowed_peers": ["127.0.0.1/32"]})
    workers = start_workers(settings, logs)
    try:
        async with run_kamailio(settings, logs) as k:
            with RawSip(HOST, settings.sip.port, src_host="127.0.0.3") as raw:
                raw.send(raw.invite_packet())
                raw.send(options(HOST, settings.sip.port, raw.local_host, raw.local_port))
                answers = await asyncio.to_thread(raw.collect, 2, 5.0)
            assert answers.codes() == [403, 403]
            assert "reason=source_not_allowed src=127.0.0.3" in k.log_text()
            # An allowed caller still gets through.
            calls = uac(settings, logs, "uac", calls=1, hold_ms=200, rate=1)
            assert await asyncio.to_thread(calls.wait, 30) == 0
    finally:
        for proc in workers:
            stop_group(proc)


MALFORMED = [
    b"\x00\x01\x02garbage that is not SIP at all\r\n\r\n",
    b"INVITE sip:veratur@127.0.0.1 SIP/2.0\r\n\r\n",                     # no Via, From, To, Call-ID, CSeq
    b"INVITE sip:veratur@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: bad1\r\nCSeq: notanumber INVITE\r\n"
    b"Content-Length: 0\r\n\r\n",                                          # broken CSeq
    b"INVITE sip:veratur@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKy\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: bad2\r\nCSeq: 1 INVITE\r\n"
    b"Content-Length: 900\r\n\r\nv=0\r\n",                                # Content-Length lies
    b"INVITE http://example.com/ SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKz\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: bad3\r\nCSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n",                                          # not a SIP URI
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKnothing\r\nContent-Length: 0\r\n\r\n",
]


async def test_malformed_sip_does_not_disturb_the_node(tmp_path: Path, logs: Path) -> None:
    _, settings = write_settings(tmp_path, sip={"workers": 1})
    workers = start_workers(settings, logs)
    try:
        async with run_kamailio(settings, logs) as k:
            held = uac(settings, logs, "held", calls=2, hold_ms=4000, rate=10)
            await wait_loads(k, {"w0": 2})
            with RawSip() as raw:
                for packet in MALFORMED * 20:
                    raw.send(packet, (HOST, settings.sip.port))
                answers = await asyncio.to_thread(raw.collect, 100, 2.0)
            assert not any(code == 200 for code in answers.codes()), answers.codes()
            assert k.proc.poll() is None
            await wait_options(settings.sip.port)
            assert await asyncio.to_thread(held.wait, 40) == 0, (logs / "held.log").read_text()[-3000:]
            after = uac(settings, logs, "after", calls=2, hold_ms=200, rate=10)
            assert await asyncio.to_thread(after.wait, 30) == 0
            await wait_loads(k, {"w0": 0})
    finally:
        for proc in workers:
            stop_group(proc)


async def test_tcp_caller_reaches_udp_workers(tmp_path: Path, logs: Path) -> None:
    """Kamailio listens on TCP as well; calls arriving over TCP go on to the workers over UDP (double
    Record-Route), and ACK/BYE find their way back along the route set."""
    _, settings = write_settings(tmp_path, sip={"workers": 2})
    workers = start_workers(settings, logs)
    try:
        async with run_kamailio(settings, logs) as k:
            calls = start_sipp(["-sf", str(SHARED_SCENARIOS / "uac_call.xml"), "-t", "t1", "-i", HOST,
                                "-p", str(free_port_block(1)), "-mp", str(free_port_block(4, 40000, 50000)),
                                "-m", "4", "-l", "4", "-r", "10", "-d", "1500", "-recv_timeout", "15000",
                                f"{HOST}:{settings.sip.port}"], logs, "tcp")
            await wait_loads(k, {"w0": 2, "w1": 2})
            assert await asyncio.to_thread(calls.wait, 40) == 0, (logs / "tcp.log").read_text()[-3000:]
            await wait_loads(k, {"w0": 0, "w1": 0})
    finally:
        for proc in workers:
            stop_group(proc)
