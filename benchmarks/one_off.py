"""One-off data through the engine: MovieLens (100k or 1M) on a per-user holdout, every tier a signed
bundle answering each test user as a node does (already-seen items excluded, `exclude_seen`).

Tiers: G-TopFreq, TIFU-KNN's order, and EASE (its l2 chosen on the validation split through the
engine). Item-kNN (cosine, 100 neighbours) is scored offline on the same split for reference only:
it is not a tier and has no bundle. With `--profile`, the whole pipeline also runs on the test
split's history (the 90%, as a shop's export), and its registered versions (the candidate among
them: what a shop deploys) are served from real `lightpersml serve` nodes and asked for every test
user, as the grocery backtest does (`benchmarks.backtest`).

  .venv/bin/python benchmarks/one_off.py [--data movielens-100k|movielens-1m] [--order random|time]
      [--seed 0] [--home DIR] [--profile quick]
      [--pipeline-order time|random]
Writes benchmarks/results/one_off-<data>-<order>[-pipeline-<order>].{json,md} (data "movielens" for 100k).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._measure import write_results  # noqa: E402

L2_GRID = (100.0, 200.0, 300.0, 500.0, 1000.0)
N_DISCOVERY = 100  # EASE candidates per shopper: ten times the answer


def main(
    data: Annotated[str, typer.Option(help="movielens-100k or movielens-1m")] = "movielens-100k",
    order: Annotated[str, typer.Option(help="holdout order: random (RecBole's split) or time")] = "random",
    seed: Annotated[int, typer.Option()] = 0,
    home: Annotated[Path, typer.Option(help="project folder for keys and downloads")] = ROOT
    / ".lightpersml/bench/one_off",
    probe_requests: Annotated[int, typer.Option(help="single requests timed per tier")] = 500,
    profile: Annotated[str, typer.Option(help="pipeline profile for the deployed rows; '' to skip")] = "",
    pipeline_order: Annotated[str, typer.Option(help="the pipeline's --holdout-order ('': the split's order)")] = "",
) -> None:
    os.environ["LIGHTPERSML_HOME"] = str(home)
    from lightpersml import config

    config.apply_environment()
    from data_contracts.sources import load_source
    from data_contracts.validation import validate_dataset
    from evaluation.served import measure_serving, serve_and_score, signed_bundle
    from models.candidates import CandidateGenerator
    from models.scorers import FEATURES, POPULARITY, scorer_spec
    from models.tier_bundle import ServingData, TierScorer
    from splits.holdout import holdout_splits

    with tempfile.TemporaryDirectory() as reports:
        dataset, _ = validate_dataset(
            load_source(data, config.downloads_dir()), Path(reports), **vars(config.ValidationSettings())
        )
    splits = holdout_splits(dataset, order=order, seed=seed)
    tiers = {
        "g_topfreq": scorer_spec(POPULARITY),
        "tifu_knn": scorer_spec(FEATURES, ["tifu_score"]),
        "ease": scorer_spec(FEATURES, ["ease_score"]),
    }
    work = Path(tempfile.mkdtemp(prefix="one_off-"))

    def bundle(split, l2: float, tier: str) -> Path:
        generator = CandidateGenerator({}, n_discovery=N_DISCOVERY, ease_l2=l2)
        generator.fit(split.history, split.cutoff_day, split.catalog.item_groups)
        served = ServingData.of(
            generator, split.catalog, split.history, dataset.items, split.origin, split.cutoff, True, data
        )
        return signed_bundle(served, TierScorer(tier, tiers[tier]), work / f"{split.name}-{l2:g}-{tier}", {})

    validation = {l2: serve_and_score(bundle(splits["validation"], l2, "ease"), splits["validation"]) for l2 in L2_GRID}
    for l2, served in validation.items():
        print(f"validation, EASE l2 {l2:g}: NDCG@10 {served.metrics['ndcg_at_10']:.4f}", flush=True)
    best = max(validation, key=lambda l2: validation[l2].metrics["ndcg_at_10"])
    test = splits["test"]
    rows = []
    for tier in tiers:
        folder = bundle(test, best, tier)
        metrics = serve_and_score(folder, test).metrics | measure_serving(folder, test, probe_requests)
        size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
        rows.append(_row(tier + (f" (l2 {best:g})" if tier == "ease" else ""), metrics, size))
        print(rows[-1], flush=True)
    rows.append(_row("item-kNN, cosine, 100 neighbours (offline, not served)", _item_knn(test), float("nan")))
    if profile:
        rows += _deployed(dataset, order, seed, profile, pipeline_order or order, home, test)
    payload = {
        "data": data,
        "protocol": f"per-user holdout, 10%, order {order}, seed {seed}",
        "test_users": len(test.targets),
        "validation_ndcg_by_l2": {str(l2): s.metrics["ndcg_at_10"] for l2, s in validation.items()},
        "rows": rows,
    }
    name = "movielens" if data == "movielens-100k" else data  # the 100k results' first name
    other_order = f"-pipeline-{pipeline_order}" if profile and pipeline_order not in ("", order) else ""
    print(write_results(f"one_off-{name}-{order}{other_order}", payload, rows).read_text())


def _row(method: str, metrics: dict, size_mb: float) -> dict:
    return {
        "method": method,
        "NDCG@10": round(metrics["ndcg_at_10"], 4),
        "recall@10": round(metrics["recall_at_10"], 4),
        "coverage@10": round(metrics["coverage_at_10"], 4),
        "p99 ms (one request, engine)": round(metrics["latency_p99_ms"], 2) if "latency_p99_ms" in metrics else "–",
        "p99 ms (HTTP, node)": round(metrics["http_p99_ms"], 2) if "http_p99_ms" in metrics else "–",
        "bundle MB": round(size_mb, 2) if size_mb == size_mb else "–",
    }


def _deployed(dataset, order: str, seed: int, profile: str, pipeline_order: str, home: Path, test) -> list[dict]:
    """The pipeline (`profile`, holding out in `pipeline_order`) on the test split's history
    written as a shop's export; each registered version served by a real node and asked for every
    test user."""
    import polars as pl

    import mlflow
    from benchmarks.backtest import ask_node
    from benchmarks.edge_load import Server
    from data_contracts import schema
    from evaluation.served import evaluate_recommendations, signing_keys
    from flows.train import training_flow
    from splits.holdout import held_out
    from splits.temporal import purchase_lines
    from tracking.bundles import registry_bundle

    lines = purchase_lines(dataset)
    export = home / "data" / f"{dataset.name}-{order}-{seed}-history"
    export.mkdir(parents=True, exist_ok=True)
    history = lines.filter(~pl.Series(held_out(lines, 0.1, order, seed)))
    history.select(schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP).write_csv(export / "events.csv")
    dataset.items.to_csv(export / "items.csv", index=False)
    result = training_flow(data=str(export), profile=profile, holdout_order=pipeline_order)
    client = mlflow.MlflowClient()
    versions = {
        v.tags["tier"]: v.version
        for v in client.search_model_versions(f"name = '{result.candidate.name}'")
        if v.tags.get("pipeline_run_id") == result.run_id
    }
    private, public = signing_keys()
    item_ids = [str(i) for i in test.catalog.item_ids]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for port, (tier, version) in enumerate(sorted(versions.items()), start=18800):
            folder = Path(tmp) / tier
            registry_bundle(folder, private, result.candidate.name, version=version)
            server = Server(sys.executable, folder, public, "onnx", Path(tmp) / f"node-{tier}", port, ())
            try:
                server.wait_ready()
                answers, latencies = ask_node(server, test, item_ids)
            finally:
                server.process.terminate()
                server.process.wait(30)
            metrics = evaluate_recommendations(answers, test) | {"http_p99_ms": float(np.percentile(latencies, 99))}
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 2**20
            label = f"LightPersML {tier}, version {version}" + (
                " (the candidate)" if tier == result.candidate.tier else ""
            )
            rows.append(
                _row(
                    f"{label}: pipeline ({profile}, {pipeline_order} holdout) on the 90%, served by a node",
                    metrics,
                    size,
                )
            )
            print(rows[-1], flush=True)
    return rows


def _item_knn(split, neighbours: int = 100) -> dict:
    """Item-kNN's metrics on `split`: cosine similarity of items' buyer sets, each item's 100 most
    similar kept, a user's score the sum over what they bought; seen items excluded."""
    from models.metrics import evaluate

    counts = split.history.user_item_counts().astype(bool).astype(np.float32)
    together = (counts.T @ counts).toarray()
    norm = np.sqrt(np.diag(together))
    similarity = together / np.maximum(np.outer(norm, norm), 1e-9)
    np.fill_diagonal(similarity, 0.0)
    threshold = -np.sort(-similarity, axis=1)[:, neighbours - 1 : neighbours]
    similarity[similarity < threshold] = 0.0
    users = np.array(sorted(split.targets))
    scores = (counts[users] @ similarity).astype(np.float64)
    scores[counts[users].toarray() > 0] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    recommendations = {int(u): top[j].tolist() for j, u in enumerate(users)}
    return evaluate(recommendations, split.targets, split.seen_items(), counts.shape[1])


if __name__ == "__main__":
    typer.run(main)
