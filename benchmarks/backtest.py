"""Backtest what a shop would deploy: cut the data at T, run the whole pipeline on what came before,
serve the registered versions (the refits a deployment ships, the candidate among them) from real
edge nodes, ask each node for every shopper's first basket after T at that basket's store and start
time, and score the answers with the protocol's metrics (DESIGN.md). TIFU-KNN, P-TopFreq and
G-TopFreq are fitted on the same data (everything before T) and served by nodes the same way. The
candidate is served again with N of its ranked slots kept for items new to the shopper
(`--discovery-slots`, `lightpersml serve --discovery-slots`): what discovery costs a shop.

Run: .venv/bin/python -m benchmarks.backtest [--profile quick|full] [--weeks 4] [--home DIR] [--discovery-slots 2,4]
     [--discovery-candidates 20]
(writes benchmarks/results/backtest-<profile>.{json,md}; logs experiment `backtest-<dataset>` in
MLflow: a run per backtest with a child run per tier). T = `--weeks` before the newest purchase.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cut_dataset(source: str, weeks: int, folder: Path):
    """The dataset's contract files with only what was known before T (events before it, stock
    rows valid from before it) in `folder`; returns (T, the full dataset)."""
    import pandas as pd

    from data_contracts import schema
    from data_contracts.sources import load_source

    full = load_source(source)
    purchases = full.events
    if schema.EVENT_TYPE in purchases.columns:
        purchases = purchases[purchases[schema.EVENT_TYPE] == "purchase"]
    cut = pd.Timestamp(purchases[schema.TIMESTAMP].max()) - pd.Timedelta(weeks=weeks)
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in full.tables().items():
        if name == "events":
            frame = frame[frame[schema.TIMESTAMP] < cut]
        elif name == "availability" and schema.VALID_FROM in frame.columns:
            frame = frame[frame[schema.VALID_FROM].isna() | (frame[schema.VALID_FROM] < cut)]
            if frame.empty:  # Complete Journey's stock starts 3 weeks before its end: stores stock what they sold
                continue
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    return cut, full


def ask_node(server, split, item_ids: list[str]) -> tuple[dict[int, list[int]], list[float]]:
    """Every target shopper of `split` asked at their basket's store and start time; returns the
    answers as the split's item indices and each request's latency (ms, over HTTP)."""
    import httpx

    index = {item: j for j, item in enumerate(item_ids)}
    answers, latencies = {}, []
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as client:
        for user in sorted(split.targets):
            request = split.requests[user]
            params = {
                "user_id": str(split.catalog.user_ids[user]),
                "store_id": request.store_id or "no-such-store",  # a node takes a store; unknown = none
                "k": 10,
                "at": datetime.fromtimestamp(request.at, UTC).isoformat(),
            }
            start = time.perf_counter()
            response = client.get("/v1/recommendations", params=params)
            latencies.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
            answers[user] = [index.get(item["item_id"], -1) for item in response.json()["items"]]
    return answers, latencies


def main(
    profile: Annotated[str, typer.Option(help="pipeline profile")] = "quick",
    weeks: Annotated[int, typer.Option(help="T is this many weeks before the newest purchase")] = 4,
    data: Annotated[str, typer.Option(help="dataset source")] = "completejourney",
    home: Annotated[Path, typer.Option(help="project folder of the backtest's MLflow, Prefect and caches")] = Path(
        "backtest-home"
    ),
    discovery_slots: Annotated[
        str, typer.Option(help="the candidate served again with these discovery slots (comma-separated; '' for none)")
    ] = "2,4",
    discovery_candidates: Annotated[
        int, typer.Option(help="the pipeline's --discovery-candidates (EASE's new items per shopper)")
    ] = 0,
) -> None:
    os.environ["LIGHTPERSML_HOME"] = str(home.resolve())
    from lightpersml import config

    config.apply_environment()

    import numpy as np

    import mlflow
    from benchmarks._measure import write_results
    from benchmarks.edge_load import Server
    from data_contracts.validation import validate_dataset
    from evaluation.served import evaluate_recommendations, signed_bundle, signing_keys
    from flows.train import training_flow
    from splits.temporal import build_splits
    from tracking.bundles import registry_bundle
    from training.data import generator_settings
    from training.tiers import REGISTERED_TIERS, TunedTifu, baseline_tiers, serving_data

    started = time.perf_counter()
    home.mkdir(parents=True, exist_ok=True)
    before = home / "data" / f"{Path(data).name}-before-T"
    cut, full = cut_dataset(data, weeks, before)
    result = training_flow(data=str(before), profile=profile, discovery_candidates=discovery_candidates)
    pipeline_minutes = (time.perf_counter() - started) / 60
    rows = {row.tier: row for row in result.tiers}
    # What happened after T: the full data, validated as the pipeline validates (the same rows
    # quarantined), split at T: its history is what the pipeline saw, its targets what came next.
    clean, _ = validate_dataset(full, config.state_dir() / "reports" / "backtest", **vars(config.ValidationSettings()))
    split = build_splits(clean, clean.content_hash(), config.state_dir() / "features", weeks, weeks)[0]["test"]
    assert abs((split.cutoff - cut).total_seconds()) < 1, (split.cutoff, cut)
    item_ids = [str(i) for i in split.catalog.item_ids]
    client = mlflow.MlflowClient()
    name = result.candidate.name
    versions = {
        v.tags["tier"]: v.version
        for v in client.search_model_versions(f"name = '{name}'")
        if v.tags.get("pipeline_run_id") == result.run_id
    }
    tifu_params, exclude_seen = _tuned_tifu(client.get_run(rows["tifu_knn"].run_id).data.params)
    measured = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        private, public = signing_keys()
        bundles = {}
        for tier in REGISTERED_TIERS:
            if tier in versions:
                registry_bundle(tmp / tier, private, name, version=versions[tier])
                bundles[tier] = (tmp / tier, f"version {versions[tier]} (refit on all data before T)")
        shared, seconds = serving_data(
            split, generator_settings(tifu_params, exclude_seen), full.items, exclude_seen, "before-T"
        )
        tuned = TunedTifu(tifu_params, exclude_seen, 0.0, None)
        for fitted in baseline_tiers(shared, tuned, seconds):
            if fitted.name in ("tifu_knn", "p_topfreq", "g_topfreq"):
                folder = signed_bundle(shared, fitted.scorer, tmp / fitted.name, {"model_version": fitted.name})
                bundles[fitted.name] = (folder, "fitted on all data before T")
        # (row label, tier, bundle, how it was fitted, node options): every bundle as shipped, then
        # the candidate with N of its ranked slots kept for items new to the shopper.
        served = [(tier, tier, folder, fit, ()) for tier, (folder, fit) in bundles.items()]
        candidate = result.candidate.tier
        for n in [int(n) for n in discovery_slots.split(",") if n.strip()]:
            folder, fit = bundles[candidate]
            served.append((f"{candidate}, {n} discovery slots", candidate, folder, fit, ("--discovery-slots", str(n))))
        for port, (label, tier, folder, fit, options) in enumerate(served, start=18700):
            node_dir = tmp / f"node-{port}"
            server = Server(sys.executable, folder, public, "onnx", node_dir, port, options)
            try:
                server.wait_ready()
                answers, latencies = ask_node(server, split, item_ids)
                memory = server.memory_mb()  # after serving every shopper once
            finally:
                server.process.terminate()
                server.process.wait(30)
            metrics = evaluate_recommendations(answers, split)
            logged = rows[tier].metrics if tier in rows else {}  # the pipeline's evaluation fit
            measured.append(
                {
                    "tier": label,
                    "candidate": label == candidate,
                    "fit": fit,
                    **metrics,
                    "http_p99_ms": float(np.percentile(latencies, 99)),
                    "node_rss_mb": memory["rss_mb"],
                    "node_peak_rss_mb": memory["peak_rss_mb"],
                    "node_private_mb": memory["private_mb"],
                    "seed_std": logged.get("ndcg_at_10_seed_std", 0.0),
                    "model_size_mb": logged.get("model_size_mb", float("nan")),
                    "fit_seconds": logged.get("fit_seconds", float("nan")),
                }
            )
            print(f"{label}: NDCG@10 {metrics['ndcg_at_10']:.4f} through a node", flush=True)
    tifu = next(r["ndcg_at_10"] for r in measured if r["tier"] == "tifu_knn")
    for row in measured:
        row["ndcg_ratio_to_tifu_knn"] = row["ndcg_at_10"] / tifu
    _log(measured, profile, cut, result.run_id, full.name)
    table = [
        {
            "tier": r["tier"] + (" (candidate)" if r["candidate"] else ""),
            "NDCG@10": round(r["ndcg_at_10"], 4),
            "× TIFU-KNN": round(r["ndcg_ratio_to_tifu_knn"], 3),
            "seed std (eval fits)": round(r["seed_std"], 4),
            "recall@10": round(r["recall_at_10"], 4),
            "repeat recall": round(r["recall_repeat_at_10"], 4),
            "explore recall": round(r["recall_explore_at_10"], 4),
            "HTTP p99 ms": round(r["http_p99_ms"], 2),
            "node RSS MB (private)": f"{r['node_rss_mb']:.0f} ({r['node_private_mb']:.0f})",
            "model MB": round(r["model_size_mb"], 3),
            "train s": round(r["fit_seconds"], 1),
        }
        for r in sorted(measured, key=lambda r: -r["ndcg_at_10"])
    ]
    path = write_results(
        f"backtest-{profile}" + (f"-discovery-{discovery_candidates}" if discovery_candidates else ""),
        {
            "profile": profile,
            "data": data,
            "T": str(cut),
            "shoppers": len(split.targets),
            "pipeline_run_id": result.run_id,
            "pipeline_minutes": round(pipeline_minutes, 1),
            "candidate": result.candidate.tier,
            "tiers": measured,
        },
        table,
    )
    print(path.read_text())


def _tuned_tifu(params: dict[str, str]) -> tuple[dict, bool]:
    """TIFU-KNN's tuned parameters and exclude_seen, from the pipeline's tifu_knn run params."""
    tuned = {}
    for key, value in params.items():
        if key.startswith("tifu_"):
            tuned[key[5:]] = int(value) if value.lstrip("-").isdigit() else float(value)
    return tuned, params.get("exclude_seen") == "True"


def _log(measured: list[dict], profile: str, cut, pipeline_run_id: str, dataset: str) -> None:
    import mlflow

    mlflow.set_experiment(f"backtest-{dataset}")
    with mlflow.start_run(run_name=f"backtest {profile}, T = {cut:%Y-%m-%d}") as parent:
        mlflow.log_params({"profile": profile, "T": str(cut), "pipeline_run_id": pipeline_run_id})
        for row in measured:
            with mlflow.start_run(run_name=row["tier"], nested=True, parent_run_id=parent.info.run_id):
                mlflow.set_tags({"tier": row["tier"], "fit": row["fit"], "candidate": str(row["candidate"])})
                mlflow.log_metrics({k: float(v) for k, v in row.items() if isinstance(v, (int, float))})


if __name__ == "__main__":
    typer.run(main)
