"""prefect.yaml: every deployment points at a flow that takes its parameters (deployed for real
in tests/integration/test_prefect_deployments.py)."""

import importlib
import inspect
from pathlib import Path

import yaml
from prefect import Flow

ROOT = Path(__file__).resolve().parents[2]


def test_deployments_point_at_flows_that_take_their_parameters():
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    for deployment in deployments:
        path, name = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
        assert isinstance(flow, Flow)
        assert set(deployment["parameters"]) <= set(inspect.signature(flow.fn).parameters), deployment["name"]
