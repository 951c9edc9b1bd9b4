"""The standing SIP fuzz run: 2,400 seeded messages of twelve hostile families at the front door and straight at
the workers, while legitimate calls go through the front door. Zero crashes, zero failed legitimate calls, no
worker ever marked down. The fuzzer sends from 127.0.0.2 (an attacker is another host than the callers at
127.0.0.1), so the front door's per-source limit is exercised: it must throttle the fuzzer, not the callers.

What this run found and the front door now refuses before a worker spends a call slot on it (each held all the
worker's slots, and every legitimate call got 503): a lowercase `invite` (answered by the worker, its reply matched
no transaction, the answered call held a slot 32 s), a NUL byte in the headers and blank folded lines (dropped by
pjsip unanswered: a slot held for fr_timer on each worker), and a relay failure that leaked the slot."""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from testkit.demo_handler import DEMO_APP
from testkit.sipfuzz import FAMILIES, fuzz
from tests.node.conftest import HOST, write_settings
from tests.node.node_runner import caller_scenario, run_node, sipp_counts, start_calls
from veratur import kamailio

pytestmark = pytest.mark.sip

SEED = 13
MESSAGES = 2400
RATE_PER_S = 120.0
LEGIT_CALLS = 10


def test_fuzzed_sip_while_real_calls_run(tmp_path: Path) -> None:
    # the production share (10/s of the node's rate) for the fuzzer's address: it must not spend the callers' rate
    config, settings = write_settings(tmp_path, sip={"workers": 2, "new_calls_per_source_per_second": 10})
    logs = tmp_path / "logs"
    logs.mkdir()
    with run_node(config, settings, "--no-dialogue", "--no-web", "--ivr-app", DEMO_APP) as node:
        pids = {index: proc.pid for index, proc in node.workers().items()}
        paths = kamailio.KamailioPaths.for_settings(settings)
        flags_seen: set[str] = set()
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                try:
                    states = asyncio.run(kamailio.worker_states(paths))
                except kamailio.KamailioError:
                    states = {}              # the node is stopping (control socket gone)
                for flags, _ in states.values():
                    flags_seen.add(flags)
                time.sleep(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        legit = start_calls(settings, caller_scenario(tmp_path, None), logs, "legit", calls=LEGIT_CALLS,
                            hold_ms=1500, rate=0.5)
        targets = [(HOST, settings.sip.port)]
        report = fuzz(targets, MESSAGES, seed=SEED, rate_per_s=RATE_PER_S)
        assert legit.wait(60) == 0, (logs / "legit.log").read_text()[-3000:]
        done.set()
        watcher.join(5)
        print(f"\nfuzz: {report.total} messages, families {dict(report.sent)}, answers {dict(report.answers)}; "
              f"legit calls ok/failed {sipp_counts(logs, 'legit')}; dispatcher flags seen {sorted(flags_seen)}")
        assert report.total == MESSAGES and set(report.sent) == set(FAMILIES)
        assert sipp_counts(logs, "legit") == (LEGIT_CALLS, 0)
        assert {index: proc.pid for index, proc in node.workers().items()} == pids, "a worker was restarted"
        assert node.proc.poll() is None
        assert flags_seen and all(flags.startswith("A") for flags in flags_seen), flags_seen
        output = node.output()
        for bad in ("Traceback", "Assertion", "Segmentation", "Aborted", "event=worker_down"):
            assert bad not in output, bad
