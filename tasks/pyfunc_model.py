"""A saved `Recommender` as an MLflow pyfunc model, logged as code (no pickled objects).

predict(DataFrame with `user_id`, params={"k": 10, "store_id": ""}) → user_id, item_id, rank, score.
An empty `store_id` means no store filter.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.models import ModelSignature, set_model
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from models.recommender import Recommender

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "user_id")]),
    outputs=Schema([ColSpec("string", "user_id"), ColSpec("string", "item_id"), ColSpec("long", "rank"),
                    ColSpec("float", "score")]),
    params=ParamSchema([ParamSpec("k", "long", 10), ParamSpec("store_id", "string", "")]),
)


class RecommenderModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.recommender = Recommender.load(context.artifacts["recommender"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        store = params.get("store_id") or None
        return self.recommender.recommend(model_input["user_id"], int(params.get("k", 10)), store)


set_model(RecommenderModel())
