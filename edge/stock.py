"""Live stock: per-store availability pushed to a node between bundles (`PUT /admin/stock`).

    <node dir>/stock.db   SQLite: one row per (store_id, item_id) with in_stock and pushed_at

A push marks items of a store in or out of stock. The node commits it (WAL, synchronous=FULL)
before it answers, so an acknowledged push survives a crash; a push costs the rows it changes,
however many are stored. The node applies a push to the engine it serves, and all stored rows to
every bundle it loads later, except where that bundle's own stock is newer: a row pushed before
a bundle's data ends is already in (or superseded by) the bundle's availability.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

Key = tuple[str, str]  # (store_id, item_id)
MAX_STOCK_CHANGES = 100_000  # (store, item) pairs per push


@dataclass(frozen=True)
class StockApplied:
    """What one push changed: rows for (store, item) pairs the served bundle knows, now served
    and stored, and what it does not know (reported, never stored)."""

    applied: int
    unknown_stores: list[str]  # the first few
    ignored: int  # changes for a store or item the bundle does not know


class LiveStock:
    """The pushed availability of one node (see the module docstring)."""

    def __init__(self, path: Path):
        self._db = sqlite3.connect(Path(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS stock (store_id TEXT NOT NULL, item_id TEXT NOT NULL, "
            "in_stock INTEGER NOT NULL, pushed_at REAL NOT NULL, PRIMARY KEY (store_id, item_id))"
        )
        self._lock = threading.Lock()

    def push(self, changes: dict[Key, bool], at: float) -> None:
        """Store `changes` ((store, item) → in stock), pushed at `at` (Unix seconds), in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO stock VALUES (?, ?, ?, ?) ON CONFLICT (store_id, item_id) "
                    "DO UPDATE SET in_stock = excluded.in_stock, pushed_at = excluded.pushed_at",
                    [(store, item, int(value), at) for (store, item), value in changes.items()],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def newer_than(self, moment: float) -> dict[Key, bool]:
        """(store, item) → in stock for the rows pushed after `moment` (a bundle's data end)."""
        with self._lock:
            rows = self._db.execute("SELECT store_id, item_id, in_stock FROM stock WHERE pushed_at > ?", (moment,))
            return {(store, item): bool(value) for store, item, value in rows}
