"""Score a `Recommender` on a split with the protocol's metrics, and time single requests."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from models.metrics import evaluate
from models.recommender import Recommender
from tasks.features import Split

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # so `-m models.serving_probe` resolves without an install


def recommend_split(recommender: Recommender, split: Split, k: int = 10) -> dict[int, list[int]]:
    """Top-k item indices for every target user of the split."""
    users = np.array(sorted(split.targets), dtype=np.int64)
    recommendations, chunk = {}, recommender.batch_rows
    for start in range(0, len(users), chunk):
        idx, _ = recommender.recommend_indices(users[start:start + chunk], k)
        for user, row in zip(users[start:start + chunk], idx):
            recommendations[int(user)] = [int(i) for i in row if i >= 0]
    return recommendations


def evaluate_recommendations(recommendations: dict[int, list[int]], split: Split, k: int = 10) -> dict[str, float]:
    """The protocol's metrics (models.metrics) of top-k lists on `split`'s target baskets."""
    return evaluate(recommendations, split.targets, split.seen_items(), len(split.catalog.item_ids), k)


def evaluate_split(recommender: Recommender, split: Split, k: int = 10) -> dict[str, float]:
    return evaluate_recommendations(recommend_split(recommender, split, k), split, k)


def measure_serving(artifact: Path, users: np.ndarray, requests: int, k: int = 10) -> dict[str, float]:
    """Time single requests (one user, top-k, one thread) in a fresh process that loads the
    saved artifact: latency_p50/p95/p99_ms and peak_memory_mb (that process's peak RSS)."""
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "users.npy", np.asarray(users, dtype=np.int64))
        done = subprocess.run([sys.executable, "-m", "models.serving_probe", str(artifact), str(Path(tmp) / "users.npy"),
                               str(requests), "--k", str(k)], capture_output=True, text=True, cwd=PROJECT_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"serving probe failed on {artifact}:\n{done.stderr[-2000:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return {key: measured[key] for key in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "peak_memory_mb")}


def top_k_overlap(a: dict[int, list[int]], b: dict[int, list[int]], k: int = 10) -> float:
    """Mean over the users of `a` of |top-k(a) ∩ top-k(b)| / k, in [0, 1]."""
    return float(np.mean([len(set(a[u][:k]) & set(b.get(u, [])[:k])) / k for u in a])) if a else 1.0


@task(name="evaluate tier", cache_policy=NO_CACHE, task_run_name="evaluate {artifact.name}")
def evaluate_task(artifact: Path, split: Split, k: int, latency_requests: int) -> tuple[dict[str, float], dict]:
    """Metrics and serving costs of the saved artifact itself: what is logged is what it reproduces.

    Returns (metrics, the top-k item indices per target user).
    """
    recommendations = recommend_split(Recommender.load(artifact), split, k)
    metrics = evaluate_recommendations(recommendations, split, k)
    metrics |= measure_serving(artifact, np.array(sorted(split.targets)), latency_requests, k)
    return metrics, recommendations
