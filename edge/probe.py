"""Serve single requests from a bundle in this (fresh) process and report what it costs.

    python -m edge.probe BUNDLE PUBLIC_KEY REQUESTS.json COUNT [--k 10] [--warmup 100] [--runtime onnx]

REQUESTS.json: [[user_id, store_id or null, Unix seconds or null (now)], …]. The engine keeps no answer between requests
(each one is a shopper's first since the bundle loaded: candidates built and scored). Prints one
JSON object: latency_p50/p95/p99_ms over COUNT requests (one thread, cycling through REQUESTS,
after the warm-up) and peak_memory_mb, this process's peak resident set size: interpreter,
libraries, verified bundle and serving.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread, set before numpy loads
    os.environ[_name] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from edge.bundle import load_public_key  # noqa: E402
from edge.engine import Engine  # noqa: E402


def peak_rss_kib() -> int:
    """This process's peak resident set size (VmHWM). Not getrusage's ru_maxrss: Linux carries it
    over from the parent across fork + exec, so a child of a big process would report the parent's."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise OSError("no VmHWM in /proc/self/status (Linux only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("public_key", type=Path)
    parser.add_argument("requests", type=Path)
    parser.add_argument("count", type=int)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--runtime", choices=("onnx", "native"), default="onnx")
    args = parser.parse_args()
    engine = Engine.load(args.bundle, load_public_key(args.public_key), args.runtime, max_shoppers=1)
    requests = json.loads(args.requests.read_text())
    order = [requests[j % len(requests)] for j in range(args.warmup + args.count)]
    timings = np.empty(args.count)
    for user_id, store_id, at in order[: args.warmup]:
        engine.recommend(user_id, store_id, args.k, at=at)
    for j, (user_id, store_id, at) in enumerate(order[args.warmup :]):
        start = time.perf_counter()
        engine.recommend(user_id, store_id, args.k, at=at)
        timings[j] = time.perf_counter() - start
    p50, p95, p99 = np.percentile(timings * 1000, [50, 95, 99])
    print(
        json.dumps(
            {
                "latency_p50_ms": float(p50),
                "latency_p95_ms": float(p95),
                "latency_p99_ms": float(p99),
                "peak_memory_mb": peak_rss_kib() / 1024,
                "requests": args.count,
            }
        )
    )


if __name__ == "__main__":
    main()
