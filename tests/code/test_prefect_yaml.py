"""prefect.yaml: every deployment points at a flow that takes its parameters; the nightly
training and the weekly federated training are scheduled, deploying to the edge is a person's
decision."""

import importlib
import inspect
from pathlib import Path

import yaml
from prefect import Flow

ROOT = Path(__file__).resolve().parents[2]


def test_deployments_point_at_flows_that_take_their_parameters():
    deployments = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    assert set(deployments) == {"nightly-training", "deploy-to-edge", "federated-training"}
    for deployment in deployments.values():
        path, name = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
        assert isinstance(flow, Flow)
        assert set(deployment["parameters"]) <= set(inspect.signature(flow.fn).parameters)
    assert deployments["nightly-training"]["schedules"][0]["cron"] == "0 2 * * *"
    assert deployments["federated-training"]["schedules"][0]["cron"] == "0 3 * * 0"  # Sundays
    assert not deployments["deploy-to-edge"].get("schedules")
