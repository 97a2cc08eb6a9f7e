"""Online experiments on real behaviour: Complete Journey's last weeks of baskets replayed against a
real node running an experiment (experiments.simulator), then the `experiment-report` flow.

Two runs: A/A (P-TopFreq in both arms: the report must find nothing) and A/B (P-TopFreq control,
G-TopFreq treatment: the report must find the treatment worse, with an interval covering the
offline difference over every shopper, and the guardrail must stop it). Bundles are fitted on
everything before T. Beside them, the intervals' calibration: the offline answers split by
`--splits` salts, each analysed as a node would report it.

Run: .venv/bin/python -m benchmarks.experiment_sim [--weeks 2] [--home DIR] [--splits 100]
(writes benchmarks/results/experiment-sim.{json,md}; the reports go to MLflow `online-experiments`).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOKEN = "benchmark-admin-token"


def main(
    weeks: Annotated[int, typer.Option(help="T is this many weeks before the newest purchase")] = 2,
    home: Annotated[Path, typer.Option(help="project folder of the benchmark's MLflow, Prefect and caches")] = Path(
        "experiment-home"
    ),
    splits: Annotated[int, typer.Option(help="random splits of the calibration check")] = 100,
    share: Annotated[float, typer.Option(help="treatment share")] = 0.5,
) -> None:
    os.environ["LIGHTPERSML_HOME"] = str(home.resolve())
    from lightpersml import config

    config.apply_environment()

    from benchmarks._measure import write_results
    from benchmarks.edge_load import Server
    from data_contracts.sources import load_source
    from data_contracts.validation import validate_dataset
    from edge.bundle import archive_bundle
    from edge.experiment import Experiment
    from evaluation.served import signing_keys
    from experiments.analysis import compare, markdown
    from experiments.simulator import baseline_bundles, offline_outcomes, offline_rates, replay, visits
    from flows.experiment_report import experiment_report_flow
    from nodes.experiments import start_experiment
    from nodes.fleet import EdgeNode

    home.mkdir(parents=True, exist_ok=True)
    private, public = signing_keys()
    full = load_source("completejourney", config.downloads_dir())
    clean, _ = validate_dataset(
        full, config.state_dir() / "reports" / "experiment-sim", **vars(config.ValidationSettings())
    )
    cut, bundles = baseline_bundles(clean, weeks, home / "bundles", private)
    planned = visits(clean, cut)
    print(
        f"T = {cut}: {len(planned):,} baskets of {len({v.user_id for v in planned}):,} shoppers to replay", flush=True
    )
    offline = {name: offline_rates(folder, public, planned) for name, folder in bundles.items()}
    truth = offline["g_topfreq"].purchase_rate - offline["p_topfreq"].purchase_rate

    runs, reports = [], {}
    stamp = time.strftime("%Y%m%d%H%M%S")
    for label, treatment, salt in (("A/A", "p_topfreq", "aa"), ("A/B", "g_topfreq", "ab")):
        name = f"{'aa' if label == 'A/A' else 'ab'}-{stamp}"
        folder = home / "nodes" / name
        folder.mkdir(parents=True)
        (folder.parent / f"{name}.token").write_text(TOKEN)
        server = Server(
            sys.executable, bundles["p_topfreq"], public, "onnx", folder, 18800 + len(runs),
            ("--admin-token-file", str(folder.parent / f"{name}.token")),
        )  # fmt: skip
        try:
            server.wait_ready()
            node = EdgeNode(name, server.url, TOKEN)
            started = start_experiment(node, archive_bundle(bundles[treatment]), name, share, 1.0, salt)
            assert started.status == "running", started
            began = time.perf_counter()
            replayed = replay(server.url, server.headers, planned)
            replay_s = time.perf_counter() - began
            nodes = home / "nodes" / f"{name}.toml"
            nodes.write_text(f'[[nodes]]\nname = "{name}"\nurl = "{server.url}"\ntoken = "{TOKEN}"\n')
            report = experiment_report_flow(str(nodes), name, "completejourney")
        finally:
            server.process.terminate()
            server.process.wait(30)
        reports[label] = report
        expected = truth if label == "A/B" else 0.0
        for metric in report.metrics:
            runs.append(
                {
                    "run": label,
                    "metric": metric.name + (" (primary)" if metric.name == report.primary_metric else ""),
                    "control (95% CI)": f"{metric.control.estimate:.4f} ({metric.control.low:.4f}–{metric.control.high:.4f})",
                    "treatment (95% CI)": f"{metric.treatment.estimate:.4f} ({metric.treatment.low:.4f}–{metric.treatment.high:.4f})",
                    "treatment − control (95% CI)": f"{metric.difference.estimate:+.4f} ({metric.difference.low:+.4f} to {metric.difference.high:+.4f})",
                    "offline difference": f"{expected:+.4f}" if metric.name == "purchase_rate" else "",
                    "covered": (metric.difference.low <= expected <= metric.difference.high)
                    if metric.name == "purchase_rate"
                    else "",
                }
            )
        print(markdown(report), flush=True)
        print(f"{label}: {replayed.exposures:,} answers, {len(replayed.event_ids):,} events in {replay_s:.0f} s "
              f"({replayed.failed_visits} failed visits)", flush=True)  # fmt: skip

    covered = worse = aa_clean = 0
    for n in range(splits):
        arm = Experiment("x", "", "", share, 3600, f"salt-{n}", 0).arm
        ab = next(m for m in compare(offline_outcomes(offline["p_topfreq"], offline["g_topfreq"], arm), config.ExperimentSettings()) if m.name == "purchase_rate")  # fmt: skip
        aa = next(m for m in compare(offline_outcomes(offline["p_topfreq"], offline["p_topfreq"], arm), config.ExperimentSettings()) if m.name == "purchase_rate")  # fmt: skip
        covered += ab.difference.low <= truth <= ab.difference.high
        worse += ab.difference.high < 0
        aa_clean += aa.difference.low <= 0 <= aa.difference.high
    calibration = {"splits": splits, "ab_covered": covered, "ab_found_worse": worse, "aa_includes_zero": aa_clean}
    print(f"calibration over {splits} splits: {calibration}", flush=True)
    path = write_results(
        "experiment-sim",
        {
            "T": str(cut),
            "weeks": weeks,
            "baskets": len(planned),
            "shoppers": len({v.user_id for v in planned}),
            "offline_purchase_rate": {name: rates.purchase_rate for name, rates in offline.items()},
            "offline_difference": truth,
            "reports": {label: asdict(report) for label, report in reports.items()},
            "calibration": calibration,
        },
        runs,
    )
    extra = f"\nCalibration over {splits} random splits of the offline answers: the A/B interval covered the offline "
    extra += (
        f"difference in {covered}, found the treatment worse in {worse}; the A/A interval included 0 in {aa_clean}.\n"
    )
    path.write_text(path.read_text() + extra + "".join("\n" + markdown(r) for r in reports.values()))
    print(path.read_text())


if __name__ == "__main__":
    typer.run(main)
