"""Ingest + validation + features on the full Complete Journey data: time and peak memory.

Run: .venv/bin/python benchmarks/features.py   (writes benchmarks/results/features.{json,md})
The feature cache is bypassed (a fresh temporary folder) so features are really computed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightpersml import config  # noqa: E402

config.apply_environment()

from benchmarks._measure import Stages, rss_mb, write_results  # noqa: E402
from data_contracts.completejourney import load_completejourney  # noqa: E402
from data_contracts.validation import validate_dataset  # noqa: E402
from splits.temporal import build_splits  # noqa: E402


def main() -> None:
    stages = Stages()
    start_rss = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        with stages.stage("ingest (Complete Journey → contract, DuckDB)"):
            dataset = load_completejourney()
        with stages.stage("validate (Great Expectations, all tables)"):
            clean, report = validate_dataset(dataset, Path(tmp) / "report")
        with stages.stage("content hash"):
            data_hash = clean.content_hash()
        with stages.stage("features + validation/test splits (polars)"):
            splits, _ = build_splits(clean, data_hash, Path(tmp) / "features")
        with stages.stage("features again (cache hit)"):
            build_splits(clean, data_hash, Path(tmp) / "features")
    total = sum(r["seconds"] for r in stages.rows[:4])
    table = stages.rows + [
        {
            "stage": "total (first four)",
            "seconds": round(total, 2),
            "rss_before_mb": round(start_rss),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in stages.rows),
        }
    ]
    payload = {
        "events": report.row_counts["events"],
        "rows": report.row_counts,
        "quarantined": report.quarantined,
        "data_hash": data_hash,
        "stages": table,
        "test_users": len(splits["test"].targets),
        "validation_users": len(splits["validation"].targets),
    }
    path = write_results("features", payload, table)
    print(path.read_text())


if __name__ == "__main__":
    main()
