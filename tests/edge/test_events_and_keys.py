"""The event log (seqs, retries, per-shopper reads, the schema 1 → 2 upgrade) and client keys
(hashed at rest, constant-time checks, rates) as plain objects."""

from __future__ import annotations

import json
import sqlite3
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from edge.clients import ClientKeyError, ClientKeys, RateLimits
from edge.engine import Event
from edge.events import COUNT_UNUSABLE, READ_SHOPPER, EventLog

NOW = datetime.now(UTC).replace(microsecond=0)


def test_append_returns_each_seq_and_none_for_a_retried_event_id(tmp_path):
    log = EventLog(tmp_path / "events.db")
    events = [Event("u1", "i1", "view", NOW), Event("u1", "i2", "purchase", NOW, "s1", "b1")]
    assert log.append(events, ["e1", "e2"]) == [1, 2]
    retried = log.append(events, ["e1", None])
    assert retried[0] is None and retried[1] > 2  # (seqs may skip numbers; they only ever grow)
    assert [(row["seq"], row["event_id"]) for row in log.since(0)] == [(1, "e1"), (2, "e2"), (retried[1], None)]


def test_concurrent_appends_share_commits_and_run_their_callbacks_in_log_order(tmp_path):
    """Group commit: appends that wait while a commit syncs are written together, each caller gets
    its own seqs back, and their callbacks (the node applying them) run in seq order."""
    log = EventLog(tmp_path / "events.db")
    batches, applied = [], []
    transaction = log._commits._transaction

    def slow_sync(batch):  # a disk whose sync takes 20 ms, so appends pile up behind it
        batches.append(len(batch))
        transaction(batch)
        time.sleep(0.02)

    log._commits._transaction = slow_sync

    def post(n: int) -> list[int | None]:
        events = [Event(f"u{n}", f"i{j}", "purchase", NOW, "s1", f"b{n}") for j in range(3)]
        return log.append(events, [f"e{n}-{j}" for j in range(3)], then=applied.extend)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(post, range(64)))
    rows = {row["event_id"]: row["seq"] for row in log.since(0, limit=1000)}
    assert all(seqs == [rows[f"e{n}-{j}"] for j in range(3)] for n, seqs in enumerate(results))
    assert applied == sorted(applied) and len(applied) == 192  # every event applied once, in log order
    assert len(batches) < 64 and max(batches) > 1  # commits were shared


def test_an_append_that_fails_fails_alone_even_in_a_shared_commit(tmp_path):
    log = EventLog(tmp_path / "events.db")
    transaction, gate = log._commits._transaction, threading.Event()

    def held(batch):  # the first commit waits until both appends below are queued behind it
        gate.wait(5)
        transaction(batch)

    log._commits._transaction = held
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(log.append, [Event("u0", "i0", "view", NOW)])
        time.sleep(0.05)
        good = pool.submit(log.append, [Event("u1", "i1", "view", NOW)])
        bad = pool.submit(log.append, [Event(object(), "i2", "view", NOW)])  # SQLite cannot store it
        time.sleep(0.05)
        gate.set()
        assert first.result() == [1] and good.result()[0] > 1
        with pytest.raises(sqlite3.Error):
            bad.result()
    assert [row["user_id"] for row in log.since(0)] == ["u0", "u1"]


def test_for_shopper_reads_one_shoppers_events_in_the_window_oldest_first(tmp_path):
    log = EventLog(tmp_path / "events.db")
    log.append(
        [
            Event("u1", "old", "view", NOW - timedelta(days=30)),
            Event("u2", "other", "view", NOW),
            Event("u1", "a", "view", NOW - timedelta(hours=2)),
            Event("u1", "b", "add_to_cart", NOW),
        ]
    )
    read = log.for_shopper("u1", (NOW - timedelta(days=1)).timestamp())
    assert [(e.item_id, e.seq) for e in read] == [("a", 3), ("b", 4)]
    assert read[1].timestamp == NOW and read[1].timestamp.tzinfo is not None
    assert [e.item_id for e in log.for_shopper("u1", 0, limit=1)] == ["b"]  # the newest ones


def test_a_schema_1_log_is_upgraded_and_its_unreadable_rows_counted(tmp_path):
    path = tmp_path / "events.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE, user_id TEXT NOT NULL, "
        "item_id TEXT NOT NULL, event_type TEXT NOT NULL, timestamp TEXT NOT NULL, store_id TEXT, basket_id TEXT, "
        "received_at TEXT NOT NULL DEFAULT 'x')"
    )
    db.executemany(
        "INSERT INTO events (user_id, item_id, event_type, timestamp) VALUES ('u1', 'i1', 'view', ?)",
        [(NOW.isoformat(),), ("9999-12-31T23:59:59-14:00",), ("not a time",), ("2100-01-01T00:00:00",)],
    )
    db.commit()
    db.close()
    log = EventLog(path)
    assert log.unusable() == 3
    assert [e.seq for e in log.for_shopper("u1", 0)] == [1]
    log.close()
    assert EventLog(path).unusable() == 3  # upgraded once; reopening changes nothing


def test_client_keys_are_stored_hashed_and_checked_by_id_and_secret(tmp_path):
    keys = ClientKeys(tmp_path)
    key, text = keys.add("web-shop", scopes=("recommend",), rate="10/second")
    stored = (tmp_path / "clients.json").read_text()
    assert text not in stored and text.split("_", 2)[2] not in stored
    assert stat.S_IMODE((tmp_path / "clients.json").stat().st_mode) == 0o600
    assert ClientKeys(tmp_path).authenticate(text) == key  # another process reads the same file
    assert keys.authenticate(text[:-1] + ("A" if text[-1] != "A" else "B")) is None
    assert keys.authenticate(f"lpk_{key.key_id}_") is None and keys.authenticate("") is None
    assert keys.authenticate("lpk_" + "0" * 300) is None
    with pytest.raises(ClientKeyError, match="exists"):
        keys.add("web-shop")
    with pytest.raises(ClientKeyError, match="scopes"):
        keys.add("other", scopes=("admin",))
    with pytest.raises(ClientKeyError, match="rate"):
        keys.add("other", rate="lots")
    keys.revoke("web-shop")
    assert keys.authenticate(text) is None and not keys


def test_a_running_node_sees_new_keys_within_a_second_and_survives_a_broken_file(tmp_path):
    serving = ClientKeys(tmp_path)
    _, text = ClientKeys(tmp_path).add("pos")  # written by the CLI, another object
    time.sleep(1.1)
    assert serving.authenticate(text) is not None
    (tmp_path / "clients.json").write_text("{broken")
    time.sleep(1.1)
    assert serving.authenticate(text) is not None  # keeps what it had, logs why
    with pytest.raises(ClientKeyError, match="cannot read client keys"):
        ClientKeys(tmp_path)  # at start-up the node refuses to guess
    (tmp_path / "clients.json").write_text(json.dumps({"keys": []}))


def test_rates_hold_each_identity_to_its_own_limit():
    rates = RateLimits()
    assert [rates.retry_after("a", "3/minute") for _ in range(3)] == [None] * 3
    wait = rates.retry_after("a", "3/minute")
    assert wait is not None and 1 <= wait <= 60
    assert rates.retry_after("b", "3/minute") is None


def test_a_rate_admits_its_burst_then_one_request_per_interval():
    now = [100.0]
    rates = RateLimits(clock=lambda: now[0])
    assert [rates.retry_after("a", "4/second") for _ in range(5)] == [None] * 4 + [1]
    now[0] += 0.25  # one interval of 4/second
    assert rates.retry_after("a", "4/second") is None
    assert rates.retry_after("a", "4/second") == 1
    now[0] += 10  # idle time does not bank more than one burst
    assert [rates.retry_after("a", "4/second") for _ in range(5)] == [None] * 4 + [1]


def test_the_cli_adds_lists_and_revokes_client_keys(tmp_path):
    from typer.testing import CliRunner

    from lightpersml.cli import app

    runner = CliRunner()
    added = runner.invoke(
        app,
        [
            "keys",
            "client",
            "add",
            "web-shop",
            "--scope",
            "recommend",
            "--rate",
            "50/second",
            "--node-dir",
            str(tmp_path),
        ],
    )
    assert added.exit_code == 0, added.output
    text = added.output.strip().splitlines()[-1]
    assert ClientKeys(tmp_path).authenticate(text).scopes == ("recommend",)
    listed = runner.invoke(app, ["keys", "client", "list", "--node-dir", str(tmp_path)])
    assert "web-shop" in listed.output and "50/second" in listed.output and text not in listed.output
    refused = runner.invoke(app, ["keys", "client", "add", "x", "--scope", "admin", "--node-dir", str(tmp_path)])
    assert refused.exit_code == 2 and "scopes must be" in refused.output
    assert runner.invoke(app, ["keys", "client", "revoke", "web-shop", "--node-dir", str(tmp_path)]).exit_code == 0
    assert ClientKeys(tmp_path).authenticate(text) is None


def test_the_logs_reads_go_through_indexes_so_their_cost_does_not_grow_with_the_log(tmp_path):
    log = EventLog(tmp_path / "events.db")

    def plan(query: str, *args) -> str:
        return " ".join(row[-1] for row in log._reader.execute(f"EXPLAIN QUERY PLAN {query}", args).fetchall())

    assert "USING INDEX events_unusable" in plan(COUNT_UNUSABLE)
    assert "USING INDEX events_by_shopper" in plan(READ_SHOPPER, "u1", 0.0, 1e10, 10)


def test_the_log_is_durable_by_its_settings_not_by_luck(tmp_path):
    """An acknowledged append is on disk: WAL with synchronous=FULL (fsync at every commit). A power
    cut is then survived as far as the disk honours fsync; kill -9 is tested with real processes."""
    log = EventLog(tmp_path / "events.db")
    assert log._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert log._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    log.append([Event("u1", "i1", "view", NOW)])
    assert log._db.in_transaction is False  # committed before append returned
