"""Live stock: per-store availability pushed to a node between bundles (`PUT /admin/stock`).

    <node dir>/stock.json   {"entries": [[store_id, item_id, in_stock, pushed_at], ...]}, replaced atomically

A push marks items of a store in or out of stock. The node writes the merged state to disk before
it answers, so an acknowledged push survives a restart, and applies it to the engine it serves and
to every bundle it installs later, except where that bundle's own stock is newer: an entry pushed
before a bundle's data ends is already in (or superseded by) the bundle's availability.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (store_id, item_id)


@dataclass(frozen=True)
class StockEntry:
    in_stock: bool
    pushed_at: float  # Unix seconds


@dataclass(frozen=True)
class StockApplied:
    """What one push changed: entries for known (store, item) pairs now in force on the served
    engine, and what the bundle does not know (reported, never stored)."""

    applied: int
    unknown_stores: list[str]  # the first few
    unknown_items: int


class LiveStock:
    """The pushed availability of one node (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.entries: dict[Key, StockEntry] = {}
        if self.path.exists():
            try:
                rows = json.loads(self.path.read_text())["entries"]
                self.entries = {(str(s), str(i)): StockEntry(bool(v), float(t)) for s, i, v, t in rows}
            except (OSError, ValueError, KeyError, TypeError) as error:
                # Only the node writes this file (atomically): a damaged one is set aside, never fatal.
                aside = self.path.with_suffix(".damaged")
                os.replace(self.path, aside)
                log.error("%s: unreadable (%s); moved to %s, serving the bundles' own stock", self.path, error, aside)

    def push(self, changes: dict[Key, bool], at: float) -> None:
        """Merge `changes` ((store, item) → in stock), pushed at `at`, and write them to disk."""
        merged = dict(self.entries)
        merged.update({key: StockEntry(value, at) for key, value in changes.items()})
        rows = [[s, i, e.in_stock, e.pushed_at] for (s, i), e in sorted(merged.items())]
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"entries": rows}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.entries = merged

    def newer_than(self, moment: float) -> dict[Key, bool]:
        """(store, item) → in stock for the entries pushed after `moment` (a bundle's data end)."""
        return {key: e.in_stock for key, e in self.entries.items() if e.pushed_at > moment}
