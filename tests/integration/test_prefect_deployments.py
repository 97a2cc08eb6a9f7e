"""prefect.yaml deployed for real: `prefect deploy --all` (the README's command) against the
session's Prefect server creates the four deployments, with their flows' entrypoints,
parameters, schedules, work pool and the project folder as the worker's working directory."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect", "--no-prompt"]


def _prefect(*args: str, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([*PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"prefect {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done


async def _create_work_pool(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    async with get_client() as client:  # what `prefect work-pool create NAME --type process` does
        await client.create_work_pool(WorkPoolCreate(name=name, type="process"))


async def _read_deployments() -> dict:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return {d.name: d for d in await client.read_deployments()}


def test_prefect_deploy_all_creates_the_scheduled_and_manual_deployments(prefect_api, project_home):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "LIGHTPERSML_HOME": str(project_home)}
    asyncio.run(_create_work_pool("lightpersml-process"))
    _prefect("deploy", "--all", env=env)

    deployments = asyncio.run(_read_deployments())
    assert set(deployments) == {"nightly-training", "deploy-to-edge", "federated-training", "daily-monitoring"}
    nightly, edge, federated = (deployments[n] for n in ("nightly-training", "deploy-to-edge", "federated-training"))
    assert nightly.entrypoint == "flows/train.py:training_flow"
    assert nightly.parameters == {"data": "completejourney", "profile": "full"}
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in nightly.schedules] == [("0 2 * * *", "UTC", True)]
    assert [(s.schedule.cron, s.active) for s in federated.schedules] == [("0 3 * * 0", True)]  # Sundays
    monitoring = deployments["daily-monitoring"]
    assert monitoring.entrypoint == "flows/monitor.py:monitoring_flow"
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in monitoring.schedules] == [
        ("0 6 * * *", "UTC", True)
    ]
    assert monitoring.parameters == {"nodes_file": "edge-nodes.toml", "data": "completejourney"}
    assert federated.parameters["target_epsilon"] == 8.0 and federated.parameters["nodes"] == 8
    assert edge.schedules == [] and edge.parameters == {
        "nodes_file": "edge-nodes.toml",
        "dataset": "completejourney",
        "alias": "edge",
    }
    for deployment in deployments.values():
        assert deployment.work_pool_name == "lightpersml-process"
        # The worker runs in the project folder, with the project's state (resolved at deploy time).
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(project_home)}}
        ]
        assert deployment.job_variables["env"] == {"LIGHTPERSML_HOME": str(project_home)}
