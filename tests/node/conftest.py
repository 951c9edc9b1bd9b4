"""Harness for node-level tests: free ports, a settings file per test, a real Kamailio, sipp peers.

The pieces live in testkit (bench/node.py uses them too); the names stay importable from here."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit import sipp as sippkit
from testkit.node import RunningKamailio, run_kamailio, stop_group, wait_options, write_settings
from testkit.ports import HOST, free_port_block
from testkit.ports import port_free as _port_free

__all__ = ["HOST", "SCENARIOS", "RunningKamailio", "_port_free", "free_port_block", "run_kamailio", "sipp_binary",
           "start_sipp", "stop_group", "uas_args", "wait_options", "write_settings"]

SCENARIOS = Path(__file__).parent / "scenarios"


def sipp_binary() -> str:
    try:
        return sippkit.sipp_binary()
    except sippkit.SippMissing as exc:
        pytest.fail(str(exc))


def start_sipp(args: list[str], log_dir: Path, name: str):  # type: ignore[no-untyped-def]
    """Start sipp in the background (its own process group); its screen output goes to <log_dir>/<name>.log."""
    sipp_binary()
    return sippkit.start_background(args, log_dir, name)


def uas_args(port: int, media_port: int) -> list[str]:
    """sipp as a stand-in worker: answers OPTIONS and INVITEs on `port`."""
    return ["-sf", str(SCENARIOS / "uas_answer.xml"), "-i", HOST, "-p", str(port), "-mp", str(media_port)]


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "logs"
    path.mkdir()
    yield path
