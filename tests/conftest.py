"""Shared fixtures. Every test module gets its own project home (MLflow store, feature cache,
collected events, Optuna studies, signing keys) in a temporary folder, so no module can change
the data or the registry another module sees. Prefect's and Flower's homes are per session: set
once, before lightpersml.config and Prefect are imported, and holding no data a test reads."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_HOME = Path(tempfile.mkdtemp(prefix="lightpersml-tests-"))
os.environ["LIGHTPERSML_HOME"] = str(_HOME)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)
for _name in ("PREFECT_HOME", "MPLCONFIGDIR", "FLWR_HOME", "_MLFLOW_SERVER_ARTIFACT_ROOT"):
    os.environ.pop(_name, None)

from lightpersml import config  # noqa: E402

config.apply_environment()  # the environment above, before anything else loads

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from data_contracts import schema  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def project_home(tmp_path_factory, request) -> Path:
    """This module's LIGHTPERSML_HOME, with the MLflow store in it; MLflow's process-wide
    active experiment and run are reset on the way in and out."""
    import mlflow

    home = tmp_path_factory.mktemp(f"home-{request.module.__name__.rsplit('.', 1)[-1]}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIGHTPERSML_HOME", str(home))
        patch.setenv("MLFLOW_TRACKING_URI", config.mlflow_tracking_uri())
        patch.setenv(config.MLFLOW_ARTIFACT_ROOT_VARIABLE, config.mlflow_artifact_root())
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        config.mlflow_dir().mkdir(parents=True)
        _forget_mlflow_session(mlflow)
        yield home
        _forget_mlflow_session(mlflow)


def _forget_mlflow_session(mlflow) -> None:
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.tracking.fluent._active_experiment_id = None  # set by mlflow.set_experiment, per process


@pytest.fixture(scope="session")
def completejourney():
    """The full bundled dataset, loaded once (~10 s)."""
    from data_contracts.completejourney import load_completejourney

    return load_completejourney()


@pytest.fixture(scope="session")
def movielens(tmp_path_factory):
    """MovieLens-100k (943 users, 1,682 films, 100,000 ratings), downloaded once per session."""
    from data_contracts.sources import load_source

    return load_source("movielens-100k", tmp_path_factory.mktemp("downloads"))


@pytest.fixture(scope="session")
def cj_slice(completejourney, tmp_path_factory) -> Path:
    """A folder of contract Parquet files: every 15th household of Complete Journey (~165 users),
    all their events, the items they bought plus 300 others, their stores and availability."""
    return write_slice(completejourney, tmp_path_factory.mktemp("cj_slice"), every=15)


def write_slice(completejourney, folder: Path, every: int) -> Path:
    """Every `every`-th household of Complete Journey as contract Parquet files in `folder` (see `cj_slice`)."""
    users = completejourney.users[schema.USER_ID].sort_values().iloc[::every]
    events = completejourney.events[completejourney.events[schema.USER_ID].isin(users)]
    bought = events[schema.ITEM_ID].unique()
    items = completejourney.items
    items = pd.concat(
        [items[items[schema.ITEM_ID].isin(bought)], items[~items[schema.ITEM_ID].isin(bought)].iloc[::300]]
    )
    stores = completejourney.stores[completejourney.stores[schema.STORE_ID].isin(events[schema.STORE_ID])]
    availability = completejourney.availability
    availability = availability[
        availability[schema.STORE_ID].isin(stores[schema.STORE_ID])
        & availability[schema.ITEM_ID].isin(items[schema.ITEM_ID])
    ]
    for name, frame in {
        "events": events,
        "items": items,
        "stores": stores,
        "availability": availability,
        "users": completejourney.users[completejourney.users[schema.USER_ID].isin(users)],
    }.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


@pytest.fixture(scope="session")
def one_off_purchases(cj_slice, tmp_path_factory) -> Path:
    """Ratings-like data in the contract format: each user's first purchase of each item only,
    as CSV, without basket, store or quantity columns — nobody ever repeats an item."""
    folder = tmp_path_factory.mktemp("one_off")
    events = pd.read_parquet(cj_slice / "events.parquet")
    events = events.sort_values(schema.TIMESTAMP).drop_duplicates([schema.USER_ID, schema.ITEM_ID])
    events[[schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP]].to_csv(folder / "events.csv", index=False)
    items = pd.read_parquet(cj_slice / "items.parquet")
    items[[schema.ITEM_ID, schema.CATEGORY, schema.TITLE]].to_csv(folder / "items.csv", index=False)
    return folder


@pytest.fixture(scope="session")
def prefect_api():
    """A real local Prefect API for flow tests (temporary SQLite database)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
