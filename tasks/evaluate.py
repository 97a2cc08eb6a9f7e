"""Score a `Recommender` on a split with the protocol's metrics, and time single requests."""

from __future__ import annotations

import time
import tracemalloc

from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from threadpoolctl import threadpool_limits

from models.metrics import evaluate
from models.recommender import Recommender
from tasks.features import Split


def recommend_split(recommender: Recommender, split: Split, k: int = 10) -> dict[int, list[int]]:
    """Top-k item indices for every target user of the split."""
    users = np.array(sorted(split.targets), dtype=np.int64)
    recommendations, chunk = {}, recommender.batch_rows
    for start in range(0, len(users), chunk):
        idx, _ = recommender.recommend_indices(users[start:start + chunk], k)
        for user, row in zip(users[start:start + chunk], idx):
            recommendations[int(user)] = [int(i) for i in row if i >= 0]
    return recommendations


def evaluate_split(recommender: Recommender, split: Split, k: int = 10) -> dict[str, float]:
    """The protocol's metrics (models.metrics) of `recommender` on `split`'s target baskets."""
    recommendations = recommend_split(recommender, split, k)
    return evaluate(recommendations, split.targets, split.seen_items(), len(split.catalog.item_ids), k)


def measure_serving(artifact: Path, users: np.ndarray, requests: int, k: int = 10, warmup: int = 50) -> dict[str, float]:
    """Load the saved tier and time single requests (one user, top-k, one thread).

    Returns latency_p50/p95/p99_ms over `requests` requests (cycling through `users`) after
    `warmup` requests, and peak_memory_mb: the Python-heap peak (tracemalloc; numpy buffers
    included) from loading the artifact to the last request.
    """
    order = np.resize(np.asarray(users), warmup + requests)
    timings = np.empty(requests)
    tracemalloc.start()
    recommender = Recommender.load(artifact)
    with threadpool_limits(limits=1):
        for user in order[:warmup]:
            recommender.recommend_indices(np.array([user]), k)
        for j, user in enumerate(order[warmup:]):
            start = time.perf_counter()
            recommender.recommend_indices(np.array([user]), k)
            timings[j] = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    p50, p95, p99 = np.percentile(timings * 1000, [50, 95, 99])
    return {"latency_p50_ms": float(p50), "latency_p95_ms": float(p95), "latency_p99_ms": float(p99),
            "peak_memory_mb": peak / 2**20}


@task(name="evaluate tier", cache_policy=NO_CACHE)
def evaluate_task(artifact: Path, split: Split, k: int, latency_requests: int) -> dict[str, float]:
    """Metrics and serving costs of the saved artifact itself: what is logged is what it reproduces."""
    metrics = evaluate_split(Recommender.load(artifact), split, k)
    metrics |= measure_serving(artifact, np.array(sorted(split.targets)), latency_requests, k)
    return metrics
