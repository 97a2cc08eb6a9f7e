"""`lightpersml`: run the pipeline, validate data, export recommendations, open the MLflow UI.

Heavy libraries are imported inside each command so `--help` stays fast and an edge node
(which has no prefect or mlflow) can still run its own commands.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from lightpersml import config

app = typer.Typer(help="LightPersML: lightweight personalization for small shops.", no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 160)


SHORT_NAMES = {"ndcg_at_10": "NDCG", "recall_at_10": "recall", "precision_at_10": "prec.", "hr_at_10": "HR",
               "recall_repeat_at_10": "rec.repeat", "recall_explore_at_10": "rec.explore", "coverage_at_10": "coverage",
               "latency_p99_ms": "p99 ms", "peak_memory_mb": "mem MB", "model_size_mb": "size MB", "param_count": "params"}


def print_tier_table(rows: list[dict]) -> None:
    from tasks.track import TABLE_COLUMNS, tier_table

    table = Table(title="Tiers on the test split (metrics @10)")
    for column in TABLE_COLUMNS:
        table.add_column(SHORT_NAMES.get(column, column), justify="left" if column == "tier" else "right")
    for row in tier_table(rows).to_dict(orient="records"):
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)


@app.command()
def run(
    data: Annotated[str, typer.Option(help='"completejourney" (bundled) or a folder of contract files')] = "completejourney",
    profile: Annotated[str, typer.Option(help="quick (minutes) or full (nightly)")] = "quick",
) -> None:
    """Run the training pipeline: validate, build features, fit and evaluate every tier, log to MLflow."""
    if profile not in config.PROFILES:
        raise typer.BadParameter(f"unknown profile {profile!r}; choose from {sorted(config.PROFILES)}")
    from data_contracts.errors import DataContractError, DataValidationError
    from flows.training import training_flow

    try:
        result = training_flow(data=data, profile=profile)
    except (DataContractError, DataValidationError) as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1)
    print_tier_table(result["tiers"])
    console.print(f"MLflow run {result['run_id']} (experiment {result['experiment_id']}), store {config.mlflow_tracking_uri()}")
    console.print(f"Open it with `lightpersml ui`, then http://127.0.0.1:5000/#/experiments/"
                  f"{result['experiment_id']}/runs/{result['run_id']}")


@app.command()
def validate(path: Annotated[str, typer.Argument(help='a folder of contract files, or "completejourney"')]) -> None:
    """Validate data against the contract alone; exits 1 on a blocking failure."""
    from datetime import datetime, timezone

    from data_contracts.completejourney import load_source
    from data_contracts.errors import DataContractError, DataValidationError
    from data_contracts.validation import validate_dataset

    try:
        dataset = load_source(path)
        out = config.state_dir() / "reports" / dataset.name / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        with console.status(f"validating {dataset.name}"):
            _, report = validate_dataset(dataset, out, **vars(config.ValidationSettings()))
    except (DataContractError, DataValidationError) as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1)
    console.print(report.summary())
    console.print(f"Report: {report.report_json}\nData Docs: {report.data_docs}\nQuarantine: {report.quarantine_dir}")


def _read_user_ids(path: Path) -> list[str]:
    import pandas as pd

    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path, dtype="string")
    else:  # one id per line
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if "user_id" not in frame.columns:
        raise typer.BadParameter(f"{path}: no user_id column (columns: {list(frame.columns)})")
    from data_contracts.conform import normalise_ids

    return normalise_ids(frame["user_id"]).dropna().tolist()


@app.command()
def recommend(
    model: Annotated[str, typer.Option(help="a tier name of the latest run (e.g. tifu_knn) or an MLflow model URI")],
    users: Annotated[Path, typer.Option(help="CSV/Parquet with a user_id column, or a text file of ids")],
    out: Annotated[Path, typer.Option(help="output .parquet or .csv: user_id, item_id, rank, score")] = Path("recs.parquet"),
    k: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    store: Annotated[Optional[str], typer.Option(help="only items in stock at this store")] = None,
) -> None:
    """Batch top-k export for a list of users."""
    from mlflow.exceptions import MlflowException

    from tasks.registry import load_recommender

    try:
        recommender, uri = load_recommender(model)
    except (LookupError, MlflowException, OSError) as error:
        raise typer.BadParameter(f"cannot load model {model!r}: {error}", param_hint="--model")
    user_ids = _read_user_ids(users)
    try:
        recs = recommender.recommend(user_ids, k, store)
    except KeyError as error:
        raise typer.BadParameter(str(error.args[0]))
    out.parent.mkdir(parents=True, exist_ok=True)
    recs.to_csv(out, index=False) if out.suffix == ".csv" else recs.to_parquet(out, index=False)
    known = sum(u in recommender.user_index for u in set(user_ids))
    console.print(f"{len(recs):,} rows for {len(set(user_ids)):,} users ({known:,} known) from {uri} → {out}")


@app.command()
def ui(port: Annotated[int, typer.Option()] = 5000) -> None:
    """Open the MLflow UI on the project's store at 127.0.0.1 (one worker, no job runner: ~0.5 GB)."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", config.mlflow_tracking_uri(),
               "--default-artifact-root", config.mlflow_artifact_root()]
    console.print(f"MLflow UI on http://127.0.0.1:{port} (store {config.mlflow_tracking_uri()}); Ctrl-C to stop")
    sys.stdout.flush()
    os.execve(sys.executable, command, env)  # the server takes over this process (and its PID)


if __name__ == "__main__":
    app()
