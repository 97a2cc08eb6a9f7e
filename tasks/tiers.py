"""Fit the tiers. Baselines: tune on validation, fit on all data before the test cutoff. Neural
tiers: a tuned teacher ranker and students distilled from it, exported to ONNX."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from models.baselines import TIERS
from models.ranker import CandidateRanker
from models.ranking_tier import RankingTier
from models.recommender import Recommender
from tasks.distill import distill
from tasks.export import export_onnx, quantize_int8, save_torch
from tasks.features import Split
from tasks.train import RankerData, RankerSpec, fit_ranker
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


TEACHER_TIER = "full"
CLOUD_TIER = "full_torch"  # the teacher in PyTorch eager: the "cloud" latency reference, not deployable
STUDENT_TIERS = ("balanced", "edge")
REGISTERED_TIERS = (TEACHER_TIER, *STUDENT_TIERS)


@dataclass
class RankerFit:
    """The rankers of one fit (evaluation or deploy) and their specs, before export."""

    data: RankerData
    models: dict[str, CandidateRanker]  # tier name → trained ranker (teacher under TEACHER_TIER)
    specs: dict[str, RankerSpec]
    seconds: dict[str, float]  # training time per tier


def fit_rankers(data: RankerData, teacher_spec: RankerSpec, seed: int = 0) -> RankerFit:
    """Train the teacher with the tuned spec, then distil every student from it."""
    start = time.perf_counter()
    teacher, _ = fit_ranker(teacher_spec, data, seed=seed)
    models, specs = {TEACHER_TIER: teacher}, {TEACHER_TIER: teacher_spec}
    seconds = {TEACHER_TIER: time.perf_counter() - start}
    for name in STUDENT_TIERS:
        start = time.perf_counter()
        models[name], specs[name] = distill(name, teacher, teacher_spec, data, seed=seed)
        seconds[name] = time.perf_counter() - start
    return RankerFit(data, models, specs, seconds)


@task(name="train and distil", cache_policy=NO_CACHE, task_run_name="train and distil: {data.split.name}")
def fit_rankers_task(data: RankerData, teacher_spec: RankerSpec) -> RankerFit:
    return fit_rankers(data, teacher_spec)


def ranking_recommender(tier: str, runtime: str, model_file: Path, model: CandidateRanker, spec: RankerSpec,
                        data: RankerData, exclude_seen: bool, meta: dict) -> Recommender:
    params = {"tier": tier, "runtime": runtime, "n_items": data.split.history.n_items,
              "generator": data.generator.params, "ranker": model.config, "param_count": model.param_count(),
              **spec.params()}
    return Recommender(RankingTier(params, data.generator, model_file), data.split.catalog,
                       data.split.history.user_item_counts(), exclude_seen, meta)


def export_rankers(fit: RankerFit, folder: Path, exclude_seen: bool, meta: dict) -> dict[str, Recommender]:
    """Each tier's serving recommender: the teacher as fp32 ONNX and as PyTorch (cloud reference),
    the students as int8 ONNX (`fp32/<tier>` keys hold their fp32 ONNX for the quantization cost)."""
    recommenders = {}
    n_features = fit.data.train.features.shape[1]
    for tier, model in fit.models.items():
        spec = fit.specs[tier]
        fp32 = export_onnx(model, folder / tier / "model.fp32.onnx", n_features)
        if tier == TEACHER_TIER:
            recommenders[tier] = ranking_recommender(tier, "onnx", fp32, model, spec, fit.data, exclude_seen, meta)
            torch_file = save_torch(model, folder / tier / "model.pt")
            recommenders[CLOUD_TIER] = ranking_recommender(CLOUD_TIER, "torch", torch_file, model, spec, fit.data,
                                                           exclude_seen, meta)
        else:
            int8 = quantize_int8(fp32, folder / tier / "model.int8.onnx")
            recommenders[tier] = ranking_recommender(tier, "onnx", int8, model, spec, fit.data, exclude_seen, meta)
            recommenders[f"fp32/{tier}"] = ranking_recommender(tier, "onnx", fp32, model, spec, fit.data,
                                                               exclude_seen, meta)
    return recommenders


@task(name="export and quantize", cache_policy=NO_CACHE, task_run_name="export and quantize: {folder.name}")
def export_rankers_task(fit: RankerFit, folder: Path, exclude_seen: bool, meta: dict) -> dict[str, Recommender]:
    return export_rankers(fit, folder, exclude_seen, meta)
