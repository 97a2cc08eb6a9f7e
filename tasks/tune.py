"""Tune a baseline tier's hyperparameters with Optuna on the validation split only."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna

from models.baselines import TIFUKNN
from models.recommender import Recommender
from tasks.evaluate import evaluate_split
from tasks.features import Split

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


def tune_tifu_knn(validation: Split, n_trials: int, storage_path: Path, study_name: str,
                  exclude_seen: bool, seed: int = 0) -> optuna.Study:
    """Maximise validation NDCG@10. The study lives in SQLite and resumes: trials already
    finished count toward `n_trials`, so a rerun after an interruption only runs what is left.
    """
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own log line per trial says more
    study = optuna.create_study(
        study_name=study_name, storage=f"sqlite:///{storage_path}", direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed), load_if_exists=True,
    )
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not study.trials:
        study.enqueue_trial(TIFU_KNN_DEFAULTS)

    def objective(trial: optuna.Trial) -> float:
        tier = TIFUKNN(**tifu_knn_space(trial)).fit(validation.history)
        recommender = Recommender(tier, validation.catalog, validation.history.user_item_counts(), exclude_seen)
        ndcg = evaluate_split(recommender, validation)["ndcg_at_10"]
        log.info("tifu_knn trial %d/%d: validation ndcg@10 %.4f %s", trial.number + 1, n_trials, ndcg, trial.params)
        return ndcg

    remaining = n_trials - len(finished)
    if remaining > 0:
        study.optimize(objective, n_trials=remaining)
    return study
