"""The deploy flow against three real node processes, one of them provisioned with another
signing key: two nodes are updated, the third refuses the bundle, keeps serving its old one, and
the report says so. Then a rollback returns the updated nodes to their previous bundle."""

from __future__ import annotations

import httpx
import pytest

import mlflow
from edge.bundle import init_keys
from lightpersml import config
from tests.edge.conftest import TOKEN, NodeProcess, build_bundle, write_nodes_file


@pytest.fixture
def promoted_version(serving_dir) -> str:
    """A registry version whose deploy/ artifacts are the slice's serving folder, behind alias `edge`."""
    client = mlflow.MlflowClient()
    mlflow.set_experiment("deploy-test")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(serving_dir), "deploy")
    name = config.registered_model("cj-slice")  # the only dataset of this module's store
    try:
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException:
        pass  # already there
    serving = f"runs:/{run.info.run_id}/deploy"
    version = client.create_model_version(
        name, serving, run.info.run_id, tags={"tier": "edge", "serving_artifacts": serving}
    )
    client.set_registered_model_alias(name, "edge", version.version)
    return str(version.version)


@pytest.fixture
def three_nodes(tmp_path, edge_bundle, serving_dir, signing_keys):
    other_private, other_public = init_keys(tmp_path / "other-keys")
    other_bundle = build_bundle(serving_dir, other_private, tmp_path / "other-bundle", "7")
    nodes = []
    try:
        for name, public, bundle in [
            ("store-a", signing_keys[1], edge_bundle),
            ("store-b", signing_keys[1], edge_bundle),
            ("store-c", other_public, other_bundle),
        ]:
            (tmp_path / name).mkdir()
            nodes.append((name, NodeProcess(tmp_path / name, public).start(bundle)))
        yield nodes
    finally:
        for _, node in nodes:
            node.stop()


def test_deploy_updates_good_nodes_and_reports_the_one_that_refused(
    prefect_api, promoted_version, three_nodes, signing_keys, tmp_path, monkeypatch
):
    from flows.deploy import deploy_flow, rollback_flow

    monkeypatch.setenv("STORE_TOKEN", TOKEN)
    nodes_file = write_nodes_file(
        tmp_path / "nodes.toml", {name: node.url for name, node in three_nodes}, token_env="STORE_TOKEN"
    )
    rows = {row.node: row for row in deploy_flow(str(nodes_file), key=str(signing_keys[0]))}
    for name in ("store-a", "store-b"):
        assert rows[name].status == "updated" and rows[name].version_after == promoted_version
        assert rows[name].version_before == "7"
    assert rows["store-c"].status == "failed" and "does not verify" in rows["store-c"].detail
    urls = dict(three_nodes)
    assert httpx.get(f"{urls['store-c'].url}/readyz").json()["model_version"] == "7"  # still serving its old bundle
    answer = httpx.get(
        f"{urls['store-a'].url}/v1/recommendations",
        params={"user_id": "x", "store_id": "y"},
        headers=urls["store-a"].headers,
    ).json()
    assert answer["model_version"] == promoted_version

    back = {row.node: row for row in rollback_flow(str(nodes_file))}
    assert back["store-a"].status == "updated" and back["store-a"].version_after == "7"
    assert back["store-b"].version_after == "7"
    assert back["store-c"].status == "failed" and "no previous bundle" in back["store-c"].detail


def test_deploy_and_rollback_commands_exit_1_on_a_bad_nodes_file_or_a_dead_node(prefect_api, tmp_path):
    import socket

    from typer.testing import CliRunner

    from lightpersml.cli import app

    runner = CliRunner()
    bad = tmp_path / "bad.toml"
    bad.write_text('[[nodes]]\nname = "store-a"\nurl = "http://127.0.0.1:1"\n')  # no token
    refused = runner.invoke(app, ["deploy", "--nodes", str(bad)])
    assert refused.exit_code == 1 and "bad.toml" in refused.output and "missing token" in refused.output
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        dead = tmp_path / "dead.toml"
        dead.write_text(f'[[nodes]]\nname = "gone"\nurl = "http://127.0.0.1:{s.getsockname()[1]}"\ntoken = "{TOKEN}"\n')
        result = runner.invoke(app, ["rollback", "--nodes", str(dead)])
    assert result.exit_code == 1 and "gone" in result.output and "unreachable" in result.output


def test_experiment_commands_start_show_and_stop_an_experiment_on_every_node(
    prefect_api, promoted_version, three_nodes, signing_keys, tmp_path, monkeypatch
):
    """`experiment start` serves alias `edge`'s version as the treatment beside each node's bundle
    (the node with another key refuses it and says so); swaps wait while it runs; `stop --promote`
    leaves the treatment served."""
    from typer.testing import CliRunner

    from flows.deploy import deploy_flow
    from lightpersml.cli import app

    monkeypatch.setenv("STORE_TOKEN", TOKEN)
    nodes_file = write_nodes_file(
        tmp_path / "nodes.toml", {name: node.url for name, node in three_nodes}, token_env="STORE_TOKEN"
    )
    runner = CliRunner()
    options = ["--nodes", str(nodes_file), "--key", str(signing_keys[0]), "--alias", "edge"]
    started = runner.invoke(app, ["experiment", "start", "trial", *options, "--share", "0.3"], terminal_width=200)
    assert started.exit_code == 1, started.output  # store-c refused the treatment
    assert rows(started.output, "running") == {"store-a", "store-b"} and "does not verify" in started.output
    urls = dict(three_nodes)
    answers = [
        httpx.get(
            f"{urls['store-a'].url}/v1/recommendations",
            params={"user_id": f"shopper-{n}", "store_id": "y"},
            headers=urls["store-a"].headers,
        ).json()
        for n in range(60)
    ]
    versions = {(a["arm"], a["model_version"]) for a in answers}
    assert versions == {("control", "7"), ("treatment", promoted_version)}
    assert all(a["experiment"] == "trial" and a["exposure_id"] for a in answers)
    status = runner.invoke(app, ["experiment", "status", "--nodes", str(nodes_file)], terminal_width=200)
    assert status.exit_code == 0 and rows(status.output, "running") == {"store-a", "store-b"}
    assert rows(status.output, "none") == {"store-c"} and "30%" in status.output
    swap = {row.node: row for row in deploy_flow(str(nodes_file), key=str(signing_keys[0]))}
    assert all("while experiment 'trial' runs" in swap[name].detail for name in ("store-a", "store-b"))
    stopped = runner.invoke(app, ["experiment", "stop", "--nodes", str(nodes_file), "--promote"], terminal_width=200)
    assert stopped.exit_code == 1 and rows(stopped.output, "stopped") == {"store-a", "store-b"}
    assert "no experiment is running" in stopped.output
    for name in ("store-a", "store-b"):
        assert httpx.get(f"{urls[name].url}/readyz").json()["model_version"] == promoted_version


def rows(output: str, status: str) -> set[str]:
    """The nodes a command's table shows with `status`."""
    import re

    return set(re.findall(rf"(store-[a-z])\W+{status}\b", output))
