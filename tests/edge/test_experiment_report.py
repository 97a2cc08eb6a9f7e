"""Online experiments end to end on real behaviour: a quarter of Complete Journey's households' last two weeks
of baskets replayed against a real node process running an experiment (experiments.simulator), the
node killed mid-replay and restarted, and the `experiment-report` flow run on what it collected.

P-TopFreq against G-TopFreq must come out with the right sign and an interval covering the
offline difference (both bundles replayed through every shopper in-process), and trip the
guardrail; P-TopFreq against itself (A/A) must find nothing. Every acknowledged answer and event
must be in the report's data exactly once, however often the report runs."""

from __future__ import annotations

import signal
import threading
from dataclasses import replace

import httpx
import pytest

from edge.bundle import archive_bundle
from lightpersml import config
from nodes.fleet import EdgeNode
from tests.edge.conftest import TOKEN, NodeProcess, write_nodes_file

AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEEKS = 2
SETTINGS = replace(config.ExperimentSettings(), resamples=1000)


@pytest.fixture(scope="module")
def replay_data(shop, signing_keys, tmp_path_factory):
    """(P-TopFreq and G-TopFreq bundles fitted before T, the shop's baskets from T on)."""
    from data_contracts.sources import load_source
    from data_contracts.validation import validate_dataset
    from experiments.simulator import baseline_bundles, visits

    tmp = tmp_path_factory.mktemp("arms")
    clean, _ = validate_dataset(load_source(str(shop)), tmp / "report", **vars(config.ValidationSettings()))
    cut, bundles = baseline_bundles(clean, WEEKS, tmp / "bundles", signing_keys[0])
    return bundles, visits(clean, cut)


@pytest.fixture(scope="module")
def offline(replay_data, signing_keys):
    """P-TopFreq's and G-TopFreq's answers to every visit, in-process (what the node answers)."""
    from experiments.simulator import offline_rates

    bundles, planned = replay_data
    return {name: offline_rates(bundles[name], signing_keys[1], planned) for name in ("p_topfreq", "g_topfreq")}


def nodes_file(tmp_path, node: NodeProcess):
    """A nodes file naming the node after the test folder: every node here is new, its logs start at seq 1,
    and the collected cursors are per node name."""
    return write_nodes_file(tmp_path / "nodes.toml", {tmp_path.name: node.url})


def start(node: NodeProcess, treatment, name: str, salt: str):
    from nodes.experiments import start_experiment

    update = start_experiment(EdgeNode(name, node.url, TOKEN), archive_bundle(treatment), name, 0.5, 1.0, salt)
    assert update.status == "running", update


def logged(node: NodeProcess, log: str) -> list[dict]:
    rows, after = [], 0
    while page := httpx.get(f"{node.url}/admin/{log}", params={"after": after, "limit": 10_000}, headers=AUTH).json()[
        log
    ]:
        rows, after = rows + page, page[-1]["seq"]
    return rows


def test_ab_finds_the_better_arm_with_exact_per_arm_rates_and_the_guardrail_stops_it(
    prefect_api, shop, replay_data, offline, signing_keys, tmp_path
):
    from edge.experiment import Experiment
    from experiments.simulator import offline_rates, replay
    from flows.experiment_report import experiment_report_flow
    from nodes.experiments import experiment_status

    bundles, planned = replay_data
    node = NodeProcess(tmp_path, signing_keys[1]).start(bundles["p_topfreq"])
    try:
        start(node, bundles["g_topfreq"], "ptopfreq-vs-gtopfreq", salt="ab")
        replayed = replay(node.url, node.headers, planned)
        assert replayed.failed_visits == 0
        nodes = str(nodes_file(tmp_path, node))
        report = experiment_report_flow(nodes, "ptopfreq-vs-gtopfreq", str(shop), settings=SETTINGS)
        status = experiment_status(EdgeNode("node", node.url, TOKEN))
        with node.client() as client:  # the guardrail stopped the treatment: everyone gets the control
            answer = client.get("/v1/recommendations", params={"user_id": planned[0].user_id, "store_id": "x"}).json()
        again = experiment_report_flow(nodes, "ptopfreq-vs-gtopfreq", str(shop), settings=SETTINGS)
    finally:
        node.stop()
    assert sum(a.exposures for a in report.arms) == replayed.exposures == len(planned)
    # Each arm's rate is exactly what its bundle answers its shoppers offline: attribution is right.
    arm = Experiment("x", "", "", 0.5, 3600, "ab", 0).arm
    purchase = report.metric("purchase_rate")
    for name, side, interval in (
        ("p_topfreq", "control", purchase.control),
        ("g_topfreq", "treatment", purchase.treatment),
    ):
        own = offline_rates(bundles[name], signing_keys[1], [v for v in planned if arm(v.user_id) == side])
        assert interval.estimate == pytest.approx(own.purchase_rate, abs=1e-3), (name, interval, own)
    # The right sign: G-TopFreq is worse for every shopper together, and the report says so.
    difference = offline["g_topfreq"].purchase_rate - offline["p_topfreq"].purchase_rate
    assert difference < 0 and purchase.difference.high < 0, (difference, purchase)
    assert report.verdict.startswith("treatment is worse") and not report.sample_ratio_mismatch
    assert report.guardrail_tripped and status.status == "stopped" and status.detail.startswith("guardrail")
    assert answer["arm"] is None and answer["model_version"] == "p_topfreq"
    assert again.arms == report.arms and again.metrics == report.metrics  # pulled nothing new, counted the same


def test_the_intervals_cover_the_every_shopper_difference_about_as_often_as_they_claim(offline):
    """Calibration over 40 random splits of the same shoppers (the per-arm rates are exact, see
    above, so each split is what a node would report): a 95% interval of treatment − control
    should cover the offline difference over every shopper in most of them, and the A/A
    difference (one bundle in both arms) should include 0 in most of them."""
    from edge.experiment import Experiment
    from experiments.analysis import compare
    from experiments.simulator import offline_outcomes

    p, g = offline["p_topfreq"], offline["g_topfreq"]
    truth = g.purchase_rate - p.purchase_rate
    covered = worse = aa_clean = 0
    splits = 40
    for n in range(splits):
        arm = Experiment("x", "", "", 0.5, 3600, f"salt-{n}", 0).arm
        ab = next(m for m in compare(offline_outcomes(p, g, arm), SETTINGS) if m.name == "purchase_rate")
        covered += ab.difference.low <= truth <= ab.difference.high
        worse += ab.difference.high < 0
        aa = next(m for m in compare(offline_outcomes(p, p, arm), SETTINGS) if m.name == "purchase_rate")
        aa_clean += aa.difference.low <= 0 <= aa.difference.high
    assert covered >= 0.85 * splits and worse >= 0.9 * splits and aa_clean >= 0.85 * splits, (covered, worse, aa_clean)


def test_aa_finds_nothing_and_a_node_killed_mid_replay_loses_no_acknowledged_answer_or_event(
    prefect_api, shop, replay_data, signing_keys, tmp_path
):
    import mlflow
    from experiments.simulator import Replayed, replay
    from flows.experiment_report import experiment_report_flow
    from nodes.collect import collected_dir
    from nodes.experiments import collected_exposures
    from tracking.experiment_reports import MLFLOW_EXPERIMENT

    bundles, planned = replay_data
    planned = planned[: len(planned) // 2]  # the first week: an A/A test needs no power
    node = NodeProcess(tmp_path, signing_keys[1]).start(bundles["p_topfreq"])
    try:
        start(node, bundles["p_topfreq"], "aa", salt="aa")
        replayed, killed = Replayed(), threading.Event()

        def kill_midway(number: int) -> None:  # SIGKILL from another thread while requests are in flight
            if number == len(planned) // 2:
                threading.Timer(0.05, lambda: (node.process.send_signal(signal.SIGKILL), killed.set())).start()

        replay(node.url, node.headers, planned, replayed=replayed, on_visit=kill_midway)
        assert killed.is_set() and replayed.failed_visits > 0  # the kill landed mid-replay
        node.process.wait(10)
        node.start()  # from its state folder: bundle, experiment and logs come back
        done = replayed.exposures
        replay(node.url, node.headers, planned[len(planned) // 2 :], replayed=replayed)
        assert replayed.exposures > done
        exposure_ids = [row["exposure_id"] for row in logged(node, "exposures")]
        event_ids = [row["event_id"] for row in logged(node, "events")]
        report = experiment_report_flow(str(nodes_file(tmp_path, node)), "aa", str(shop), settings=SETTINGS)
    finally:
        node.stop()
    # Nothing acknowledged is lost, nothing is logged twice, and the report counts each exposure once.
    acknowledged = [e for arm in replayed.answers.values() for e in arm]
    assert len(set(exposure_ids)) == len(exposure_ids) and set(acknowledged) <= set(exposure_ids)
    assert len(set(event_ids)) == len(event_ids) and set(replayed.event_ids) <= set(event_ids)
    folder = collected_dir(config.state_dir(), shop.name)
    assert len(collected_exposures(folder, "aa")) == len(exposure_ids) == sum(a.exposures for a in report.arms)
    assert report.verdict.startswith("no detectable difference"), report.verdict
    assert not report.guardrail_tripped and not report.sample_ratio_mismatch
    for metric in report.metrics:
        assert metric.difference.low <= 0 <= metric.difference.high, metric
    runs = mlflow.search_runs(experiment_names=[MLFLOW_EXPERIMENT], filter_string="tags.mlflow.runName = 'aa'")
    assert len(runs) == 1 and runs["tags.verdict"].iloc[0] == report.verdict
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs["run_id"].iloc[0])}
    assert {"report.md", "report.json", "metrics_by_arm.png"} <= artifacts
