"""Experiments at the node, in-process: deterministic assignment, two engines at once, exposures
logged, swaps refused while one runs, and a restart that resumes it (or says why it cannot)."""

from __future__ import annotations

import json

import pytest

from edge.bundle import BundleError, load_public_key
from edge.engine import Event
from edge.experiment import CONTROL, TREATMENT, Experiment, ExperimentError, Exposure
from edge.node import Node
from tests.edge.conftest import build_bundle, manifest


@pytest.fixture(scope="module")
def treatment_bundle(serving_dir, signing_keys, tmp_path_factory):
    """The same files as `edge_bundle`, signed as version 8: another bundle id."""
    return build_bundle(serving_dir, signing_keys[0], tmp_path_factory.mktemp("treatment") / "v8", "8")


def node_at(folder, signing_keys) -> Node:
    return Node(folder, load_public_key(signing_keys[1]))


def test_assignment_is_a_salted_hash_that_follows_the_share():
    experiment = Experiment("e", "a", "b", 0.3, 3600, "salt-1", 0.0)
    users = [f"user-{n}" for n in range(20_000)]
    arms = [experiment.arm(u) for u in users]
    assert arms == [experiment.arm(u) for u in users]  # the same shopper, the same arm
    assert abs(arms.count(TREATMENT) / len(users) - 0.3) < 0.02
    reshuffled = Experiment("e2", "a", "b", 0.3, 3600, "salt-2", 0.0)
    moved = sum(a != reshuffled.arm(u) for a, u in zip(arms, users))
    assert 0.3 * len(users) < moved < 0.5 * len(users)  # a new salt is a new random split (≈ 2·0.3·0.7)


def test_an_experiment_serves_both_bundles_refuses_swaps_and_promotes_its_treatment(
    tmp_path, edge_bundle, treatment_bundle, signing_keys
):
    node = node_at(tmp_path, signing_keys)
    node.start(edge_bundle)
    control = node.current
    treatment = node.install_folder(treatment_bundle, activate=False)
    assert node.current == control and treatment != control  # stored, not served
    with pytest.raises(ExperimentError, match="not installed"):
        node.start_experiment("e1", "v9-missing", 0.5, 3600)
    experiment = node.start_experiment("e1", treatment, 0.5, 3600, salt="s")
    assert (experiment.control_version, experiment.treatment_version) == ("7", "8")
    with pytest.raises(ExperimentError, match="is running"):
        node.start_experiment("e2", treatment, 0.5, 3600)
    users = [f"u{n}" for n in range(200)]
    served = {u: node.serving(u) for u in users}
    for user, serving in served.items():
        assert serving.arm == experiment.arm(user)
        assert serving.engine.version == ("8" if serving.arm == TREATMENT else "7")
    assert {s.arm for s in served.values()} == {CONTROL, TREATMENT}
    with pytest.raises(BundleError, match="while experiment 'e1' runs"):
        node.install_folder(edge_bundle)
    with pytest.raises(BundleError, match="while experiment 'e1' runs"):
        node.rollback()
    # Events reach both engines: a shopper both hold in memory has the cart addition in each.
    shopper, item = "u1", str(node.engine.catalog.item_ids[0])
    engines = (node.engine, node.trial.treatment)
    for engine in engines:
        engine.recommend(shopper, None, 10)  # now in the engine's memory: no read from the log
    node.record([Event(shopper, item, "add_to_cart", _after(node))], [None])
    assert all(engine._shoppers[shopper].cart == {engine.item_index.get(item)} for engine in engines)
    node.stop_experiment("done", promote=True)
    assert node.current == treatment and node.previous == control and node.trial is None
    assert node.serving("u1").arm is None
    stopped = node.experiments.all[0]
    assert stopped.stop_reason == "done" and stopped.stopped_at is not None
    with pytest.raises(ExperimentError, match="already ran"):
        node.start_experiment("e1", control, 0.5, 3600)


def test_a_restarted_node_resumes_its_experiment_with_the_same_assignment(
    tmp_path, edge_bundle, treatment_bundle, signing_keys
):
    node = node_at(tmp_path, signing_keys)
    node.start(edge_bundle)
    treatment = node.install_folder(treatment_bundle, activate=False)
    experiment = node.start_experiment("e1", treatment, 0.4, 3600)
    seq = node.exposures.record(Exposure("e1", TREATMENT, treatment, "8", "u1", "s1", [("i1", 1.5)], 100.0))
    node.install_folder(edge_bundle, activate=False)  # stored again: pruning keeps the treatment
    again = node_at(tmp_path, signing_keys)
    assert again.start() == []
    assert again.trial.experiment == experiment and again.trial.treatment.version == "8"
    assert [again.serving(f"u{n}").arm for n in range(50)] == [experiment.arm(f"u{n}") for n in range(50)]
    logged = again.exposures.since(0)
    assert [(row["seq"], row["items"]) for row in logged] == [(seq, [["i1", 1.5]])]
    assert again.exposures.counts("e1") == {CONTROL: 0, TREATMENT: 1}


def test_a_node_whose_experiment_cannot_resume_starts_without_it_and_says_why(
    tmp_path, edge_bundle, treatment_bundle, signing_keys
):
    import shutil

    node = node_at(tmp_path, signing_keys)
    node.start(edge_bundle)
    treatment = node.install_folder(treatment_bundle, activate=False)
    node.start_experiment("e1", treatment, 0.5, 3600)
    shutil.rmtree(tmp_path / "bundles" / treatment)  # e.g. a disk cleaned by hand
    again = node_at(tmp_path, signing_keys)
    problems = again.start()
    assert again.current == node.current and again.trial is None
    assert len(problems) == 1 and "experiment 'e1' stopped" in problems[0]
    assert "could not resume" in again.experiments.all[0].stop_reason
    # An unreadable experiments.json is set aside: the node still starts and serves.
    (tmp_path / "experiments.json").write_text("{not json")
    third = node_at(tmp_path, signing_keys)
    problems = third.start()
    assert third.engine is not None and "could not be read" in problems[0]
    assert list(tmp_path.glob("experiments.unreadable-*"))


def test_an_aa_experiment_serves_the_control_bundle_in_both_arms(tmp_path, edge_bundle, signing_keys):
    node = node_at(tmp_path, signing_keys)
    node.start(edge_bundle)
    experiment = node.start_experiment("aa", node.current, 0.5, 3600)
    assert experiment.treatment == experiment.control == json.loads((tmp_path / "active.json").read_text())["current"]
    arms = {node.serving(f"u{n}").arm for n in range(100)}
    assert arms == {CONTROL, TREATMENT} and node.trial.treatment is node.engine
    assert manifest(edge_bundle)["model_version"] == node.engine.version


def _after(node: Node):
    from datetime import UTC, datetime, timedelta

    return datetime.fromtimestamp(node.engine.cutoff_at, UTC) + timedelta(hours=1)
