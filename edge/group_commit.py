"""Group commit for the node's SQLite logs (events, exposures): appends that arrive while a commit
is syncing wait, and the next commit writes all of them in one transaction and one sync. A log
then takes as many rows per second as the disk takes syncs times the appends in flight (one sync
per append capped a node at ~220 purchase POSTs/s), and each append still returns only after a
sync that covers its rows. The database must be in WAL mode with synchronous=FULL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Row = TypeVar("Row")


@dataclass(eq=False)
class _Append(Generic[Row]):
    """One caller's rows waiting for, then holding, their commit."""

    rows: list[Row]
    then: Callable[[list[int | None]], None] | None
    seqs: list[int | None] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False


class GroupCommit(Generic[Row]):
    """Appends rows with `insert(db, row) -> seq | None` (None: not written, e.g. a repeated id)."""

    def __init__(self, db: sqlite3.Connection, insert: Callable[[sqlite3.Connection, Row], int | None]):
        self._db, self._insert = db, insert
        self._queue = threading.Condition()  # guards _pending and _committing
        self._pending: list[_Append[Row]] = []
        self._committing = False

    def append(self, rows: list[Row], then: Callable[[list[int | None]], None] | None = None) -> list[int | None]:
        """Write `rows` durably; returns each row's seq. `then(seqs)` runs once they are synced, in
        log order with every other append's (under the log's commit lock: keep it short)."""
        request = _Append(rows, then)
        with self._queue:
            self._pending.append(request)
            while not request.done:
                if self._committing:
                    self._queue.wait()
                    continue
                self._committing, batch, self._pending = True, self._pending, []
                self._queue.release()
                try:
                    self._commit(batch)
                except BaseException as error:  # e.g. KeyboardInterrupt: no waiter may wait on
                    for waiting in batch:
                        if not waiting.done:
                            waiting.error, waiting.done = error, True
                    raise
                finally:
                    self._queue.acquire()
                    self._committing = False
                    self._queue.notify_all()
        if request.error is not None:
            raise request.error
        return request.seqs

    def _commit(self, batch: list[_Append[Row]]) -> None:
        """Write `batch` in one transaction (one sync), then run each append's `then` in order. If
        the transaction fails, each append is written alone, so one bad append fails only itself."""
        try:
            self._transaction(batch)
        except Exception as error:
            if len(batch) == 1:
                batch[0].error = error
            else:
                for request in batch:
                    try:
                        self._transaction([request])
                    except Exception as error:  # noqa: BLE001 — handed to that append's caller
                        request.error = error
        for request in batch:
            try:
                if request.error is None and request.then is not None:
                    request.then(request.seqs)
            except Exception as error:  # noqa: BLE001 — handed to that append's caller
                request.error = error
            request.done = True

    def _transaction(self, batch: list[_Append[Row]]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for request in batch:
                request.seqs = [self._insert(self._db, row) for row in request.rows]
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
