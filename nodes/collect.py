"""Collect: shopper events from edge nodes back into the training data, exactly once.

Per node a cursor (the last event `seq` taken) lives in `<state>/collected/<dataset>/cursors.json`.
A pull takes the node's events after the cursor, validates them with the data contract, writes
the valid ones to `events/<node>-<first seq>-<last seq>.parquet` and only then moves the cursor.
A run that dies in between pulls the same events again next time; `collected_events` keeps one
copy per (node, seq), so nothing is counted twice and nothing acknowledged is lost. Events whose
item is not in the items table (new products), and events whose time a node would refuse today
(unreadable, before the node's data begins, or after the pull plus the node's clock skew: rows an
older node logged unchecked), go to `quarantine/` with the reason, not to training.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd

from data_contracts import schema
from data_contracts.dataset import Dataset
from data_contracts.validation import validate_dataset
from edge.inputs import CLOCK_SKEW
from lightpersml.config import ValidationSettings

log = logging.getLogger(__name__)

PAGE = 5000  # events per request
EVENT_COLUMNS = (
    schema.USER_ID,
    schema.ITEM_ID,
    schema.EVENT_TYPE,
    schema.TIMESTAMP,
    schema.STORE_ID,
    schema.BASKET_ID,
    schema.VALUE,
)
NODE, SEQ = "node", "seq"


def collected_dir(state: Path, dataset_name: str) -> Path:
    return Path(state) / "collected" / dataset_name


def read_cursors(folder: Path, name: str = "cursors.json") -> dict[str, int]:
    """Per node, the last `seq` taken (`name`: one cursor file per log pulled)."""
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else {}


def write_cursor(folder: Path, node: str, seq: int, name: str = "cursors.json") -> None:
    cursors = read_cursors(folder, name) | {node: int(seq)}
    tmp = folder / f"{name}.tmp"
    tmp.write_text(json.dumps(cursors, indent=2, sort_keys=True))
    os.replace(tmp, folder / name)


def pull_page(url: str, token: str, after: int, limit: int = PAGE, log: str = "events") -> list[dict]:
    """Rows of a node's `log` ("events" or "exposures") after seq `after`, oldest first."""
    response = httpx.get(
        f"{url.rstrip('/')}/admin/{log}",
        params={"after": after, "limit": limit},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()[log]


def events_from(url: str, token: str) -> pd.Timestamp | None:
    """The earliest event time the node accepts (its /readyz `events_from`, UTC naive), if it says."""
    ready = httpx.get(f"{url.rstrip('/')}/readyz", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    earliest = ready.json().get("events_from") if ready.status_code == 200 else None
    return pd.Timestamp(earliest).tz_convert(None) if earliest else None


def _as_contract_events(rows: list[dict]) -> pd.DataFrame:
    """The rows in the contract's columns; a timestamp pandas cannot hold (e.g. year 9999) is NaT."""
    frame = pd.DataFrame(rows)
    stamps = pd.to_datetime(frame[schema.TIMESTAMP], utc=True, format="ISO8601", errors="coerce")
    frame[schema.TIMESTAMP] = stamps.dt.tz_localize(None)  # UTC, naive like the bundled data
    return frame


def _quarantine_reasons(frame: pd.DataFrame, known_items: set[str], earliest: pd.Timestamp | None) -> pd.Series:
    """Per row, why it cannot go to training ("" when it can)."""
    latest = pd.Timestamp.now(tz="UTC").tz_convert(None) + CLOCK_SKEW
    stamps = frame[schema.TIMESTAMP]
    outside = stamps.isna() | (stamps > latest) | ((stamps < earliest) if earliest is not None else False)
    reasons = pd.Series("", index=frame.index)
    reasons[~frame[schema.ITEM_ID].isin(known_items)] = "item_id not in the items table"
    reasons[outside] = (
        f"timestamp unreadable or outside the node's window ({earliest or 'any'} to {latest:%Y-%m-%d %H:%M} UTC)"
    )
    return reasons


@dataclass(frozen=True)
class NodeCollection:
    """One node's outcome of a collect run. Counts are events; the cursors are the last event
    `seq` taken before and after (None: the node could not be pulled)."""

    node: str
    status: str  # "collected" or "failed"
    detail: str  # why it failed ("" when collected)
    cursor_before: int | None
    pulled: int  # events read from the node
    appended: int  # valid events written to the training data
    quarantined: int  # events set aside with a reason, not for training
    cursor_after: int | None


def collect_node(node: str, url: str, token: str, items: pd.DataFrame, folder: Path) -> NodeCollection:
    """Pull every new event of one node into `folder`; returns counts for the report."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "events").mkdir(exist_ok=True)
    cursor_before = cursor = read_cursors(folder).get(node, 0)
    pulled = appended = quarantined = 0
    known_items = set(items[schema.ITEM_ID].astype(str))
    earliest = events_from(url, token)
    while rows := pull_page(url, token, cursor):
        frame = _as_contract_events(rows)
        first, last = int(frame[SEQ].iloc[0]), int(frame[SEQ].iloc[-1])
        reasons = _quarantine_reasons(frame, known_items, earliest)
        unknown = reasons != ""
        if unknown.any():
            (folder / "quarantine").mkdir(exist_ok=True)
            frame[unknown].assign(reason=reasons[unknown], **{NODE: node}).to_parquet(
                folder / "quarantine" / f"{node}-{first}-{last}.parquet", index=False
            )
        batch = frame[~unknown].reset_index(drop=True)
        if len(batch):
            dataset = Dataset(
                name=f"{node} events",
                events=batch[[*EVENT_COLUMNS, SEQ]].assign(**{NODE: node}),
                items=items,
                sources={"events": f"{url}/admin/events?after={cursor}"},
            )
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            # Raises DataValidationError on a blocking failure: the cursor stays, nothing is appended.
            clean, checked = validate_dataset(
                dataset, folder / "reports" / f"{node}-{first}-{last}-{stamp}", **vars(ValidationSettings())
            )
            quarantined += int(checked.quarantined.get("events", 0))
            clean.events.to_parquet(folder / "events" / f"{node}-{first}-{last}.parquet", index=False)
            appended += len(clean.events)
        quarantined += int(unknown.sum())
        pulled += len(frame)
        write_cursor(folder, node, last)
        cursor = last
    log.info(
        "%s: %d events pulled, %d appended, %d quarantined (cursor %d → %d)",
        node,
        pulled,
        appended,
        quarantined,
        cursor_before,
        cursor,
    )
    return NodeCollection(node, "collected", "", cursor_before, pulled, appended, quarantined, cursor)


def failed_collection(node: str, error: BaseException) -> NodeCollection:
    """The report of a node whose events could not be pulled (after the task's retries)."""
    return NodeCollection(node, "failed", f"{type(error).__name__}: {error}", None, 0, 0, 0, None)


def collected_events(state: Path, dataset_name: str) -> pd.DataFrame | None:
    """Every collected event of `dataset_name`, one copy per (node, seq), in the contract's columns."""
    parts = sorted((collected_dir(state, dataset_name) / "events").glob("*.parquet"))
    if not parts:
        return None
    events = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    events = events.drop_duplicates([NODE, SEQ]).sort_values([NODE, SEQ])
    return events[list(EVENT_COLUMNS)].reset_index(drop=True)


def with_collected_events(dataset: Dataset, state: Path) -> Dataset:
    """`dataset` plus the events collected from its edge nodes (nothing changes when there are none)."""
    extra = collected_events(state, dataset.name)
    if extra is None:
        return dataset
    events = pd.concat(
        [dataset.events, extra[[c for c in extra.columns if c in dataset.events.columns or c == schema.EVENT_TYPE]]],
        ignore_index=True,
    )
    if schema.EVENT_TYPE in events.columns:
        events[schema.EVENT_TYPE] = events[schema.EVENT_TYPE].fillna(schema.DEFAULT_EVENT_TYPE)
    notes = [*dataset.notes, f"appended {len(extra):,} events collected from edge nodes"]
    return Dataset(
        name=dataset.name,
        events=events,
        items=dataset.items,
        stores=dataset.stores,
        availability=dataset.availability,
        users=dataset.users,
        sources=dataset.sources,
        notes=notes,
    )
