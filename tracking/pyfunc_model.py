"""A tier's edge bundle as an MLflow pyfunc model, logged as code (no pickled objects): the
node's engine (`edge.engine.Engine`) answers, so `mlflow.pyfunc.load_model` gives what a node gives.

predict(DataFrame with `user_id` and optional `store_id`, params={"k": 10}) → user_id, item_id,
rank, score, reason. An empty or missing `store_id` means no store filter.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from mlflow.models import ModelSignature, set_model
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

import mlflow
from edge.bundle import MANIFEST
from edge.engine import Engine
from tracking.batch import answer_requests

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "user_id"), ColSpec("string", "store_id", required=False)]),
    outputs=Schema(
        [
            ColSpec("string", "user_id"),
            ColSpec("string", "item_id"),
            ColSpec("long", "rank"),
            ColSpec("float", "score"),
            ColSpec("string", "reason"),
        ]
    ),
    params=ParamSchema([ParamSpec("k", "long", 10)]),
)


class BundleModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        folder = Path(context.artifacts["bundle"])
        # The bundle was verified when it was logged; the store it comes from is the trusted one.
        self.engine = Engine(folder, json.loads((folder / MANIFEST).read_text()))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        requests = pd.DataFrame(
            {
                "user_id": model_input["user_id"].astype(str),
                "store_id": model_input.get("store_id", pd.Series(None, index=model_input.index)),
            }
        )
        answers = answer_requests(self.engine, requests, int((params or {}).get("k", 10)))
        return answers[["user_id", "item_id", "rank", "score", "reason"]]


set_model(BundleModel())
