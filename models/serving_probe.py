"""Serve single requests from a saved recommender in this (fresh) process and report costs.

    python -m models.serving_probe ARTIFACT_DIR USERS.npy REQUESTS [--k 10] [--warmup 100]

Prints one JSON object: latency_p50/p95/p99_ms over REQUESTS requests (one user each, top-k,
one thread, cycling through the user indices in USERS.npy) after the warm-up, and
peak_memory_mb, the process's peak resident set size: interpreter, libraries, model and serving.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread, set before numpy loads
    os.environ[_name] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from models.recommender import Recommender  # noqa: E402


def peak_rss_kib() -> int:
    """This process's peak resident set size. VmHWM, not getrusage's ru_maxrss: Linux carries
    ru_maxrss over from the parent across fork + exec, so a child of a big process would report
    the parent's size."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: KiB on most systems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact")
    parser.add_argument("users")
    parser.add_argument("requests", type=int)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    recommender = Recommender.load(args.artifact)
    order = np.resize(np.load(args.users), args.warmup + args.requests)
    timings = np.empty(args.requests)
    for user in order[:args.warmup]:
        recommender.recommend_indices(np.array([user]), args.k)
    for j, user in enumerate(order[args.warmup:]):
        start = time.perf_counter()
        recommender.recommend_indices(np.array([user]), args.k)
        timings[j] = time.perf_counter() - start
    p50, p95, p99 = np.percentile(timings * 1000, [50, 95, 99])
    peak_kb = peak_rss_kib()
    print(json.dumps({"latency_p50_ms": float(p50), "latency_p95_ms": float(p95), "latency_p99_ms": float(p99),
                      "peak_memory_mb": peak_kb / 1024, "requests": args.requests}))


if __name__ == "__main__":
    main()
