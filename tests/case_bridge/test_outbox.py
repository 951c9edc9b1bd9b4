"""The on-node outbox: ordered, durable across reopen, refused entries set aside."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ivr.call.outbox import Outbox


def test_fifo_survives_reopen_and_keeps_types(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    at = datetime(2026, 11, 25, 10, 32, tzinfo=UTC)
    for i in range(5):
        box.append("add_turn", {"call_id": "c", "text": f"ñandú {i}", "at": at, "confidence": 0.5, "intent": None})
    box.close()
    box = Outbox(tmp_path / "o.sqlite")
    assert len(box) == 5
    entries = box.peek()
    assert [e.args["text"] for e in entries] == [f"ñandú {i}" for i in range(5)]
    assert entries[0].args["at"] == at and entries[0].args["intent"] is None
    box.remove(entries[0].seq)
    box.bury(entries[1].seq, "InvalidInput: dato raro")
    assert len(box) == 3 and [e.seq for e in box.peek()] == [e.seq for e in entries[2:]]
    assert box.dead_letters() == [(entries[1].seq, "add_turn", "InvalidInput: dato raro")]
    box.close()
