"""Online experiments at the node: two bundles served at once, each shopper in one arm, and every
answer of the experiment recorded as an exposure.

    <node dir>/experiments.json   the running experiment (if any) and the ones before, replaced atomically
    <node dir>/exposures.db       what each shopper was shown, by which arm (SQLite, WAL, synchronous=FULL)

Assignment is a salted hash of the shopper id, so a shopper sees the same arm on every request,
on every node of the experiment and after a restart; a new salt (a new experiment) reshuffles.
An exposure is synced (group commit, `edge.group_commit`) before the answer is sent, so an
answer a client received is never missing from the log. `at` is the time the answer was for (the
request's `at`, else the node's clock), on the same clock as the events' times, so a report can
attribute a click or purchase of a shown item within the experiment's window to it. A node started
with `--log-exposures` logs its other answers too (arm "served", no experiment), for monitoring.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from edge.group_commit import GroupCommit

CONTROL, TREATMENT = "control", "treatment"
ARMS = (CONTROL, TREATMENT)
SERVED = "served"  # the arm of an answer logged outside an experiment (`serve --log-exposures`)
MAX_WINDOW_S = 30 * 86400.0  # the longest attribution window
KEEP_STOPPED = 50  # stopped experiments remembered in experiments.json


@dataclass(frozen=True)
class Experiment:
    """Control is the bundle the node served when the experiment started; treatment is another
    installed bundle (the same one: an A/A test). Times are Unix seconds."""

    name: str
    control: str  # bundle id
    treatment: str  # bundle id
    treatment_share: float  # of shoppers, in (0, 1)
    window_s: float  # a shown item's click, cart or purchase within this time counts for the exposure
    salt: str
    started_at: float
    control_version: str = ""
    treatment_version: str = ""
    stopped_at: float | None = None
    stop_reason: str = ""

    @property
    def running(self) -> bool:
        return self.stopped_at is None

    def arm(self, user_id: str) -> str:
        """The shopper's arm: the first 8 bytes of sha256(salt, user id) as a share of 2**64."""
        digest = hashlib.sha256(f"{self.salt}\x00{user_id}".encode("utf-8", "surrogatepass")).digest()
        return TREATMENT if int.from_bytes(digest[:8], "big") < self.treatment_share * 2**64 else CONTROL


def new_salt() -> str:
    return secrets.token_hex(8)


class ExperimentBook:
    """experiments.json: at most one running experiment, then the stopped ones, newest first."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.problem = ""  # why the file on disk could not be read (it was set aside)
        self._experiments = self._read()

    def _read(self) -> list[Experiment]:
        try:
            rows = json.loads(self.path.read_text())["experiments"]
            return [Experiment(**row) for row in rows]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as error:
            # A node must start whatever is on disk: an unreadable book is set aside, not fatal.
            aside = self.path.with_suffix(f".unreadable-{int(time.time())}")
            os.replace(self.path, aside)
            self.problem = f"{self.path.name} could not be read ({error}); moved to {aside.name}"
            return []

    @property
    def running(self) -> Experiment | None:
        return next((e for e in self._experiments if e.running), None)

    @property
    def all(self) -> list[Experiment]:
        return list(self._experiments)

    def start(self, experiment: Experiment) -> None:
        if self.running is not None:
            raise ExperimentError(f"experiment {self.running.name!r} is running: stop it first")
        if any(e.name == experiment.name for e in self._experiments):
            raise ExperimentError(
                f"an experiment named {experiment.name!r} already ran on this node: choose a new name"
            )
        self._write([experiment, *self._experiments])

    def stop(self, reason: str) -> Experiment:
        running = self.running
        if running is None:
            raise ExperimentError("no experiment is running")
        stopped = replace(running, stopped_at=time.time(), stop_reason=reason)
        self._write([stopped, *(e for e in self._experiments if e is not running)][: KEEP_STOPPED + 1])
        return stopped

    def _write(self, experiments: list[Experiment]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"experiments": [asdict(e) for e in experiments]}, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._experiments = experiments


class ExperimentError(Exception):
    """An experiment cannot be started or stopped as asked (the message says why)."""


@dataclass(frozen=True)
class Exposure:
    """One answer of an experiment: the items shown, in position order, with their scores."""

    experiment: str
    arm: str
    bundle_id: str
    model_version: str
    user_id: str
    store_id: str
    items: list[tuple[str, float]]  # (item id, score), position 1 first
    at: float  # Unix seconds the answer was for
    exposure_id: str = field(default_factory=lambda: uuid.uuid4().hex)


EXPOSURE_SCHEMA = """
CREATE TABLE IF NOT EXISTS exposures (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    exposure_id TEXT NOT NULL UNIQUE,
    experiment TEXT NOT NULL,
    arm TEXT NOT NULL,
    bundle_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    user_id TEXT NOT NULL,
    store_id TEXT NOT NULL,
    items TEXT NOT NULL,
    at REAL NOT NULL,
    served_at REAL NOT NULL
)
"""
EXPOSURE_COLUMNS = (
    "seq",
    "exposure_id",
    "experiment",
    "arm",
    "bundle_id",
    "model_version",
    "user_id",
    "store_id",
    "items",
    "at",
    "served_at",
)


class ExposureLog:
    """exposures.db: every answer of an experiment, synced before the answer is sent."""

    def __init__(self, path: Path):
        self._db = sqlite3.connect(Path(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(EXPOSURE_SCHEMA)
        self._db.execute("CREATE INDEX IF NOT EXISTS exposures_by_experiment ON exposures (experiment, arm)")
        self._commits = GroupCommit(self._db, self._insert)
        self._reader = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, check_same_thread=False)
        self._read_lock = threading.Lock()

    def record(self, exposure: Exposure) -> int:
        """Log one exposure durably; returns its seq."""
        return self._commits.append([exposure])[0]

    @staticmethod
    def _insert(db: sqlite3.Connection, e: Exposure) -> int:
        return db.execute(
            "INSERT INTO exposures (exposure_id, experiment, arm, bundle_id, model_version, user_id, store_id, "
            "items, at, served_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
            (
                e.exposure_id,
                e.experiment,
                e.arm,
                e.bundle_id,
                e.model_version,
                e.user_id,
                e.store_id,
                json.dumps(e.items, ensure_ascii=False, separators=(",", ":")),
                e.at,
                time.time(),
            ),
        ).fetchone()[0]

    def since(self, after: int = 0, limit: int = 1000) -> list[dict]:
        """Exposures with seq > `after`, oldest first (the report's cursor); `items` as a list of
        [item id, score] pairs."""
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT {', '.join(EXPOSURE_COLUMNS)} FROM exposures WHERE seq > ? ORDER BY seq LIMIT ?",
                (int(after), int(limit)),
            ).fetchall()
        return [dict(zip(EXPOSURE_COLUMNS, row)) | {"items": json.loads(row[8])} for row in rows]

    def counts(self, experiment: str) -> dict[str, int]:
        """Exposures per arm of `experiment` (a scan of that experiment's rows: for status calls)."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT arm, COUNT(*) FROM exposures WHERE experiment = ? GROUP BY arm", (experiment,)
            ).fetchall()
        return {arm: 0 for arm in ARMS} | dict(rows)

    def close(self) -> None:
        self._reader.close()
        self._db.close()
