"""Admission and shutdown of a worker: 403 for peers outside sip.allowed_peers, 503 + Retry-After at the
configured limit, 503 + Retry-After while draining on SIGTERM, then a clean exit with the call hung up."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from testkit.rawsip import RawSip, sdp
from tests.sip.harness import Worker, start_caller

pytestmark = pytest.mark.sip


def test_invite_from_a_peer_outside_allowed_peers_gets_403(tmp_path: Path) -> None:
    # Without Kamailio a worker checks sip.allowed_peers (behind it, sip.front_doors: test_hardening.py).
    worker = Worker(tmp_path, env={"VERATUR__SIP__ALLOWED_PEERS": "[10.0.0.0/8]",
                                   "VERATUR__SIP__USE_KAMAILIO": "false"}).start()
    try:
        with RawSip("127.0.0.1", worker.port) as s:
            call_id, branch = s.request("INVITE", body=sdp())
            final = s.final()
            assert final is not None and final.code == 403
            s.ack_failure(call_id, branch, final)
        worker.wait_idle()
        worker.wait_for(lambda m: m.get('veratur_calls_rejected_total{code="403"}') == 1)
    finally:
        assert worker.stop() == 0


def test_limit_then_sigterm_drain_and_clean_exit(tmp_path: Path) -> None:
    worker = Worker(tmp_path, env={"VERATUR__SIP__MAX_CALLS_PER_WORKER": "1",
                                   "VERATUR__SIP__SHUTDOWN_GRACE_S": "1.5"}).start()
    held = start_caller(worker.uri, "--pause", "15", "--wait", "0")
    try:
        worker.wait_for(lambda m: m["veratur_calls_active"] == 1, timeout_s=20)
        with RawSip("127.0.0.1", worker.port) as s:
            call_id, branch = s.request("INVITE", body=sdp())
            final = s.final()
            assert final is not None and final.code == 503 and final.header("Retry-After") == "5"
            s.ack_failure(call_id, branch, final)
        worker.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        worker.wait_for(lambda m: m["veratur_sip_draining"] == 1, timeout_s=5)
        with RawSip("127.0.0.1", worker.port) as s:
            call_id, branch = s.request("INVITE", body=sdp())
            final = s.final()
            assert final is not None and final.code == 503 and final.header("Retry-After") == "5"
            s.ack_failure(call_id, branch, final)
        out, err = held.communicate(timeout=30)
    finally:
        if held.poll() is None:
            held.kill()
    [result] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert result["hangup_reason"] == "bye", err[-2000:]       # the worker hung up after the grace period
    assert result["duration_s"] < 12
    code = worker.stop(None, timeout_s=20)
    log = worker.log()
    assert code == 0, log[-3000:]
    assert worker.probed("ended", field="reason") == ["shutdown"]    # the held call's handler saw the shutdown
    assert "worker stopped" in log
    for bad in ("Traceback", "Assertion", "Segmentation", "Aborted"):
        assert bad not in log, log[-3000:]
