"""The teacher's Optuna study: SQLite storage that resumes, a nested MLflow run per trial."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import mlflow
from tests.code.test_training import synthetic_lists
from tracking.runs import start_parent_run
from tracking.tuning_runs import MlflowTrials
from training.boosted import BoostedSpec
from training.data import RankerData
from training.tuning import REPORT_EVERY, tune_boosted


def test_teacher_study_resumes_and_logs_each_trial_as_a_nested_run(tmp_path):
    data = RankerData(
        split=SimpleNamespace(history=SimpleNamespace(n_items=50)),
        train=synthetic_lists(200, 20, 0),
        generator=None,
        validation=synthetic_lists(50, 20, 1),
    )
    parent_run_id, experiment = start_parent_run("tuning-test", "smoke", "synthetic lists")
    options = dict(minutes=5, max_rounds=30, storage_path=tmp_path / "optuna.db", study_name="resume")
    study, _ = tune_boosted(data, n_trials=2, recorder=MlflowTrials(parent_run_id, "resume"), **options)
    assert len(study.trials) == 2
    defaults = {k: v for k, v in vars(BoostedSpec()).items() if k != "rounds"}
    assert study.trials[0].params == pytest.approx(defaults)  # the known-good start

    # as after an interruption: only the missing trial runs
    study, spec = tune_boosted(data, n_trials=3, recorder=MlflowTrials(parent_run_id, "resume"), **options)
    assert len(study.trials) == 3 and 1 <= spec.rounds <= 30

    trials = mlflow.search_runs(
        [experiment], filter_string="tags.kind = 'trial' and tags.study = 'resume'", output_format="list"
    )
    assert len(trials) == 3
    tuning_runs = {t.data.tags["mlflow.parentRunId"] for t in trials}
    assert all(mlflow.get_run(r).data.tags["mlflow.parentRunId"] == parent_run_id for r in tuning_runs)
    client = mlflow.MlflowClient()
    for trial in trials:
        history = client.get_metric_history(trial.info.run_id, "validation_ndcg_at_10")
        steps = [m.step for m in history]
        assert steps == list(range(REPORT_EVERY, REPORT_EVERY * len(steps) + 1, REPORT_EVERY)) and steps, steps
        assert steps[-1] <= 30 and trial.data.tags["state"].startswith(("complete", "pruned"))
        assert trial.info.status == "FINISHED"  # a pruned trial is pruned, not failed
