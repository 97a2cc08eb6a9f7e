"""The monitoring flow against a real node's collected events: a quarter of Complete Journey's
households, a P-TopFreq bundle fitted before T on a node started with --log-exposures, the first
week after T replayed as it happened (every check passes), then the second week with the
biggest category taken out of stock (the flow fails on category_drop and recommends a retrain)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pandas as pd
import pytest

from data_contracts import schema
from lightpersml import config
from tests.edge.conftest import TOKEN, NodeProcess, write_nodes_file

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def before_t(shop, signing_keys, tmp_path_factory):
    """(the shop's data before T as a folder of contract files, a P-TopFreq bundle of it, the clean full data, T)."""
    from data_contracts.sources import load_source
    from data_contracts.validation import validate_dataset
    from experiments.simulator import baseline_bundles

    tmp = tmp_path_factory.mktemp("monitoring")
    clean, _ = validate_dataset(load_source(str(shop)), tmp / "report", **vars(config.ValidationSettings()))
    cut, bundles = baseline_bundles(clean, 2, tmp / "bundles", signing_keys[0])
    folder = tmp / "shop-before-t"
    folder.mkdir()
    for name, frame in clean.tables().items():
        frame = frame[frame[schema.TIMESTAMP] < cut] if name == "events" else frame
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    return folder, bundles["p_topfreq"], clean, cut


def run_deployment(home, nodes, data) -> tuple[str, str]:
    """Deploy prefect.yaml (as the README says) with `home` as the project folder, run
    `daily-monitoring` once through a process worker; returns the flow run's (state, its logs)."""
    import asyncio
    import json
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    root = Path(__file__).resolve().parents[2]
    if not (home / "flows").exists():
        (home / "flows").symlink_to(root / "flows")  # the worker runs entrypoints from the project folder
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "LIGHTPERSML_HOME": str(home)}
    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]

    def run(*args: str) -> str:
        done = subprocess.run([*prefect, *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"prefect {args}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
        return done.stdout + done.stderr

    asyncio.run(_work_pool("lightpersml-process"))
    run("deploy", "--name", "daily-monitoring")
    parameters = json.dumps({"nodes_file": str(nodes), "data": str(data)})
    started = run("deployment", "run", "monitoring/daily-monitoring", "--params", parameters)
    flow_run = started.split("UUID:")[1].split()[0]
    worker = run("worker", "start", "--pool", "lightpersml-process", "--run-once")
    return asyncio.run(_state(flow_run)), worker


async def _work_pool(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    async with get_client() as client:
        try:
            await client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


async def _state(flow_run: str) -> str:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return (await client.read_flow_run(flow_run)).state.type.value


def test_a_normal_week_passes_and_a_week_without_its_biggest_category_fails_the_flow(
    prefect_api, before_t, signing_keys, tmp_path, project_home
):
    import mlflow
    from experiments.simulator import replay, visits
    from flows.monitor import monitoring_flow
    from monitoring.checks import MonitoringBreach
    from tracking.monitoring_runs import MLFLOW_EXPERIMENT

    data, bundle, clean, cut = before_t
    week = pd.Timedelta(weeks=1)
    planned = visits(clean, cut)
    first = [v for v in planned if v.at < (cut + week - pd.Timestamp("1970-01-01")).total_seconds()]
    category = clean.items.set_index(schema.ITEM_ID)[schema.CATEGORY]
    node = NodeProcess(tmp_path, signing_keys[1], options=("--log-exposures",)).start(bundle)
    nodes = write_nodes_file(tmp_path / "nodes.toml", {"store": node.url})
    try:
        assert replay(node.url, node.headers, first).failed_visits == 0
        state, worker = run_deployment(project_home, nodes, data)
        assert state == "COMPLETED", worker[-3000:]  # run from its deployment, by a worker

        # The second week, with the first week's biggest category gone from every store.
        second = planned[len(first) :]
        bought = pd.Series([item for v in first for item, _ in v.lines]).map(category)
        gone = bought.value_counts().index[0]
        gone_items = set(category[category == gone].index)
        out = [
            {"store_id": store, "item_id": item, "in_stock": False}
            for store in {v.store_id for v in second}
            for item in gone_items
        ]
        for start in range(0, len(out), 100_000):
            assert (
                httpx.put(
                    f"{node.url}/admin/stock", json={"changes": out[start : start + 100_000]}, headers=AUTH
                ).status_code
                == 200
            )
        shifted = [replace(v, lines=tuple(line for line in v.lines if line[0] not in gone_items)) for v in second]
        replay(node.url, node.headers, [v for v in shifted if v.lines])
        with pytest.raises(MonitoringBreach, match="category_drop") as breach:  # (and category_shift)
            monitoring_flow(str(nodes), str(data))
        assert "retrain" in str(breach.value)
    finally:
        node.stop()
    runs = mlflow.search_runs(experiment_names=[MLFLOW_EXPERIMENT], order_by=["start_time ASC"])
    assert list(runs["tags.retrain"]) == ["false", "true"]
    assert runs["metrics.online_hit_rate"].iloc[0] > 0.02  # measured from the logged answers
    assert pd.isna(runs["metrics.score_shift"].iloc[0])  # no week before to compare with yet
    assert "category_drop" in runs["tags.breached"].iloc[1].split(",")
    assert runs["metrics.score_shift"].iloc[1] >= 0  # measured once a week before exists
