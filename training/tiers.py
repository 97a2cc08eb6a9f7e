"""Fit the tiers. Every tier is served from a bundle by the node's engine (`edge.engine`), with
the candidate generator of its fit; tiers differ only in how they score the candidates:

- baselines score with no model (`models.scorers`): G-TopFreq serves store popularity, P-TopFreq
  ("buy again") orders the shopper's own items by baskets with them, TIFU-KNN by its prediction
  (tuned with Optuna on validation);
- ranking tiers: the teacher, LightGBM LambdaRank tuned on validation (`training.boosted`), as an
  ONNX tree ensemble, and neural students distilled from its scores, int8 ONNX; plus the teacher
  served by LightGBM itself as the cloud latency reference.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import pandas as pd

from data_contracts.learnability import REPEAT_SHARE_MIN
from edge import bundle
from models.candidates import FEATURE_NAMES, CandidateGenerator
from models.ranker import CandidateRanker
from models.scorers import FEATURES, POPULARITY, RANKER, scorer_spec
from models.tier_bundle import ServingData, TierScorer
from splits.temporal import Split
from training.boosted import BoostedSpec, boosted_scores, export_boosted_onnx, fit_boosted, save_native, tree_nodes
from training.data import RankerData, RankerSpec, generator_settings
from training.distill import distill
from training.export import export_onnx, quantize_int8
from training.tuning import TuningSummary, tune_ease_l2, tune_tifu_knn

log = logging.getLogger(__name__)

BASELINE_SCORERS = {
    "g_topfreq": scorer_spec(POPULARITY),
    "p_topfreq": scorer_spec(FEATURES, ["log_count", "log_popularity"]),
    "tifu_knn": scorer_spec(FEATURES, ["tifu_score"]),
}
EASE_SCORER = scorer_spec(FEATURES, ["ease_score"])  # a baseline where the generator has EASE (one-off data)
BASELINE_TIERS = (*BASELINE_SCORERS, "ease")
TEACHER_TIER = "full"
CLOUD_TIER = (
    "full_native"  # the teacher's bundle served by LightGBM itself: the "cloud" latency reference, not deployable
)
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
    runtime: str = "onnx"  # how the engine runs a ranker: "onnx", or "native" for the cloud reference


@dataclass
class TunedTifu:
    """TIFU-KNN's tuned parameters (the candidate generator's neighbours) and the study, and
    where EASE gives candidates (data where nobody repeats, `exclude_seen`, or `grocery_discovery`
    of them per shopper on grocery) its l2 chosen on validation."""

    params: dict
    exclude_seen: bool
    seconds: float
    tuning: TuningSummary
    ease_l2: float | None = None
    grocery_discovery: int = 0

    def generator_settings(self) -> dict:
        """The candidate generator around these tuned sources (`training.data.generator_settings`)."""
        return generator_settings(self.params, self.exclude_seen, self.ease_l2, self.grocery_discovery)


def exclude_seen_items(validation: Split) -> bool:
    """True for data where users (almost) never buy an item twice (ratings, one-off purchases)."""
    return validation.history.repeat_share() < REPEAT_SHARE_MIN


def tune_tifu(
    validation: Split, n_trials: int, study_dir: Path, data_hash: str, grocery_discovery: int = 0
) -> TunedTifu:
    """TIFU-KNN's parameters, tuned on the validation split (Optuna, resumable in SQLite), and
    EASE's l2 where it gives candidates (`TunedTifu`)."""
    exclude_seen = exclude_seen_items(validation)
    start = time.perf_counter()
    study_name = f"tifu_knn-{data_hash}-{validation.cutoff:%Y%m%d}-x{int(exclude_seen)}"
    study = tune_tifu_knn(validation, n_trials, study_dir / "optuna.db", study_name, exclude_seen)
    ease_l2 = tune_ease_l2(validation)[0] if exclude_seen or grocery_discovery else None
    seconds = time.perf_counter() - start
    return TunedTifu(
        study.best_params,
        exclude_seen,
        seconds,
        TuningSummary(study_name, len(study.trials), study.best_value, seconds),
        ease_l2,
        0 if exclude_seen else grocery_discovery,
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
    scorers = dict(BASELINE_SCORERS)
    if data.exclude_seen:  # EASE's own order: the baseline to beat where nobody repeats
        scorers["ease"], sizes["ease"] = EASE_SCORER, generator.ease.param_count()
    tiers = []
    for name, spec in scorers.items():
        params = {
            "scorer": spec["kind"],
            **({"scorer_by": ",".join(spec["by"])} if "by" in spec else {}),
            "exclude_seen": data.exclude_seen,
        }
        tuned = name == "tifu_knn"
        if tuned:
            params |= {f"tifu_{k}": v for k, v in tifu.params.items()}
        if name == "ease":
            params |= {"ease_l2": generator.params["ease_l2"], "ease_keep": generator.ease.params["keep"]}
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
    teacher: lgb.Booster
    teacher_spec: BoostedSpec
    students: dict[str, CandidateRanker]
    student_specs: dict[str, RankerSpec]
    seconds: dict[str, float]  # training time per tier


def fit_rankers(data: RankerData, teacher_spec: BoostedSpec, student_epochs: int, seed: int = 0) -> RankerFit:
    """Grow the teacher with the tuned spec, then distil every student from its scores."""
    start = time.perf_counter()
    teacher, _ = fit_boosted(teacher_spec, data.train, seed=seed)
    seconds = {TEACHER_TIER: time.perf_counter() - start}
    log.info(
        "%s on %s, seed %d: %d trees in %.1fs",
        TEACHER_TIER,
        data.split.name,
        seed,
        teacher.num_trees(),
        seconds[TEACHER_TIER],
    )
    teacher_scores = boosted_scores(teacher, data.train.features)
    students, specs = {}, {}
    for name in STUDENT_TIERS:
        start = time.perf_counter()
        students[name], specs[name] = distill(name, teacher_scores, data, student_epochs, seed=seed)
        seconds[name] = time.perf_counter() - start
    return RankerFit(data, teacher, teacher_spec, students, specs, seconds)


def export_rankers(fit: RankerFit, folder: Path, exclude_seen: bool) -> dict[str, FittedTier]:
    """Every ranking tier: the teacher as an ONNX tree ensemble (with LightGBM's own file:
    `CLOUD_TIER` serves the same bundle in LightGBM), the students as int8 ONNX; `fp32/<student>`
    holds a student's fp32 ONNX, to measure what quantization costs."""
    ranker = scorer_spec(RANKER)
    params = {**fit.teacher_spec.params(), "model": "lightgbm_lambdarank", "exclude_seen": exclude_seen}
    onnx_file = export_boosted_onnx(fit.teacher, folder / TEACHER_TIER / bundle.MODEL)
    native = save_native(fit.teacher, folder / TEACHER_TIER / bundle.LIGHTGBM_MODEL)
    size, seconds = tree_nodes(fit.teacher), fit.seconds[TEACHER_TIER]
    tiers = {
        TEACHER_TIER: FittedTier(
            TEACHER_TIER, TierScorer(TEACHER_TIER, ranker, onnx_file, native), params, size, seconds
        ),
        CLOUD_TIER: FittedTier(
            CLOUD_TIER, TierScorer(TEACHER_TIER, ranker, onnx_file, native), params, size, seconds, runtime="native"
        ),
    }
    for name, model in fit.students.items():
        tiers |= export_neural(name, model, fit.student_specs[name], fit.seconds[name], folder, exclude_seen)
    return tiers


def export_neural(
    name: str, model: CandidateRanker, spec: RankerSpec, seconds: float, folder: Path, exclude_seen: bool
) -> dict[str, FittedTier]:
    """A neural ranker as tier `name`, int8 ONNX, and as `fp32/<name>`, its fp32 ONNX (to measure
    what quantization costs); seconds: its training time."""
    params = {**spec.params(), "exclude_seen": exclude_seen}
    fp32 = export_onnx(model, folder / name / "model.fp32.onnx", len(FEATURE_NAMES))

    def tier(onnx_file: Path) -> FittedTier:
        scorer = TierScorer(name, scorer_spec(RANKER), onnx_file, ranker_config=model.config)
        return FittedTier(name, scorer, params, model.param_count(), seconds)

    return {name: tier(quantize_int8(fp32, folder / name / "model.int8.onnx")), f"fp32/{name}": tier(fp32)}
