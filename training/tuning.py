"""Tune hyperparameters with Optuna on the validation split only: TIFU-KNN's, and the LightGBM
teacher's (with pruning; each trial recorded through a `TrialRecorder`, in MLflow by the pipeline)."""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import optuna

from models.baselines import TIFUKNN
from models.ease import EASE
from models.metrics import K, evaluate
from models.ranking import top_k
from models.rows import Rows
from splits.temporal import Split
from training.boosted import BoostedSpec, fit_boosted
from training.data import RankerData

log = logging.getLogger(__name__)

# Hu et al. (2020) report these as good on Dunnhumby-like data; tried first.
TIFU_KNN_DEFAULTS = dict(n_neighbors=300, group_size=7, within_decay=0.9, group_decay=0.7, alpha=0.7)


def tifu_knn_space(trial: optuna.Trial) -> dict:
    return dict(
        n_neighbors=trial.suggest_int("n_neighbors", 20, 1000, log=True),
        group_size=trial.suggest_int("group_size", 2, 20),
        within_decay=trial.suggest_float("within_decay", 0.5, 1.0),
        group_decay=trial.suggest_float("group_decay", 0.3, 1.0),
        alpha=trial.suggest_float("alpha", 0.3, 1.0),
    )


def tifu_validation_ndcg(tifu: TIFUKNN, validation: Split, exclude_seen: bool, chunk: int = 512) -> float:
    """NDCG@10 of TIFU-KNN's own top-10 on the validation targets: the order the engine's TIFU-KNN
    scorer serves (its candidates hold every user's top-10 by this score), without stock filter or
    popularity fill, so a trial costs one scoring pass instead of a bundle."""
    users = np.array(sorted(validation.targets), dtype=np.int64)
    seen = validation.history.user_item_counts()
    recommendations = {}
    for start in range(0, len(users), chunk):
        batch = users[start : start + chunk]
        scores = tifu.score(batch)
        scores[scores <= 0] = -np.inf
        if exclude_seen:
            scores[seen[batch].toarray() > 0] = -np.inf
        for user, row in zip(batch, top_k(scores, K)[0]):
            recommendations[int(user)] = [int(i) for i in row if i >= 0]
    return evaluate(recommendations, validation.targets, validation.seen_items(), validation.history.n_items, K)[
        "ndcg_at_10"
    ]


EASE_L2_GRID = (100.0, 300.0, 1000.0, 3000.0)  # MovieLens-100k's best is 300 (benchmarks/one_off.py)


def ease_validation_ndcg(validation: Split, l2: float, chunk: int = 512) -> float:
    """NDCG@10 of EASE's top-10 items new to each validation user (what the engine's EASE tier
    serves on one-off data, without stock filter or popularity fill)."""
    bought = validation.history.user_item_counts()
    model = EASE(l2=l2).fit(Rows.from_scipy(bought))
    users = np.array(sorted(validation.targets), dtype=np.int64)
    recommendations = {}
    for start in range(0, len(users), chunk):
        batch = users[start : start + chunk]
        scores = model.score(Rows.from_scipy(bought[batch]))
        scores[(scores <= 0) | (bought[batch].toarray() > 0)] = -np.inf
        for user, row in zip(batch, top_k(scores, K)[0]):
            recommendations[int(user)] = [int(i) for i in row if i >= 0]
    return evaluate(recommendations, validation.targets, validation.seen_items(), validation.history.n_items, K)[
        "ndcg_at_10"
    ]


def tune_ease_l2(validation: Split, grid: tuple[float, ...] = EASE_L2_GRID) -> tuple[float, dict[float, float]]:
    """EASE's l2 with the best validation NDCG@10 on `grid`, and every value's NDCG@10."""
    ndcgs = {l2: ease_validation_ndcg(validation, l2) for l2 in grid}
    for l2, ndcg in ndcgs.items():
        log.info("ease l2 %g: validation ndcg@10 %.4f", l2, ndcg)
    return max(ndcgs, key=ndcgs.__getitem__), ndcgs


@dataclass(frozen=True)
class TuningSummary:
    """One Optuna study as a tier reports it."""

    study: str
    trials: int
    best_validation_ndcg_at_10: float
    seconds: float
    best_rounds: int | None = None  # the teacher's: boosting rounds its final fits grow


def tune_tifu_knn(
    validation: Split, n_trials: int, storage_path: Path, study_name: str, exclude_seen: bool, seed: int = 0
) -> optuna.Study:
    """Maximise validation NDCG@10. The study lives in SQLite and resumes: trials already
    finished count toward `n_trials`, so a rerun after an interruption only runs what is left.
    """
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own log line per trial says more
    study = optuna.create_study(
        study_name=study_name,
        storage=f"sqlite:///{storage_path}",
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        load_if_exists=True,
    )
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not study.trials:
        study.enqueue_trial(TIFU_KNN_DEFAULTS)

    def objective(trial: optuna.Trial) -> float:
        ndcg = tifu_validation_ndcg(TIFUKNN(**tifu_knn_space(trial)).fit(validation.history), validation, exclude_seen)
        log.info("tifu_knn trial %d/%d: validation ndcg@10 %.4f %s", trial.number + 1, n_trials, ndcg, trial.params)
        return ndcg

    remaining = n_trials - len(finished)
    if remaining > 0:
        study.optimize(objective, n_trials=remaining)
    return study


class OutOfTime(Exception):
    """The study's time budget ran out during a trial."""


def boosted_space(trial: optuna.Trial, max_rounds: int) -> BoostedSpec:
    """The teacher's search space: tree size, learning rate, leaf size, sampling, L2, LambdaRank depth."""
    return BoostedSpec(
        num_leaves=trial.suggest_int("num_leaves", 15, 255, log=True),
        learning_rate=trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        min_data_in_leaf=trial.suggest_int("min_data_in_leaf", 20, 1000, log=True),
        feature_fraction=trial.suggest_float("feature_fraction", 0.4, 1.0),
        bagging_fraction=trial.suggest_float("bagging_fraction", 0.5, 1.0),
        lambda_l2=trial.suggest_float("lambda_l2", 1e-3, 100.0, log=True),
        truncation_level=trial.suggest_int("truncation_level", 10, 60),
        rounds=max_rounds,
    )


class TrialRecorder(Protocol):
    """Where the teacher's study records itself (`tracking.tuning_runs.MlflowTrials`: nested MLflow runs)."""

    def trial(self, number: int, params: dict) -> AbstractContextManager[TrialRecord]: ...

    def finish(self, trials: int, best_value: float | None) -> None: ...


class TrialRecord(Protocol):
    def step(self, step: int, ndcg: float) -> None: ...

    def state(self, state: str) -> None: ...

    def best(self, ndcg: float, step: int) -> None: ...


REPORT_EVERY = 10  # boosting rounds between the validation NDCG@10 a trial reports (pruner, MLflow)


def tune_boosted(
    data: RankerData,
    n_trials: int,
    minutes: float,
    max_rounds: int,
    storage_path: Path,
    study_name: str,
    recorder: TrialRecorder,
    seed: int = 0,
) -> tuple[optuna.Study, BoostedSpec]:
    """TPE + MedianPruner on the validation lists' NDCG@10, reported every REPORT_EVERY rounds.

    Every trial is recorded by `recorder` (params, validation NDCG@10 by round, its state:
    complete, pruned, or stopped by the budget). The study lives in SQLite and resumes like
    `tune_tifu_knn`; it stops after `n_trials` finished (complete or pruned) trials or `minutes`
    (a trial running when the time is up stops at its next report and counts with the rounds it
    grew). Returns the study and the best spec with `rounds` set to the best trial's best round.
    """
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        storage=f"sqlite:///{storage_path}",
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3),
    )
    if not study.trials:
        defaults = BoostedSpec().params()
        del defaults["rounds"]
        study.enqueue_trial(defaults)
    started = time.monotonic()
    deadline = started + minutes * 60

    def objective(trial: optuna.Trial) -> float:
        spec = boosted_space(trial, max_rounds)
        history: list[float] = []
        pruned = None
        with recorder.trial(trial.number, dict(trial.params)) as record:

            def report(rounds: int, ndcg: float) -> None:
                history.append(ndcg)
                if rounds % REPORT_EVERY:
                    return
                record.step(rounds, ndcg)
                trial.report(max(history), rounds // REPORT_EVERY)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"round {rounds}: {max(history):.4f} below the median")
                if time.monotonic() > deadline and rounds < max_rounds:
                    raise OutOfTime

            try:
                fit_boosted(spec, data.train, data.validation, seed=seed, on_round=report)
                record.state("complete")
            except OutOfTime:  # the budget binds mid-trial too; the rounds grown so far still count
                record.state(f"complete: stopped after round {len(history)}, time budget spent")
            except optuna.TrialPruned as stop:  # the trial itself finished: it is pruned, not failed
                record.state("pruned")
                pruned = stop
            best = int(np.argmax(history))
            trial.set_user_attr("best_round", best + 1)
            record.best(history[best], best + 1)
        spent = (time.monotonic() - started) / 60
        log.info(
            "teacher trial %d/%d (%.1f of %g min): validation ndcg@10 %.4f at round %d%s %s",
            trial.number + 1,
            n_trials,
            spent,
            minutes,
            history[best],
            best + 1,
            ", pruned" if pruned else "",
            trial.params,
        )
        if pruned is not None:
            raise pruned
        return history[best]

    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    try:
        if n_trials - len(done) > 0:
            study.optimize(objective, n_trials=n_trials - len(done), timeout=minutes * 60)
    finally:
        complete = any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        recorder.finish(len(study.trials), study.best_value if complete else None)
    best = study.best_trial
    spec = boosted_space(optuna.trial.FixedTrial(best.params), max_rounds)
    spec.rounds = best.user_attrs["best_round"]
    return study, spec


def tune_teacher(
    data: RankerData, settings, storage_path: Path, study_name: str, recorder: TrialRecorder
) -> tuple[BoostedSpec, TuningSummary]:
    """`tune_boosted` with the profile's trials, time budget and rounds; the best spec and the study's summary."""
    start = time.perf_counter()
    study, spec = tune_boosted(
        data, settings.tuning_trials, settings.tuning_minutes, settings.max_rounds, storage_path, study_name, recorder
    )
    return spec, TuningSummary(
        study_name, len(study.trials), study.best_value, time.perf_counter() - start, spec.rounds
    )
