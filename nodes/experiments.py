"""Experiments as the training side drives them: start one on every node (the treatment bundle
uploaded without being served, then started with one salt so a shopper is in the same arm on
every node), read its status, stop it; and pull the nodes' exposure logs exactly once.

Exposures are pulled as events are (`nodes.collect`): per node a cursor in
`<collected>/exposure-cursors.json`, moved only after the page is written to
`exposures/<node>-<first seq>-<last seq>.parquet`; `collected_exposures` keeps one copy per
(node, seq), so a pull that died halfway and ran again counts nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd

from data_contracts import schema
from experiments.analysis import ExperimentReport, report
from experiments.attribution import attribute
from lightpersml.config import ExperimentSettings
from nodes.collect import NODE, SEQ, pull_page, read_cursors, write_cursor
from nodes.fleet import PUSH_TIMEOUT_S, EdgeNode

log = logging.getLogger(__name__)

EXPOSURE_CURSORS = "exposure-cursors.json"
PAGE = 5000


@dataclass(frozen=True)
class ExperimentUpdate:
    """One node's outcome of a start, stop or status call."""

    node: str
    url: str
    status: str  # "running", "stopped", "none" (no experiment), or "failed"
    experiment: str | None
    treatment_share: float | None
    exposures_control: int
    exposures_treatment: int
    detail: str  # why it failed, or why it stopped


def _update(node: EdgeNode, response: httpx.Response | None, error: str = "") -> ExperimentUpdate:
    if response is None or response.status_code != 200:
        if response is not None:
            error = f"HTTP {response.status_code}: {_detail(response)}"
        return ExperimentUpdate(node.name, node.url, "failed", None, None, 0, 0, error)
    status = response.json()
    running = status["running"]
    latest = running or (status["experiments"][0] if status["experiments"] else None)
    exposures = status["exposures"]
    return ExperimentUpdate(
        node.name,
        node.url,
        "running" if running else ("stopped" if latest else "none"),
        latest["name"] if latest else None,
        latest["treatment_share"] if latest else None,
        exposures.get("control", 0),
        exposures.get("treatment", 0),
        "" if running or not latest else latest["stop_reason"],
    )


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", ""))[:300]
    except ValueError:
        return response.text[:300]


def _call(node: EdgeNode, method: str, path: str, **kwargs) -> ExperimentUpdate:
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {node.token}"}, timeout=PUSH_TIMEOUT_S) as client:
            return _update(node, client.request(method, f"{node.url}{path}", **kwargs))
    except httpx.HTTPError as error:
        return _update(node, None, f"unreachable: {type(error).__name__}: {error}")


def start_experiment(
    node: EdgeNode, archive: bytes, name: str, treatment_share: float, window_hours: float, salt: str
) -> ExperimentUpdate:
    """Upload the treatment bundle to `node` without serving it, then start experiment `name`
    against the bundle the node serves now."""
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {node.token}"}, timeout=PUSH_TIMEOUT_S) as client:
            stored = client.post(
                f"{node.url}/admin/bundle",
                params={"activate": "false"},
                content=archive,
                headers={"Content-Type": "application/octet-stream"},
            )
            if stored.status_code != 200:
                return _update(node, stored)
            started = client.post(
                f"{node.url}/admin/experiment",
                json={
                    "name": name,
                    "treatment_bundle_id": stored.json()["bundle_id"],
                    "treatment_share": treatment_share,
                    "window_hours": window_hours,
                    "salt": salt,
                },
            )
            return _update(node, started)
    except httpx.HTTPError as error:
        return _update(node, None, f"unreachable: {type(error).__name__}: {error}")


def experiment_status(node: EdgeNode) -> ExperimentUpdate:
    return _call(node, "GET", "/admin/experiment")


def stop_experiment(node: EdgeNode, reason: str, promote: bool = False) -> ExperimentUpdate:
    """Stop the running experiment; with `promote` the node serves the treatment afterwards."""
    return _call(node, "POST", "/admin/experiment/stop", json={"reason": reason[:500], "promote": promote})


def experiment_definitions(node: EdgeNode) -> list[dict]:
    """Every experiment the node remembers, as /admin/experiment lists them (newest first)."""
    response = httpx.get(f"{node.url}/admin/experiment", headers={"Authorization": f"Bearer {node.token}"}, timeout=30)
    response.raise_for_status()
    return response.json()["experiments"]


@dataclass(frozen=True)
class ExposureCollection:
    """One node's exposures pulled by a report run (cursors: the last seq taken before and after)."""

    node: str
    cursor_before: int
    pulled: int
    cursor_after: int


def collect_exposures(node: EdgeNode, folder: Path) -> ExposureCollection:
    """Pull every new exposure of `node` into `folder/exposures/`."""
    (folder / "exposures").mkdir(parents=True, exist_ok=True)
    cursor_before = cursor = read_cursors(folder, EXPOSURE_CURSORS).get(node.name, 0)
    pulled = 0
    while rows := pull_page(node.url, node.token, cursor, PAGE, log="exposures"):
        shown = [row.pop("items") for row in rows]  # [[item id, score], ...] per exposure
        frame = pd.DataFrame(rows)
        frame["item_ids"] = [[str(item) for item, _ in items] for items in shown]
        frame["scores"] = [[float(score) for _, score in items] for items in shown]
        first, last = int(frame[SEQ].iloc[0]), int(frame[SEQ].iloc[-1])
        frame.assign(**{NODE: node.name}).to_parquet(folder / "exposures" / f"{node.name}-{first}-{last}.parquet")
        write_cursor(folder, node.name, last, EXPOSURE_CURSORS)
        pulled, cursor = pulled + len(frame), last
    log.info("%s: %d exposures pulled (cursor %d → %d)", node.name, pulled, cursor_before, cursor)
    return ExposureCollection(node.name, cursor_before, pulled, cursor)


def collected_exposures(folder: Path, experiment: str | None) -> pd.DataFrame:
    """Every collected exposure of `experiment` (None: of any), one copy per (node, seq), oldest first."""
    parts = sorted((folder / "exposures").glob("*.parquet"))
    if not parts:
        return pd.DataFrame(columns=[NODE, SEQ, "experiment", "arm", "user_id", "item_ids", "scores", "at"])
    exposures = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    if experiment is not None:
        exposures = exposures[exposures["experiment"] == experiment]
    exposures = exposures.drop_duplicates([NODE, SEQ])
    return exposures.sort_values(["at", NODE, SEQ]).reset_index(drop=True)


def experiment_definition(nodes: list[EdgeNode], name: str) -> dict:
    """Experiment `name` as the nodes that ran it define it (the first node's entry); a
    ValueError if no node knows it or the nodes disagree on its share, window or salt (then
    shoppers were not assigned alike)."""
    found = {}
    for node in nodes:
        try:
            entry = next((e for e in experiment_definitions(node) if e["name"] == name), None)
        except httpx.HTTPError as error:
            log.warning("%s: experiment %s not read: %s", node.name, name, error)
            continue
        if entry is not None:
            found[node.name] = entry
    if not found:
        raise ValueError(f"no node of {len(nodes)} knows an experiment named {name!r}")
    keys = ("treatment_share", "window_hours", "salt")
    if len({tuple(e[k] for k in keys) for e in found.values()}) > 1:
        detail = "; ".join(f"{node}: " + ", ".join(f"{k} {e[k]}" for k in keys) for node, e in found.items())
        raise ValueError(f"the nodes disagree on experiment {name!r} ({detail})")
    return next(iter(found.values())) | {"nodes": sorted(found)}


def experiment_report(
    folder: Path, events: pd.DataFrame | None, definition: dict, settings: ExperimentSettings
) -> ExperimentReport:
    """The report of the experiment `definition` names, from the exposures collected in `folder`
    and the events collected from the nodes (`nodes.collect.collected_events`)."""
    if events is None:
        events = pd.DataFrame(columns=[schema.USER_ID, schema.ITEM_ID, schema.EVENT_TYPE, schema.TIMESTAMP])
    name, share, hours = definition["name"], definition["treatment_share"], definition["window_hours"]
    outcomes = attribute(collected_exposures(folder, name), events, hours * 3600)
    return report(outcomes, name, share, hours, settings)
