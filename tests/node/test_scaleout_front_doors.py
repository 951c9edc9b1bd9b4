"""Two front doors sharing one address (what VRRP/keepalived gives a PBX administrator, docs/scale-out.md): both
front nodes listen on it and record-route every call with it, and the media node registers its workers with both.
The front door holding the address is lost at once (every process in its namespace SIGKILLed) while calls are up;
the address moves to the other (the test does what keepalived would). The calls in progress complete: their media
never crossed a front door, and their BYE reaches the survivor through the shared address. New calls go through
the survivor."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit import netns
from testkit.scaleout import Cluster, active, load

pytestmark = [pytest.mark.sip, pytest.mark.slow]

WHY_NOT = netns.unavailable()
if WHY_NOT:
    pytestmark.append(pytest.mark.skip(reason=f"scale-out topology in network namespaces: {WHY_NOT}"))


@pytest.fixture
def topo() -> Iterator[netns.Topology]:
    with netns.topology(["f1", "f2", "m1", "caller"]) as t:
        for front in ("f1", "f2"):
            t.allow_nonlocal_bind(front)
        t.move_address(t.shared(), to="f1")
        yield t


def test_losing_the_front_door_that_holds_the_shared_address_loses_no_call(tmp_path: Path,
                                                                           topo: netns.Topology) -> None:
    vip = topo.shared()
    c = Cluster(tmp_path, topo, media=("m1",), fronts=("f1", "f2"), shared_address=vip)
    with c.run_together("f1", "f2"), c.run("m1"):
        c.wait("m1 at both front doors", lambda: active(c.dests_at("f1")) and active(c.dests_at("f2")))
        held = c.calls("held", calls=4, hold_ms=12000, target=vip)
        c.wait("4 calls up through f1", lambda: load(c.dests_at("f1")) == 4)
        assert netns.kill_all(topo.ns("f1")) > 0            # the host is gone: supervisor and Kamailio alike
        topo.move_address(vip, to="f2", from_="f1")
        fresh = c.calls("fresh", calls=4, hold_ms=2000, target=vip)
        assert c.counts("fresh", fresh) == (4, 0)
        assert load(c.dests_at("f2")) == 0                   # f2 counted them, and their BYEs
        assert c.counts("held", held) == (4, 0)              # set up through f1, hung up through f2
