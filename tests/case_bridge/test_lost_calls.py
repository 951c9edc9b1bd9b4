"""Calls of a worker that died are closed as `lost` by whoever notices (the supervisor)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from case_bridge.errors import InvalidInput
from case_bridge.service import CaseService


def test_open_calls_of_a_dead_worker_are_closed_lost_and_nothing_else(svc: CaseService) -> None:
    stamp = datetime.now(UTC).timestamp()
    t0 = datetime.now(UTC)
    ids = {name: f"{name}-{stamp}@test" for name in ("up1", "up2", "done", "other", "later")}
    for name in ("up1", "up2", "done"):
        svc.link_call(ids[name], "2281234567", node="n/w0", started_at=t0 - timedelta(seconds=30))
    svc.link_call(ids["other"], "2281234567", node="n/w1", started_at=t0 - timedelta(seconds=30))
    svc.link_call(ids["later"], "2281234567", node="n/w0", started_at=t0 + timedelta(seconds=5))
    svc.close_call(ids["done"], "completed", ended_at=t0 - timedelta(seconds=10))

    assert svc.close_calls_of_node("n/w0", started_before=t0, ended_at=t0) == 2
    for name in ("up1", "up2"):
        call = svc.get_call(ids[name])
        assert call is not None and call.disposition == "lost" and call.ended_at == t0
    done = svc.get_call(ids["done"])
    assert done is not None and done.disposition == "completed"
    for name in ("other", "later"):          # another worker's call; the restarted worker's own new call
        call = svc.get_call(ids[name])
        assert call is not None and call.ended_at is None and call.disposition is None
    assert svc.close_calls_of_node("n/w0", started_before=t0) == 0      # a second notice changes nothing
    with pytest.raises(InvalidInput):
        svc.close_calls_of_node("n/w0", "exploded", started_before=t0)
