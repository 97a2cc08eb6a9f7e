"""The teacher's Optuna study in MLflow: a "tuning full" child of the pipeline run, a nested run per
trial with its parameters, validation NDCG@10 by boosting round and state (complete or pruned: never FAILED)."""

from __future__ import annotations

from contextlib import contextmanager

import mlflow


class MlflowTrials:
    """`training.tuning.TrialRecorder` on nested MLflow runs under the pipeline run `parent_run_id`."""

    def __init__(self, parent_run_id: str, study_name: str):
        self.client = mlflow.MlflowClient()
        self.experiment = self.client.get_run(parent_run_id).info.experiment_id
        self.study_name = study_name
        self.run_id = self.client.create_run(
            self.experiment,
            run_name="tuning full",
            tags={
                "mlflow.parentRunId": parent_run_id,
                "kind": "tuning",
                "study": study_name,
                "mlflow.note.content": f"The teacher's Optuna study {study_name}: one nested run per trial.",
            },
        ).info.run_id

    @contextmanager
    def trial(self, number: int, params: dict):
        run = self.client.create_run(
            self.experiment,
            run_name=f"trial {number}",
            tags={"mlflow.parentRunId": self.run_id, "kind": "trial", "study": self.study_name},
        )
        record = _Trial(self.client, run.info.run_id)
        self.client.log_batch(
            run.info.run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in {**params, "trial": number}.items()]
        )
        try:
            yield record
        except BaseException:
            self.client.set_terminated(run.info.run_id, "FAILED")
            raise
        self.client.set_terminated(run.info.run_id, "FINISHED")

    def finish(self, trials: int, best_value: float | None) -> None:
        if best_value is not None:
            self.client.log_metric(self.run_id, "best_validation_ndcg_at_10", best_value)
            self.client.log_param(self.run_id, "trials", trials)
        self.client.set_terminated(self.run_id)


class _Trial:
    def __init__(self, client: mlflow.MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id

    def step(self, step: int, ndcg: float) -> None:
        self.client.log_metric(self.run_id, "validation_ndcg_at_10", ndcg, step=step)

    def state(self, state: str) -> None:
        self.client.set_tag(self.run_id, "state", state)

    def best(self, ndcg: float, step: int) -> None:
        self.client.log_metric(self.run_id, "best_validation_ndcg_at_10", ndcg)
        self.client.log_metric(self.run_id, "best_round", step)
