"""The node's event log: SQLite in WAL mode with synchronous=FULL, so an append that returned is
on disk and survives `kill -9` (and a power cut). `seq` is the pull cursor for `flows/collect.py`;
an optional client `event_id` makes a retried POST harmless (the second copy is ignored).
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime
from pathlib import Path

from edge.engine import Event

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    store_id TEXT,
    basket_id TEXT,
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""
COLUMNS = ("seq", "event_id", "user_id", "item_id", "event_type", "timestamp", "store_id", "basket_id", "received_at")


class EventLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(SCHEMA)
        self._lock = threading.Lock()

    def append(self, events: list[Event], event_ids: list[str | None] | None = None) -> int:
        """Write `events` in one transaction; returns how many were new (not seen event_ids)."""
        event_ids = event_ids or [None] * len(events)
        rows = [(eid, e.user_id, e.item_id, e.event_type, e.timestamp.isoformat(), e.store_id, e.basket_id)
                for e, eid in zip(events, event_ids)]
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR IGNORE INTO events (event_id, user_id, item_id, event_type, timestamp, "
                                     "store_id, basket_id) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return self._db.total_changes - before

    def since(self, after: int = 0, limit: int = 1000) -> list[dict]:
        """Events with seq > `after`, oldest first (the collect flow's cursor)."""
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (int(after), int(limit))).fetchall()
        return [dict(zip(COLUMNS, row)) for row in rows]

    def events(self) -> list[Event]:
        """Every logged event, oldest first (replayed into a freshly loaded bundle)."""
        with self._lock:
            rows = self._db.execute("SELECT user_id, item_id, event_type, timestamp, store_id, basket_id "
                                    "FROM events ORDER BY seq").fetchall()
        return [Event(u, i, t, datetime.fromisoformat(ts), s, b) for u, i, t, ts, s, b in rows]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def close(self) -> None:
        self._db.close()
