"""Kamailio's RPC socket path fits a Unix socket address however deep the node's data_dir is: Kamailio refuses a
ctl path over 104 bytes and does not start at all (seen under pytest-xdist's temp dirs)."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from testkit.node import run_kamailio, write_settings
from veratur import kamailio

pytestmark = pytest.mark.sip


def test_a_short_data_dir_keeps_the_socket_beside_kamailio(tmp_path: Path) -> None:
    paths = kamailio.KamailioPaths(Path("/var/lib/veratur/kamailio"))
    assert paths.ctl_socket == Path("/var/lib/veratur/kamailio/run/kamailio_ctl")


def test_a_deep_data_dir_gets_a_short_private_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "kamailio"
    paths = kamailio.KamailioPaths(deep)
    socket = paths.ctl_socket
    assert len(str(socket)) <= kamailio.UNIX_SOCKET_PATH_MAX
    assert socket == kamailio.KamailioPaths(deep).ctl_socket                   # stable for one data_dir
    assert socket != kamailio.KamailioPaths(deep.parent / "other").ctl_socket  # distinct per data_dir
    assert stat.S_IMODE(socket.parent.stat().st_mode) == 0o700                 # only this user reaches the RPC


async def test_kamailio_starts_and_answers_rpc_from_a_deep_data_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("n" * 70) / ("m" * 40)
    deep.mkdir(parents=True)
    _, settings = write_settings(deep)
    async with run_kamailio(settings, tmp_path) as k:
        assert "w0" in await kamailio.worker_states(k.paths)
