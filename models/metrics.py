"""Top-k metrics of the evaluation protocol (DESIGN.md), averaged over test users.

All per-user metrics are in [0, 1]. A user with no recommendations scores 0 everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

K = 10  # the protocol's list length; metric names carry it
METRIC_NAMES = (
    "precision_at_10",
    "recall_at_10",
    "f1_at_10",
    "ndcg_at_10",
    "hr_at_10",
    "recall_repeat_at_10",
    "recall_explore_at_10",
    "coverage_at_10",
)


def user_metrics(recommended: Sequence, basket: set, history: set, k: int = 10) -> dict[str, float | None]:
    """Metrics of one user's top-k list against their next basket.

    recommended: ranked item ids (only the first k count). basket: items actually bought.
    history: items the user bought before the cutoff; splits the basket into repeat and explore.
    Repeat/explore recall are None when the basket has no item of that kind (not averaged).
    """
    top = list(recommended)[:k]
    hits = [item in basket for item in top]
    n_hits = sum(hits)
    precision = n_hits / k
    recall = n_hits / len(basket) if basket else 0.0
    f1 = 2 * precision * recall / (precision + recall) if n_hits else 0.0
    dcg = sum(1.0 / np.log2(rank + 2) for rank, hit in enumerate(hits) if hit)
    idcg = sum(1.0 / np.log2(rank + 2) for rank in range(min(len(basket), k)))
    repeat, explore = basket & history, basket - history
    top_set = set(top)
    return {
        "precision_at_10": precision,
        "recall_at_10": recall,
        "f1_at_10": f1,
        "ndcg_at_10": dcg / idcg if idcg else 0.0,
        "hr_at_10": float(n_hits > 0),
        "recall_repeat_at_10": len(repeat & top_set) / len(repeat) if repeat else None,
        "recall_explore_at_10": len(explore & top_set) / len(explore) if explore else None,
    }


def evaluate(
    recommendations: Mapping,
    baskets: Mapping,
    histories: Mapping,
    catalog_size: int,
    k: int = 10,
) -> dict[str, float]:
    """Average the per-user metrics over every user in `baskets` (the test users).

    recommendations: user → ranked item ids; a missing user counts as an empty list.
    baskets: user → set of items in their target basket. histories: user → set of items bought
    before the cutoff. catalog_size: number of items in the catalog, for coverage
    (= distinct items recommended in anyone's top-k / catalog_size).
    Repeat (explore) recall is averaged over users whose basket has a repeat (new) item.
    """
    per_metric: dict[str, list[float]] = {name: [] for name in METRIC_NAMES if name != "coverage_at_10"}
    recommended_items = set()
    for user, basket in baskets.items():
        top = list(recommendations.get(user, []))[:k]
        recommended_items.update(top)
        for name, value in user_metrics(top, set(basket), set(histories.get(user, ())), k).items():
            if value is not None:
                per_metric[name].append(value)
    result = {name: float(np.mean(values)) if values else 0.0 for name, values in per_metric.items()}
    result["coverage_at_10"] = len(recommended_items) / catalog_size if catalog_size else 0.0
    result["n_users"] = len(baskets)
    return result
