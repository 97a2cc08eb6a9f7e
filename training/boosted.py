"""The teacher: a LightGBM LambdaRank ranker of the candidates' features.

Why LightGBM: on Complete Journey's validation candidate lists (raw export, fuel lines included)
its LambdaRank trees beat the tuned MLP ranker by 4% and TIFU-KNN's own order by 10% NDCG@10;
they train in seconds on 2 cores, need no feature scaling, and export to one small ONNX tree
ensemble (`onnxmltools`) that ONNX Runtime serves on every node: no new dependency on the node.

Lists are labelled candidates (`models.candidates`); only lists with at least one target item
among their candidates are trained on (the others carry no ranking gradient). The validation
NDCG@10 is the protocol's (IDCG over the whole target basket, `models.training.ndcg_at_k`),
computed every round from LightGBM's incremental validation scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np

from models.candidates import FEATURE_NAMES, LabelledCandidates
from models.training import ndcg_at_k

PATIENCE = 40  # rounds without a better validation NDCG@10 before a fit stops
THREADS = 2


@dataclass
class BoostedSpec:
    """LightGBM LambdaRank settings; `rounds` is how many trees the final fits grow."""

    num_leaves: int = 63
    learning_rate: float = 0.05
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    truncation_level: int = 20  # LambdaRank's pairs reach this deep into each list
    rounds: int = 150

    def params(self) -> dict:
        return asdict(self)

    def lightgbm(self, seed: int) -> dict:
        return {
            "objective": "lambdarank",
            "metric": "None",
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1,
            "lambda_l2": self.lambda_l2,
            "lambdarank_truncation_level": self.truncation_level,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": THREADS,
            "verbose": -1,
        }


def _dataset(lists: LabelledCandidates, reference: lgb.Dataset | None = None) -> lgb.Dataset:
    sizes = np.bincount(lists.group, minlength=len(lists.basket_sizes))
    return lgb.Dataset(
        lists.features,
        lists.labels,
        group=sizes[sizes > 0],
        feature_name=list(FEATURE_NAMES),
        reference=reference,
        free_raw_data=False,
    )


def with_positives(lists: LabelledCandidates) -> LabelledCandidates:
    """Only the lists with at least one target item among their candidates."""
    hits = np.bincount(lists.group, weights=lists.labels, minlength=len(lists.basket_sizes))
    return lists.subset(np.flatnonzero(hits > 0))


def fit_boosted(
    spec: BoostedSpec,
    train: LabelledCandidates,
    validation: LabelledCandidates | None = None,
    seed: int = 0,
    on_round: Callable[[int, float], None] | None = None,
) -> tuple[lgb.Booster, list[float]]:
    """Grow `spec.rounds` trees on `train` (with `validation`: stop after PATIENCE rounds without
    a better NDCG@10 and keep the best). Returns the booster and the validation NDCG@10 after
    every round (empty without validation); `on_round(round, ndcg)` may raise to stop the fit
    (an Optuna pruner)."""
    data = _dataset(with_positives(train))
    if validation is None:
        return lgb.train(spec.lightgbm(seed), data, num_boost_round=spec.rounds), []
    history: list[float] = []

    def protocol_ndcg(scores: np.ndarray, _) -> tuple[str, float, bool]:
        history.append(ndcg_at_k(scores, validation))
        if on_round is not None:
            on_round(len(history), history[-1])
        return "ndcg_at_10", history[-1], True

    booster = lgb.train(
        spec.lightgbm(seed),
        data,
        num_boost_round=spec.rounds,
        valid_sets=[_dataset(validation, reference=data)],
        valid_names=["validation"],
        feval=protocol_ndcg,
        callbacks=[lgb.early_stopping(PATIENCE, verbose=False)],
    )
    return booster, history


def boosted_scores(booster: lgb.Booster, features: np.ndarray) -> np.ndarray:
    """(rows,) float32 raw LambdaRank scores (higher first)."""
    return booster.predict(features, num_threads=THREADS).astype(np.float32)


def tree_nodes(booster: lgb.Booster) -> int:
    """The booster's size in parameters: every split and leaf of every tree."""
    return int(sum(2 * tree["num_leaves"] - 1 for tree in booster.dump_model()["tree_info"]))


def export_boosted_onnx(booster: lgb.Booster, path: Path) -> Path:
    """One ONNX file (ai.onnx.ml TreeEnsembleRegressor): features (rows, n_features) float32 →
    (rows, 1) scores, which `models.scorers.OnnxScorer` flattens."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = onnxmltools.convert_lightgbm(
        booster,
        initial_types=[("features", FloatTensorType([None, booster.num_feature()]))],
        zipmap=False,
        target_opset=15,  # the newest default-domain opset onnxmltools 1.16 converts to
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def save_native(booster: lgb.Booster, path: Path) -> Path:
    """LightGBM's own text model (`models.scorers.BoostedScorer`: the cloud reference)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(path))
    return path
