"""Fit the tiers. Every tier is served from a bundle by the node's engine (`edge.engine`), with
the candidate generator of its fit; tiers differ only in how they score the candidates:

- baselines score with no model (`models.scorers`): G-TopFreq serves store popularity, P-TopFreq
  ("buy again") orders the shopper's own items by baskets with them, TIFU-KNN by its prediction
  (tuned with Optuna on validation);
- neural tiers: a tuned teacher ranker and students distilled from it, exported to ONNX (int8 for
  the students), plus the teacher in PyTorch eager as the cloud latency reference.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from models.candidates import CandidateGenerator
from models.ranker import CandidateRanker
from models.scorers import FEATURES, POPULARITY, RANKER, scorer_spec
from models.tier_bundle import ServingData, TierScorer
from splits.temporal import Split
from training.data import RankerData, RankerSpec, fit_ranker
from training.distill import distill
from training.export import export_onnx, quantize_int8, save_torch
from training.tuning import TuningSummary, tune_tifu_knn

log = logging.getLogger(__name__)

BASELINE_SCORERS = {
    "g_topfreq": scorer_spec(POPULARITY),
    "p_topfreq": scorer_spec(FEATURES, ["log_count", "log_popularity"]),
    "tifu_knn": scorer_spec(FEATURES, ["tifu_score"]),
}
BASELINE_TIERS = tuple(BASELINE_SCORERS)
REPEAT_SHARE_MIN = 0.01  # below this share of repeated (user, item) pairs, nobody re-buys
TEACHER_TIER = "full"
CLOUD_TIER = "full_torch"  # the teacher's bundle served by PyTorch eager: the "cloud" latency reference, not deployable
STUDENT_TIERS = ("balanced", "edge")
REGISTERED_TIERS = (TEACHER_TIER, *STUDENT_TIERS)


@dataclass
class FittedTier:
    """One tier ready to be bundled: its scorer, the parameters to log and what fitting cost."""

    name: str
    scorer: TierScorer
    params: dict
    param_count: int  # the scorer's parameters: ranker weights, or the baseline's statistics
    fit_seconds: float  # the final fit on the split's history
    tuning_seconds: float = 0.0  # Optuna on the validation split (0 for untuned tiers)
    tuning: TuningSummary | None = None  # its Optuna study (None: untuned)
    runtime: str = "onnx"  # how the engine runs a ranker: "onnx", or "torch" for the cloud reference


@dataclass
class TunedTifu:
    """TIFU-KNN's tuned parameters (the candidate generator's neighbours) and the study."""

    params: dict
    exclude_seen: bool
    seconds: float
    tuning: TuningSummary


def exclude_seen_items(validation: Split) -> bool:
    """True for data where users (almost) never buy an item twice (ratings, one-off purchases)."""
    return validation.history.repeat_share() < REPEAT_SHARE_MIN


def tune_tifu(validation: Split, n_trials: int, study_dir: Path, data_hash: str) -> TunedTifu:
    """TIFU-KNN's parameters, tuned on the validation split (Optuna, resumable in SQLite)."""
    exclude_seen = exclude_seen_items(validation)
    start = time.perf_counter()
    study_name = f"tifu_knn-{data_hash}-{validation.cutoff:%Y%m%d}-x{int(exclude_seen)}"
    study = tune_tifu_knn(validation, n_trials, study_dir / "optuna.db", study_name, exclude_seen)
    seconds = time.perf_counter() - start
    return TunedTifu(
        study.best_params,
        exclude_seen,
        seconds,
        TuningSummary(study_name, len(study.trials), study.best_value, seconds),
    )


def serving_data(
    split: Split, generator_settings: dict, items: pd.DataFrame, exclude_seen: bool, data_hash: str
) -> tuple[ServingData, float]:
    """The state every tier of a fit on `split` serves from (candidate generator fitted at its
    cutoff, catalog, baskets, items, co-purchases); returns it and the generator's fit seconds."""
    start = time.perf_counter()
    generator = CandidateGenerator(**generator_settings).fit(split.history, split.cutoff_day, split.catalog.item_groups)
    seconds = time.perf_counter() - start
    served = ServingData.of(
        generator, split.catalog, split.history, items, split.origin, split.cutoff, exclude_seen, data_hash
    )
    return served, seconds


def baseline_tiers(data: ServingData, tifu: TunedTifu, fit_seconds: float) -> list[FittedTier]:
    """The baselines as candidate scorers on `data` (fit_seconds: the candidate generator's fit)."""
    generator = data.generator
    sizes = {
        "g_topfreq": generator.popularity.size,
        "p_topfreq": generator.counts.nnz,
        "tifu_knn": generator.tifu.param_count(),
    }
    tiers = []
    for name, spec in BASELINE_SCORERS.items():
        params = {
            "scorer": spec["kind"],
            **({"scorer_by": ",".join(spec["by"])} if "by" in spec else {}),
            "exclude_seen": data.exclude_seen,
        }
        tuned = name == "tifu_knn"
        if tuned:
            params |= {f"tifu_{k}": v for k, v in tifu.params.items()}
        tiers.append(
            FittedTier(
                name,
                TierScorer(name, spec),
                params,
                int(sizes[name]),
                fit_seconds,
                tifu.seconds if tuned else 0.0,
                tifu.tuning if tuned else None,
            )
        )
    return tiers


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
    teacher, _ = fit_ranker(teacher_spec, data, seed=seed, label=f"{TEACHER_TIER} on {data.split.name}, seed {seed}")
    models, specs = {TEACHER_TIER: teacher}, {TEACHER_TIER: teacher_spec}
    seconds = {TEACHER_TIER: time.perf_counter() - start}
    for name in STUDENT_TIERS:
        start = time.perf_counter()
        models[name], specs[name] = distill(name, teacher, teacher_spec, data, seed=seed)
        seconds[name] = time.perf_counter() - start
    return RankerFit(data, models, specs, seconds)


def export_rankers(fit: RankerFit, folder: Path, exclude_seen: bool) -> dict[str, FittedTier]:
    """Every neural tier: the teacher as fp32 ONNX (with its PyTorch file: `CLOUD_TIER` serves the
    same bundle in PyTorch eager), the students as int8 ONNX; `fp32/<student>` holds a student's
    fp32 ONNX, to measure what quantization costs."""
    tiers = {}
    n_features = fit.data.train.features.shape[1]
    for name, model in fit.models.items():
        spec = fit.specs[name]
        params = {**spec.params(), "exclude_seen": exclude_seen}
        fp32 = export_onnx(model, folder / name / "model.fp32.onnx", n_features)

        def tier(tier_name, onnx_file, torch_file=None, runtime="onnx", name=name, model=model, params=params):
            scorer = TierScorer(name, scorer_spec(RANKER), onnx_file, torch_file, model.config)
            return FittedTier(tier_name, scorer, params, model.param_count(), fit.seconds[name], runtime=runtime)

        if name == TEACHER_TIER:
            torch_file = save_torch(model, folder / name / "model.pt")
            tiers[name] = tier(name, fp32, torch_file)
            tiers[CLOUD_TIER] = tier(CLOUD_TIER, fp32, torch_file, runtime="torch")
        else:
            tiers[name] = tier(name, quantize_int8(fp32, folder / name / "model.int8.onnx"))
            tiers[f"fp32/{name}"] = tier(name, fp32)
    return tiers
