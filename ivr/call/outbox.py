"""A durable, ordered queue of case-bridge writes kept on the node while the database is unreachable.

One SQLite file per recorder (e.g. `var/outbox-veratur-1-w0.sqlite`), `synchronous=FULL` so that `append` returns
only after the entry is fsync'd: a turn accepted here survives a crash of the worker or of the machine. Entries
are replayed in insertion order and removed one by one after the database has committed them; an entry the
service refuses for good (not a connection failure) is moved to `dead_letters` for a person to look at.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, args TEXT NOT NULL,
                                    queued_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (seq INTEGER PRIMARY KEY, op TEXT NOT NULL, args TEXT NOT NULL,
                                         queued_at TEXT NOT NULL, error TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    op: str
    args: dict[str, Any]


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"__dt__": value.isoformat()}
    raise TypeError(f"not serializable in the outbox: {type(value).__name__}")


def _decode(obj: dict[str, Any]) -> Any:
    if set(obj) == {"__dt__"}:
        return datetime.fromisoformat(obj["__dt__"])
    return obj


class Outbox:
    """FIFO of pending writes in a SQLite file. Thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")   # fsync at every commit: durable when append returns
        self._db.executescript(_SCHEMA)
        self._count = self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def __len__(self) -> int:
        return self._count

    def append(self, op: str, args: dict[str, Any]) -> int:
        text = json.dumps(args, default=_encode, ensure_ascii=False)
        with self._lock:
            cur = self._db.execute("INSERT INTO entries (op, args, queued_at) VALUES (?, ?, datetime('now'))",
                                   (op, text))
            self._count += 1
            return int(cur.lastrowid or 0)

    def peek(self, limit: int = 50) -> list[Entry]:
        with self._lock:
            rows = self._db.execute("SELECT seq, op, args FROM entries ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [Entry(seq, op, json.loads(args, object_hook=_decode)) for seq, op, args in rows]

    def remove(self, seq: int) -> None:
        with self._lock:
            if self._db.execute("DELETE FROM entries WHERE seq = ?", (seq,)).rowcount:
                self._count -= 1

    def bury(self, seq: int, error: str) -> None:
        """Move an entry the service will never accept to dead_letters."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO dead_letters SELECT seq, op, args, queued_at, ? FROM entries WHERE seq = ?",
                             (error[:500], seq))
            removed = self._db.execute("DELETE FROM entries WHERE seq = ?", (seq,)).rowcount
            self._db.execute("COMMIT")
            self._count -= removed

    def oldest_age_s(self) -> float:
        """Seconds the oldest pending entry has waited (0 when empty): how long the database has been away."""
        if not self._count:
            return 0.0
        with self._lock:
            row = self._db.execute("SELECT (julianday('now') - julianday(MIN(queued_at))) * 86400 "
                                   "FROM entries").fetchone()
        return max(0.0, float(row[0])) if row and row[0] is not None else 0.0

    def dead_letter_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])

    def dead_letters(self) -> list[tuple[int, str, str]]:
        with self._lock:
            return [(r[0], r[1], r[2]) for r in self._db.execute("SELECT seq, op, error FROM dead_letters ORDER BY seq")]

    def close(self) -> None:
        with self._lock:
            self._db.close()
