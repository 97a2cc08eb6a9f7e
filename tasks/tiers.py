"""Fit every baseline tier: tune on validation, fit on all data before the test cutoff."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from models.baselines import TIERS
from models.recommender import Recommender
from tasks.features import Split
from tasks.tune import tune_tifu_knn

log = logging.getLogger(__name__)

BASELINE_TIERS = ("g_topfreq", "p_topfreq", "tifu_knn")
REPEAT_SHARE_MIN = 0.01  # below this share of repeated (user, item) pairs, nobody re-buys


@dataclass
class FittedTier:
    name: str
    recommender: Recommender
    params: dict
    fit_seconds: float  # the final fit on the test split's history
    tuning_seconds: float  # Optuna on the validation split (0 for untuned tiers)
    tuning: dict  # trials, best validation NDCG@10, study name


def exclude_seen_items(validation: Split) -> bool:
    """True for data where users (almost) never buy an item twice (ratings, one-off purchases)."""
    return validation.history.repeat_share() < REPEAT_SHARE_MIN


def fit_tier(name: str, splits: dict[str, Split], n_trials: int, study_dir: Path, data_hash: str) -> FittedTier:
    """Tune `name` on the validation split, then fit it on the test split's history."""
    validation, test = splits["validation"], splits["test"]
    exclude_seen = exclude_seen_items(validation)
    params, tuning = {}, {}
    start = time.perf_counter()
    if name == "tifu_knn":
        study_name = f"tifu_knn-{data_hash}-{validation.cutoff:%Y%m%d}-x{int(exclude_seen)}"
        study = tune_tifu_knn(validation, n_trials, study_dir / "optuna.db", study_name, exclude_seen)
        params = study.best_params
        tuning = {"study": study_name, "trials": len(study.trials), "best_validation_ndcg_at_10": study.best_value}
    tuned = time.perf_counter()
    tier = TIERS[name](**params).fit(test.history)
    meta = {"trained_until": str(test.cutoff), "data_hash": data_hash, "evaluation_fit": True}
    recommender = Recommender(tier, test.catalog, test.history.user_item_counts(), exclude_seen, meta)
    return FittedTier(name, recommender, {**tier.params, "exclude_seen": exclude_seen},
                      time.perf_counter() - tuned, tuned - start, tuning)


@task(name="fit tier", cache_policy=NO_CACHE, task_run_name="fit {name}")
def fit_tier_task(name: str, splits: dict[str, Split], n_trials: int, study_dir: Path, data_hash: str) -> FittedTier:
    fitted = fit_tier(name, splits, n_trials, study_dir, data_hash)
    log.info("%s fitted in %.1fs with %s", name, fitted.fit_seconds, fitted.params)
    return fitted
