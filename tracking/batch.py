"""Batch export of what is deployed: the bundle of a registered version (or any bundle folder, or
a tier's evaluation fit) answering a file of requests through the node's engine, row by row."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from data_contracts import schema
from data_contracts.conform import normalise_ids
from edge import bundle
from edge.engine import Engine

REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class BadRequests(ValueError):
    """A requests file that cannot be read; the message names the file and the row or column."""


@dataclass
class OpenedModel:
    engine: Engine
    source: str  # what was opened, in words (version and alias, or folder / run)


def latest_tier_run(tier: str):
    """The newest run tagged `tier` whose pipeline (parent) run finished, in any LightPersML experiment."""
    import mlflow

    experiments = [e.experiment_id for e in mlflow.search_experiments() if e.name.startswith("lightpersml-")]
    runs = (
        mlflow.search_runs(
            experiments,
            filter_string=f"tags.tier = '{tier}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            output_format="list",
        )
        if experiments
        else []
    )
    for run in runs:
        if mlflow.get_run(run.data.tags["mlflow.parentRunId"]).info.status == "FINISHED":
            return run
    raise LookupError(f"no finished run of tier {tier!r} in {mlflow.get_tracking_uri()}; run `lightpersml run` first")


def open_model(model: str, work_dir: Path, private_key: Path, public_key: Path) -> OpenedModel:
    """The engine of `model`, verified as a node verifies it:

    - `models:/NAME@ALIAS` or `models:/NAME/VERSION`: the registered version's bundle (the refit a
      shop deploys), signed here with `private_key` into `work_dir`;
    - a folder: a signed bundle, verified with `public_key`;
    - a tier name or `runs:/RUN_ID/model`: a tier's evaluation fit (trained before the run's test cutoff).

    Raises LookupError (no such model or version) or bundle.BundleError (a bundle that does not verify).
    """
    registered = REGISTERED.match(model)
    if registered:
        from tracking.bundles import registry_bundle

        folder = Path(tempfile.mkdtemp(dir=work_dir))
        manifest = registry_bundle(
            folder, private_key, registered["name"], registered["alias"] or "edge", registered["version"]
        )
        aliases = ", ".join(manifest["aliases"]) or "no alias"
        source = f"{manifest['registered_model']} version {manifest['model_version']} ({manifest['tier']}; {aliases})"
        return OpenedModel(Engine.load(folder, bundle.load_public_key(public_key)), source)
    if (Path(model) / bundle.MANIFEST).is_file() or ("/" in model and ":/" not in model):  # a folder, not a tier name
        engine = Engine.load(Path(model), bundle.load_public_key(public_key))
        return OpenedModel(engine, f"bundle {model} (version {engine.version}, {engine.serving['tier']})")
    import mlflow

    uri = model if model.startswith("runs:/") else f"runs:/{latest_tier_run(model).info.run_id}/model"
    try:
        engine = mlflow.pyfunc.load_model(uri).unwrap_python_model().engine
    except mlflow.exceptions.MlflowException as error:
        raise LookupError(f"cannot load {uri}: {error.message}") from None
    return OpenedModel(engine, f"{uri} (evaluation fit of {engine.serving['tier']})")


def read_requests(path: Path, store_id: str | None = None) -> pd.DataFrame:
    """Requests as user_id, store_id (None: no store filter) and timestamp (None: now), one per row.

    `path`: CSV or Parquet with a `user_id` column and optional `store_id` and `timestamp`, or a text
    file of user ids (one per line). `store_id` applies to rows without one."""
    path = Path(path)
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path, dtype="string")
    else:
        frame = pd.DataFrame({schema.USER_ID: [line.strip() for line in path.read_text().splitlines() if line.strip()]})
    if schema.USER_ID not in frame.columns:
        raise BadRequests(f"{path}: no {schema.USER_ID} column (columns: {list(frame.columns)})")
    requests = pd.DataFrame({schema.USER_ID: normalise_ids(frame[schema.USER_ID])})
    missing = requests[schema.USER_ID].isna()
    if missing.any():
        raise BadRequests(f"{path}: row {int(missing.to_numpy().argmax()) + 1} has no {schema.USER_ID}")
    stores = (
        normalise_ids(frame[schema.STORE_ID])
        if schema.STORE_ID in frame.columns
        else pd.Series(pd.NA, index=frame.index)
    )
    requests[schema.STORE_ID] = stores.fillna(store_id) if store_id is not None else stores
    if schema.TIMESTAMP in frame.columns:
        times = pd.to_datetime(frame[schema.TIMESTAMP], errors="coerce", utc=True)
        bad = times.isna() & frame[schema.TIMESTAMP].notna()
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise BadRequests(
                f"{path}: row {row + 1}: {schema.TIMESTAMP} {frame[schema.TIMESTAMP].iloc[row]!r} is not a time"
            )
        requests[schema.TIMESTAMP] = times
    return requests


def answer_requests(engine: Engine, requests: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """One row per recommended item: the request's columns, then item_id, rank (1-based), score, reason."""
    rows = []
    for request in requests.itertuples(index=False):
        request = request._asdict()
        store, moment = request.get(schema.STORE_ID), request.get(schema.TIMESTAMP)
        answer = engine.recommend(
            str(request[schema.USER_ID]),
            None if pd.isna(store) else str(store),
            k,
            at=None if moment is None or pd.isna(moment) else moment.timestamp(),
        )
        rows += [
            {**request, "item_id": item.item_id, "rank": rank, "score": item.score, "reason": item.reason}
            for rank, item in enumerate(answer.items, start=1)
        ]
    return pd.DataFrame(rows, columns=[*requests.columns, "item_id", "rank", "score", "reason"])
