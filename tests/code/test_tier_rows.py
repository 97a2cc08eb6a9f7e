"""Tier rows: the Pareto frontier and the tier table are read from `TierRow`s."""

from __future__ import annotations

from tracking.runs import TierRow, pareto_frontier, tier_table


def row(tier: str, ndcg: float, p99: float, **extra: float) -> TierRow:
    return TierRow(tier, f"run-{tier}", {"ndcg_at_10": ndcg, "latency_p99_ms": p99, "model_size_mb": 1.0, **extra})


def test_added_metrics_reach_the_record_and_the_table():
    rows = [row("edge", 0.20, 2.0), row("full", 0.25, 9.0), row("g_topfreq", 0.10, 1.0)]
    rows[0].add_metrics({"ndcg_at_10_seed_std": 0.01})
    assert rows[0].record() == {
        "tier": "edge",
        "run_id": "run-edge",
        "ndcg_at_10": 0.20,
        "latency_p99_ms": 2.0,
        "model_size_mb": 1.0,
        "ndcg_at_10_seed_std": 0.01,
    }
    table = tier_table(rows)
    assert table["tier"].tolist() == ["full", "edge", "g_topfreq"]  # best NDCG@10 first
    assert list(table.columns) == ["tier", "ndcg_at_10", "ndcg_at_10_seed_std", "latency_p99_ms", "model_size_mb"]


def test_the_pareto_frontier_keeps_the_rows_nothing_beats_on_both_axes():
    rows = [row("a", 0.10, 1.0), row("b", 0.09, 2.0), row("c", 0.20, 3.0), row("d", 0.15, 4.0)]
    assert [r.tier for r in pareto_frontier(rows)] == ["a", "c"]
