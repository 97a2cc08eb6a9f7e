"""The node's event log: SQLite in WAL mode with synchronous=FULL, so an append that returned is
synced to disk and survives `kill -9` (and a power cut, on a disk that honours the sync). `seq`
is the pull cursor for `flows/collect.py`; an optional client `event_id` makes a retried POST
harmless (the second copy is ignored).

The log is also where a shopper's live state comes from: `for_shopper` reads one shopper's recent
events through an index on (user_id, at), so a restarted node or a new bundle rebuilds a
shopper's state when that shopper is next asked for, and nothing replays the whole log.

Appends are group-committed (`edge.group_commit`): each returns only after a sync that covers
its events, and the callback it passes (the node applying the events to its engine) runs in log
order.

`at` is the event's time in Unix seconds (UTC). Rows written before it existed are read once when
the log is opened (schema version 2); a row whose time cannot be read keeps `at` NULL, is never
applied, and is counted by `unusable()`. `value` (schema version 3) is what a purchase was worth
to the shop, when the client says (experiment reports sum it as revenue).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from edge.engine import Event
from edge.group_commit import GroupCommit
from edge.inputs import CLOCK_SKEW

CLOCK_SKEW_S = CLOCK_SKEW.total_seconds()

SCHEMA_VERSION = 3
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
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    at REAL,
    value REAL
)
"""
INDEXES = (
    "CREATE INDEX IF NOT EXISTS events_by_shopper ON events (user_id, at)",
    "CREATE INDEX IF NOT EXISTS events_unusable ON events (seq) WHERE at IS NULL",
)
COLUMNS = (
    "seq",
    "event_id",
    "user_id",
    "item_id",
    "event_type",
    "timestamp",
    "store_id",
    "basket_id",
    "value",
    "received_at",
)
SHOPPER_EVENTS = 2000  # the newest events of one shopper that make up their live state
# Both reads go through an index, so their cost does not grow with the log. Without INDEXED BY,
# SQLite counts unusable rows through the (user_id, at) index: a scan of the whole log.
READ_SHOPPER = (
    "SELECT seq, item_id, event_type, at, store_id, basket_id FROM events "
    "WHERE user_id = ? AND at >= ? AND at <= ? ORDER BY seq DESC LIMIT ?"
)
COUNT_UNUSABLE = "SELECT COUNT(*) FROM events INDEXED BY events_unusable WHERE at IS NULL"


def unix_seconds(text: str, latest: float) -> float | None:
    """An ISO 8601 timestamp (naive = UTC) as Unix seconds, or None when it cannot be read or is
    after `latest` (Unix seconds)."""
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        at = moment.timestamp()
        datetime.fromtimestamp(at, UTC)  # representable once read back
    except (ValueError, OverflowError, OSError, TypeError):
        return None
    return at if at <= latest else None


class EventLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(SCHEMA)
        self._migrate()
        for index in INDEXES:
            self._db.execute(index)
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # start with a short WAL
        self._commits = GroupCommit(self._db, self._insert)
        # Reads for shoppers' state use their own connection: under WAL they never wait for a write's fsync.
        self._reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        self._read_lock = threading.Lock()

    def _migrate(self) -> None:
        """Schema 1 → 2: add `at` and fill it from `timestamp` (once; unreadable times stay NULL);
        2 → 3: add `value` (NULL for the rows before it)."""
        if self._db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
        self._db.execute("BEGIN IMMEDIATE")
        for column in ("at", "value"):
            if column not in columns:
                self._db.execute(f"ALTER TABLE events ADD COLUMN {column} REAL")
        rows = self._db.execute("SELECT seq, timestamp FROM events WHERE at IS NULL").fetchall()
        latest = time.time() + CLOCK_SKEW_S
        self._db.executemany(
            "UPDATE events SET at = ? WHERE seq = ?", [(unix_seconds(ts, latest), seq) for seq, ts in rows]
        )
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._db.execute("COMMIT")

    def append(
        self,
        events: list[Event],
        event_ids: list[str | None] | None = None,
        then: Callable[[list[int | None]], None] | None = None,
    ) -> list[int | None]:
        """Log `events` durably; returns each event's seq (None: a repeated event_id, not logged
        again). `then(seqs)` runs once they are synced, in log order with every other append's
        (under the log's commit lock: keep it short). Timestamps must be timezone-aware and already
        checked by the caller."""
        return self._commits.append(list(zip(events, event_ids or [None] * len(events))), then)

    @staticmethod
    def _insert(db: sqlite3.Connection, logged: tuple[Event, str | None]) -> int | None:
        e, event_id = logged
        moment = e.timestamp.astimezone(UTC)
        row = db.execute(
            "INSERT OR IGNORE INTO events (event_id, user_id, item_id, event_type, timestamp, store_id, "
            "basket_id, at, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
            (
                event_id,
                e.user_id,
                e.item_id,
                e.event_type,
                moment.isoformat(),
                e.store_id,
                e.basket_id,
                moment.timestamp(),
                e.value,
            ),
        ).fetchone()
        return row[0] if row else None

    def since(self, after: int = 0, limit: int = 1000) -> list[dict]:
        """Events with seq > `after`, oldest first (the collect flow's cursor)."""
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT {', '.join(COLUMNS)} FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (int(after), int(limit))
            ).fetchall()
        return [dict(zip(COLUMNS, row)) for row in rows]

    def for_shopper(self, user_id: str, since_at: float, limit: int = SHOPPER_EVENTS) -> list[Event]:
        """The shopper's newest `limit` events at or after `since_at` (Unix seconds), oldest first."""
        with self._read_lock:
            rows = self._reader.execute(READ_SHOPPER, (user_id, since_at, time.time() + CLOCK_SKEW_S, limit)).fetchall()
        return [
            Event(user_id, item, kind, datetime.fromtimestamp(at, UTC), store, basket, seq)
            for seq, item, kind, at, store, basket in reversed(rows)
        ]

    def unusable(self) -> int:
        """Rows that are never applied because their time could not be read."""
        with self._read_lock:
            return self._reader.execute(COUNT_UNUSABLE).fetchone()[0]

    def close(self) -> None:
        self._reader.close()
        self._db.close()
