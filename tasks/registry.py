"""Find and load logged tier models from the project's MLflow store."""

from __future__ import annotations

import mlflow

from models.recommender import Recommender


def latest_tier_run(tier: str) -> mlflow.entities.Run:
    """The newest run tagged `tier` whose pipeline (parent) run finished, in any LightPersML experiment."""
    experiments = [e.experiment_id for e in mlflow.search_experiments() if e.name.startswith("lightpersml-")]
    runs = mlflow.search_runs(experiments, filter_string=f"tags.tier = '{tier}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], output_format="list") if experiments else []
    for run in runs:
        if mlflow.get_run(run.data.tags["mlflow.parentRunId"]).info.status == "FINISHED":
            return run
    raise LookupError(f"no finished run of tier {tier!r} in {mlflow.get_tracking_uri()}; run `lightpersml run` first")


def load_recommender(model: str) -> tuple[Recommender, str]:
    """`model`: a tier name (newest run of that tier) or an MLflow model URI (models:/…, runs:/…).

    Returns the `Recommender` and the URI it was loaded from.
    """
    uri = model if ":/" in model else f"runs:/{latest_tier_run(model).info.run_id}/model"
    return mlflow.pyfunc.load_model(uri).unwrap_python_model().recommender, uri
