"""Score a `Recommender` on a split with the protocol's metrics, and time single requests."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
from prefect import task
from threadpoolctl import threadpool_limits

from models.metrics import evaluate
from models.recommender import Recommender
from tasks.features import Split


def recommend_split(recommender: Recommender, split: Split, k: int = 10, chunk: int = 256) -> dict[int, list[int]]:
    """Top-k item indices for every target user of the split."""
    users = np.array(sorted(split.targets), dtype=np.int64)
    recommendations = {}
    for start in range(0, len(users), chunk):
        idx, _ = recommender.recommend_indices(users[start:start + chunk], k)
        for user, row in zip(users[start:start + chunk], idx):
            recommendations[int(user)] = [int(i) for i in row if i >= 0]
    return recommendations


def evaluate_split(recommender: Recommender, split: Split, k: int = 10) -> dict[str, float]:
    """The protocol's metrics (models.metrics) of `recommender` on `split`'s target baskets."""
    recommendations = recommend_split(recommender, split, k)
    return evaluate(recommendations, split.targets, split.seen_items(), len(split.catalog.item_ids), k)


def measure_serving(recommender: Recommender, users: np.ndarray, requests: int, k: int = 10, warmup: int = 50) -> dict[str, float]:
    """Latency of one request (one user, top-k, one thread) and peak traced memory while serving.

    Returns latency_p50/p95/p99_ms over `requests` requests (cycling through `users`) after
    `warmup` requests, and peak_memory_mb: the Python-heap peak (tracemalloc, includes numpy
    buffers) during those requests. Measured in this process; not a substitute for the
    fresh-process measurement of exported models.
    """
    order = np.resize(np.asarray(users), warmup + requests)
    timings = np.empty(requests)
    with threadpool_limits(limits=1):
        for user in order[:warmup]:
            recommender.recommend_indices(np.array([user]), k)
        tracemalloc.start()
        for j, user in enumerate(order[warmup:]):
            start = time.perf_counter()
            recommender.recommend_indices(np.array([user]), k)
            timings[j] = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    p50, p95, p99 = np.percentile(timings * 1000, [50, 95, 99])
    return {"latency_p50_ms": float(p50), "latency_p95_ms": float(p95), "latency_p99_ms": float(p99),
            "peak_memory_mb": peak / 2**20}


@task(name="evaluate tier")
def evaluate_task(recommender: Recommender, split: Split, k: int, latency_requests: int) -> dict[str, float]:
    metrics = evaluate_split(recommender, split, k)
    metrics |= measure_serving(recommender, np.array(sorted(split.targets)), latency_requests, k)
    return metrics
