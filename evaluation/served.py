"""Measure a tier where it runs: its signed bundle answering the split's requests through the
node's engine (`edge.engine.Engine`), scored with the protocol's metrics, and single requests
timed in a fresh process serving the same bundle."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge import bundle
from edge.engine import Engine
from lightpersml import config
from models.metrics import evaluate
from models.tier_bundle import ServingData, TierScorer, lay_out, sign
from splits.temporal import Split
from training.boosted import BoostedSpec
from training.data import RankerData
from training.tiers import FittedTier, export_rankers, fit_rankers

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # so `-m edge.probe` resolves without an install
SERVING_COSTS = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "peak_memory_mb")


@dataclass
class Served:
    """A tier's answers on a split: the protocol's metrics (+ serving costs once measured) and
    the top-k item indices per target user."""

    metrics: dict[str, float]
    recommendations: dict[int, list[int]]


def signing_keys() -> tuple[Path, Path]:
    """The project's bundle signing key pair (private, public), made on first use."""
    folder = config.keys_dir()
    if not (folder / bundle.PRIVATE_KEY).exists():
        bundle.init_keys(folder)
        log.info("made the project's bundle signing keys in %s", folder)
    return folder / bundle.PRIVATE_KEY, folder / bundle.PUBLIC_KEY


def signed_bundle(data: ServingData, scorer: TierScorer, folder: Path, info: dict) -> Path:
    """Lay out `scorer`'s bundle of `data` in `folder` and sign it with the project's key."""
    private, _ = signing_keys()
    sign(lay_out(data, scorer, folder), bundle.load_private_key(private), info)
    return folder


def serve_split(engine: Engine, split: Split, k: int = 10) -> dict[int, list[int]]:
    """Top-k item indices for every target user of `split`, each asked at their target basket's
    store and start time."""
    recommendations = {}
    for user in sorted(split.targets):
        request = split.requests.get(user)
        answer = engine.recommend(
            str(split.catalog.user_ids[user]),
            request.store_id if request else None,
            k,
            at=request.at if request else None,
        )
        recommendations[user] = [engine.item_index.get(r.item_id) for r in answer.items]
    return recommendations


def evaluate_recommendations(recommendations: dict[int, list[int]], split: Split, k: int = 10) -> dict[str, float]:
    """The protocol's metrics (models.metrics) of top-k lists on `split`'s target baskets."""
    return evaluate(recommendations, split.targets, split.seen_items(), len(split.catalog.item_ids), k)


def serve_and_score(folder: Path, split: Split, k: int = 10, runtime: str = "onnx", discovery_slots: int = 0) -> Served:
    """Verify and load the bundle in `folder` as a node does (with `discovery_slots`: `Engine`),
    answer `split`'s requests, score them."""
    _, public = signing_keys()
    engine = Engine.load(folder, bundle.load_public_key(public), runtime, discovery_slots=discovery_slots)
    recommendations = serve_split(engine, split, k)
    return Served(evaluate_recommendations(recommendations, split, k), recommendations)


def measure_serving(folder: Path, split: Split, count: int, k: int = 10, runtime: str = "onnx") -> dict[str, float]:
    """Time single requests (a target user at their basket's store, top-k, one thread) in a fresh
    process serving the bundle (`edge.probe`): latency_p50/p95/p99_ms and peak_memory_mb."""
    _, public = signing_keys()
    requests = [
        [str(split.catalog.user_ids[u]), split.requests[u].store_id, split.requests[u].at]
        if u in split.requests
        else [str(split.catalog.user_ids[u]), None, None]
        for u in sorted(split.targets)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "requests.json").write_text(json.dumps(requests))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge.probe",
                str(folder),
                str(public),
                str(Path(tmp) / "requests.json"),
                str(count),
                "--k",
                str(k),
                "--runtime",
                runtime,
            ],
            capture_output=True,
            text=True,
            cwd=PROJECT_ROOT,
        )
    if done.returncode != 0:
        raise RuntimeError(f"serving probe failed on {folder}:\n{done.stderr[-2000:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return {key: measured[key] for key in SERVING_COSTS}


def seed_spread(ndcgs: list[float]) -> dict[str, float]:
    """NDCG@10 of one tier over its evaluation fits (one per seed): mean, sample std (0 for one fit), count."""
    mean = sum(ndcgs) / len(ndcgs)
    variance = sum((x - mean) ** 2 for x in ndcgs) / (len(ndcgs) - 1) if len(ndcgs) > 1 else 0.0
    return {"ndcg_at_10_seed_mean": mean, "ndcg_at_10_seed_std": variance**0.5, "seeds": float(len(ndcgs))}


def top_k_overlap(a: dict[int, list[int]], b: dict[int, list[int]], k: int = 10) -> float:
    """Mean over the users of `a` of |top-k(a) ∩ top-k(b)| / k, in [0, 1]."""
    return sum(len(set(a[u][:k]) & set(b.get(u, [])[:k])) / k for u in a) / len(a) if a else 1.0


def tier_bundle(fitted: FittedTier, data: ServingData, folder: Path) -> Path:
    """The tier's signed bundle under `folder` (a tier served by another runtime reuses the bundle
    its scorer was laid out in)."""
    target = Path(folder) / fitted.name.replace("/", "-")
    if fitted.runtime != "onnx":
        target = Path(folder) / fitted.scorer.tier
        if (target / bundle.MANIFEST).exists():
            return target
    return signed_bundle(data, fitted.scorer, target, {"evaluation_fit": True})


def bundle_ndcg(fitted: FittedTier, data: ServingData, folder: Path, split: Split) -> float:
    """NDCG@10 of `fitted`'s bundle answering `split` through the engine (no latency probe)."""
    return serve_and_score(tier_bundle(fitted, data, folder), split).metrics["ndcg_at_10"]


def seed_ndcgs(
    training: RankerData,
    teacher_spec: BoostedSpec,
    student_epochs: int,
    seeds: range,
    tiers: tuple[str, ...],
    data: ServingData,
    split: Split,
    folder: Path,
    exclude_seen: bool,
) -> dict[str, list[float]]:
    """NDCG@10 of each of `tiers` refit (teacher and distilled students) with every seed in `seeds`,
    each served through the engine: how much a tier's number moves from one training seed to the next."""
    ndcgs: dict[str, list[float]] = {tier: [] for tier in tiers}
    for seed in seeds:
        again = export_rankers(
            fit_rankers(training, teacher_spec, student_epochs, seed), folder / f"models-{seed}", exclude_seen
        )
        for tier in tiers:
            ndcgs[tier].append(bundle_ndcg(again[tier], data, folder / f"bundles-{seed}", split))
    return ndcgs
