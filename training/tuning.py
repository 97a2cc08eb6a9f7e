"""Tune hyperparameters with Optuna on the validation split only: TIFU-KNN's, and the teacher
ranker's (with pruning; each trial recorded through a `TrialRecorder`, in MLflow by the pipeline)."""

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
from models.metrics import K, evaluate
from models.ranking import top_k
from splits.temporal import Split
from training.data import RankerData, RankerSpec, fit_ranker

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


@dataclass(frozen=True)
class TuningSummary:
    """One Optuna study as a tier reports it."""

    study: str
    trials: int
    best_validation_ndcg_at_10: float
    seconds: float
    best_epoch: int | None = None  # the teacher's: epochs its final fits train


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


# The prototype's best ranker (PR notes of issue 2): tried first so a short study starts from it.
RANKER_DEFAULTS = dict(hidden=256, item_embedding=False, item_dim=16, dropout=0.1, lr=1e-3, weight_decay=1e-5)


class OutOfTime(Exception):
    """The study's time budget ran out during a trial."""


def ranker_space(trial: optuna.Trial, max_epochs: int) -> RankerSpec:
    """The teacher's search space: MLP width, an optional per-item embedding, dropout, Adam."""
    embed = trial.suggest_categorical("item_embedding", [False, True])
    item_dim = trial.suggest_categorical("item_dim", [16, 32, 64])
    architecture = dict(
        hidden=trial.suggest_int("hidden", 64, 1024, log=True),
        item_dim=item_dim if embed else 1,
        item_buckets=None if embed else 1,
        dropout=trial.suggest_float("dropout", 0.0, 0.4),
    )
    return RankerSpec(
        architecture,
        lr=trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-8, 1e-3, log=True),
        epochs=max_epochs,
    )


class TrialRecorder(Protocol):
    """Where the teacher's study records itself (`tracking.tuning_runs.MlflowTrials`: nested MLflow runs)."""

    def trial(self, number: int, params: dict) -> AbstractContextManager[TrialRecord]: ...

    def finish(self, trials: int, best_value: float | None) -> None: ...


class TrialRecord(Protocol):
    def epoch(self, epoch: int, ndcg: float) -> None: ...

    def state(self, state: str) -> None: ...

    def best(self, ndcg: float, epoch: int) -> None: ...


def tune_ranker(
    data: RankerData,
    n_trials: int,
    minutes: float,
    max_epochs: int,
    storage_path: Path,
    study_name: str,
    recorder: TrialRecorder,
    seed: int = 0,
) -> tuple[optuna.Study, RankerSpec]:
    """TPE + MedianPruner on the validation lists' NDCG@10, reported after every epoch.

    Every trial is recorded by `recorder` (params, per-epoch validation NDCG@10, its state:
    complete, pruned, or stopped by the budget). The study lives in SQLite and resumes like
    `tune_tifu_knn`; it stops after `n_trials` finished (complete or pruned) trials or `minutes`
    (a trial running when the time is up stops after its current epoch and counts with the epochs
    it ran). Returns the study and the best spec with `epochs` set to the best trial's best epoch.
    """
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        storage=f"sqlite:///{storage_path}",
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    if not study.trials:
        study.enqueue_trial(RANKER_DEFAULTS)
    started = time.monotonic()
    deadline = started + minutes * 60

    def objective(trial: optuna.Trial) -> float:
        spec = ranker_space(trial, max_epochs)
        history: list[float] = []
        pruned = None
        with recorder.trial(trial.number, dict(trial.params)) as record:

            def report(epoch: int, ndcg: float) -> None:
                history.append(ndcg)
                record.epoch(epoch + 1, ndcg)
                trial.report(ndcg, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"epoch {epoch + 1}: {ndcg:.4f} below the median")
                if time.monotonic() > deadline and epoch + 1 < max_epochs:
                    raise OutOfTime

            try:
                fit_ranker(spec, data, seed=seed, on_epoch=report)
                record.state("complete")
            except OutOfTime:  # the budget binds mid-trial too; the epochs run so far still count
                record.state(f"complete: stopped after epoch {len(history)}, time budget spent")
            except optuna.TrialPruned as stop:  # the trial itself finished: it is pruned, not failed
                record.state("pruned")
                pruned = stop
            best = int(np.argmax(history))
            trial.set_user_attr("best_epoch", best + 1)
            record.best(history[best], best + 1)
        spent = (time.monotonic() - started) / 60
        log.info(
            "teacher trial %d/%d (%.1f of %g min): validation ndcg@10 %.4f at epoch %d%s %s",
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
    spec = ranker_space(optuna.trial.FixedTrial(best.params), max_epochs)
    spec.epochs = best.user_attrs["best_epoch"]
    return study, spec


def tune_teacher(
    data: RankerData, settings, storage_path: Path, study_name: str, recorder: TrialRecorder
) -> tuple[RankerSpec, TuningSummary]:
    """`tune_ranker` with the profile's trials, time budget and epochs; the best spec and the study's summary."""
    start = time.perf_counter()
    study, spec = tune_ranker(
        data, settings.tuning_trials, settings.tuning_minutes, settings.max_epochs, storage_path, study_name, recorder
    )
    return spec, TuningSummary(
        study_name, len(study.trials), study.best_value, time.perf_counter() - start, spec.epochs
    )
