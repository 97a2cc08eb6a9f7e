"""Every tier on Complete Journey: quality, latency, memory, size, parameters and training time.

Run: .venv/bin/python benchmarks/tiers.py [--profile full|quick] [--data completejourney]
(writes benchmarks/results/tiers-<profile>.{json,md}). It runs the training pipeline itself, so
the same numbers are in MLflow (the run id is in the JSON). `full` takes hours on 2 cores.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightpersml import config  # noqa: E402

config.apply_environment()

from benchmarks._measure import write_results  # noqa: E402

COLUMNS = {  # result column → MLflow metric name in the pipeline's tier rows
    "NDCG@10": "ndcg_at_10",
    "recall@10": "recall_at_10",
    "repeat recall": "recall_repeat_at_10",
    "explore recall": "recall_explore_at_10",
    "p50 ms": "latency_p50_ms",
    "p99 ms": "latency_p99_ms",
    "p99 / cloud": "latency_p99_ratio_to_cloud",
    "peak MB": "peak_memory_mb",
    "model MB": "model_size_mb",
    "params": "param_count",
    "train s": "fit_seconds",
    "tune s": "tuning_seconds",
}


def main(
    profile: Annotated[str, typer.Option(help="pipeline profile")] = "full",
    data: Annotated[str, typer.Option(help="dataset source")] = "completejourney",
) -> None:
    from flows.train import training_flow

    start = time.perf_counter()
    result = training_flow(data=data, profile=profile)
    minutes = (time.perf_counter() - start) / 60
    rows = sorted(result.tiers, key=lambda r: -r.ndcg_at_10)
    table = [{"tier": r.tier, **{name: _round(r.metrics.get(key)) for name, key in COLUMNS.items()}} for r in rows]
    path = write_results(
        f"tiers-{profile}",
        {
            "profile": profile,
            "data": data,
            "run_id": result.run_id,
            "pipeline_minutes": round(minutes, 1),
            "tiers": [r.record() for r in rows],
        },
        table,
    )
    print(path.read_text())
    print(f"pipeline: {minutes:.1f} min, MLflow run {result.run_id}")


def _round(value):
    if value is None:
        return "–"
    return int(value) if float(value).is_integer() else round(float(value), 4)


if __name__ == "__main__":
    typer.run(main)
