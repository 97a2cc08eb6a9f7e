"""`lightpersml`: run the pipeline, validate data, export recommendations, open the MLflow UI.

Heavy libraries are imported inside each command so `--help` stays fast and an edge node
(which has no prefect or mlflow) can still run its own commands.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import click
import typer
from rich.console import Console
from rich.table import Table

from lightpersml import config

config.apply_environment()  # every command: before prefect, mlflow or flwr load

if TYPE_CHECKING:
    from nodes.experiments import ExperimentUpdate
    from nodes.fleet import NodeUpdate
    from tracking.runs import TierRow

app = typer.Typer(help="LightPersML: lightweight personalization for small shops.", no_args_is_help=True)
keys_app = typer.Typer(help="Ed25519 keys that sign edge bundles, and edge nodes' client keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
client_keys_app = typer.Typer(help="Client keys of an edge node (X-API-Key on its /v1 routes).", no_args_is_help=True)
keys_app.add_typer(client_keys_app, name="client")
experiment_app = typer.Typer(
    help="Online experiments on edge nodes: a treatment bundle beside the served one, then a report.",
    no_args_is_help=True,
)
app.add_typer(experiment_app, name="experiment")
console = Console(width=None if sys.stdout.isatty() else 160)


SHORT_NAMES = {
    "ndcg_at_10": "NDCG",
    "ndcg_at_10_seed_std": "± seeds",
    "recall_at_10": "recall",
    "precision_at_10": "prec.",
    "hr_at_10": "HR",
    "recall_repeat_at_10": "rec.repeat",
    "recall_explore_at_10": "rec.explore",
    "coverage_at_10": "coverage",
    "latency_p99_ms": "p99 ms",
    "latency_p99_ratio_to_cloud": "p99/cloud",
    "peak_memory_mb": "mem MB",
    "model_size_mb": "size MB",
    "param_count": "params",
}


def print_tier_table(rows: list[TierRow]) -> None:
    from tracking.runs import tier_table

    table = Table(title="Tiers on the test split, served through the edge engine (metrics @10)")
    frame = tier_table(rows)
    for column in frame.columns:
        table.add_column(SHORT_NAMES.get(column, column), justify="left" if column == "tier" else "right")
    for row in frame.to_dict(orient="records"):
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)


class _RefusalsOffTheConsole(logging.Filter):
    """Prefect logs a refused run's exception (with its traceback, twice) and its final state; the
    command prints the refusal once itself, so the console drops those records (Prefect's own
    run logs keep them)."""

    REFUSALS = ("DataValidationError", "DataContractError")

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (type(error).__name__ in self.REFUSALS or any(name in str(record.msg) for name in self.REFUSALS))


def _quiet_refusals() -> None:
    """Install the filter on Prefect's console handlers (not on its API handler)."""
    import prefect.logging.handlers as handlers

    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        for handler in logger.handlers:
            if isinstance(handler, handlers.PrefectConsoleHandler):
                handler.addFilter(_RefusalsOffTheConsole())


EventTypes = Annotated[
    list[str],
    typer.Option(
        "--event-type",
        help="TYPE=CONTRACT_TYPE: what a type of yours means (purchase, view or add_to_cart), "
        "e.g. rating=purchase; repeat for several. Training learns from purchases.",
    ),
]
MaxBadShare = Annotated[
    float,
    typer.Option(
        min=0.0, max=1.0, help="per row-level check, the share of a table's rows quarantined before the data is refused"
    ),
]


def _event_types(pairs: list[str]) -> dict[str, str]:
    from data_contracts import schema

    mapping = {}
    for pair in pairs:
        name, _, contract = pair.partition("=")
        if not name.strip() or contract.strip() not in schema.EVENT_TYPES:
            raise typer.BadParameter(
                f"{pair!r}: expected TYPE=one of {', '.join(schema.EVENT_TYPES)}", param_hint="--event-type"
            )
        mapping[name.strip()] = contract.strip()
    return mapping


@app.command()
def run(
    data: Annotated[
        str,
        typer.Option(
            help='"completejourney", "movielens-100k" or "movielens-1m" (bundled) or a folder of contract files'
        ),
    ] = "completejourney",
    profile: Annotated[str, typer.Option(help="quick (minutes) or full (nightly)")] = "quick",
    event_type: EventTypes = [],
    max_bad_share: MaxBadShare = 0.01,
    holdout_order: Annotated[
        str,
        typer.Option(
            click_type=click.Choice(config.HOLDOUT_ORDERS),
            help="data where nobody rebuys: hold out each shopper's newest purchases (time), or random ones "
            "(ratings, and to compare with random splits)",
        ),
    ] = "time",
    discovery_candidates: Annotated[
        int,
        typer.Option(
            min=0,
            max=1000,
            help="grocery: EASE's best new items per shopper among the candidates, for nodes serving "
            "--discovery-slots (costs some NDCG at 0 slots; benchmarks/results/backtest-quick-discovery-20.md)",
        ),
    ] = 0,
) -> None:
    """Run the training pipeline: validate, build features, fit and evaluate every tier, log to MLflow."""
    if profile not in config.PROFILES:
        raise typer.BadParameter(f"unknown profile {profile!r}; choose from {sorted(config.PROFILES)}")
    from data_contracts.errors import DataContractError, DataValidationError
    from flows.train import training_flow

    mapping = _event_types(event_type)
    _quiet_refusals()
    try:
        result = training_flow(
            data=data,
            profile=profile,
            event_types=mapping,
            max_bad_share=max_bad_share,
            holdout_order=holdout_order,
            discovery_candidates=discovery_candidates,
        )
    except (DataContractError, DataValidationError) as error:
        console.print(str(error), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    print_tier_table(result.tiers)
    candidate = result.candidate
    console.print(f"Candidate: {candidate.summary()}", style=None if candidate.version else "yellow")
    console.print(
        f"MLflow run {result.run_id} (experiment {result.experiment_id}), store {config.mlflow_tracking_uri()}"
    )
    from tracking.runs import run_url

    console.print(f"Open it with `lightpersml ui`, then {run_url(result.experiment_id, result.run_id)}")


@app.command()
def validate(
    path: Annotated[
        str, typer.Argument(help='a folder of contract files, "completejourney", "movielens-100k" or "movielens-1m"')
    ],
    profile: Annotated[str, typer.Option(help="whose evaluation protocol the data must fit")] = "quick",
    event_type: EventTypes = [],
    max_bad_share: MaxBadShare = 0.01,
) -> None:
    """Validate data against the contract and the run's protocol, as `run` does; exits 1 on a blocking failure."""
    if profile not in config.PROFILES:
        raise typer.BadParameter(f"unknown profile {profile!r}; choose from {sorted(config.PROFILES)}")
    from datetime import datetime

    from data_contracts.errors import DataContractError, DataValidationError
    from data_contracts.sources import load_source
    from data_contracts.validation import validate_dataset

    try:
        dataset = load_source(path, config.downloads_dir())
        out = config.state_dir() / "reports" / dataset.name / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        with console.status(f"validating {dataset.name}"):
            settings = config.ValidationSettings(
                event_types=tuple(_event_types(event_type).items()), max_bad_share=max_bad_share
            )
            _, report = validate_dataset(
                dataset, out, **vars(settings), protocol=config.protocol(config.PROFILES[profile])
            )
    except (DataContractError, DataValidationError) as error:
        console.print(str(error), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    console.print(report.summary(), markup=False, highlight=False)
    console.print(f"Report: {report.report_json}\nData Docs: {report.data_docs}\nQuarantine: {report.quarantine_dir}")


@app.command()
def recommend(
    model: Annotated[
        str,
        typer.Option(
            help="models:/NAME@ALIAS or models:/NAME/VERSION (a registered version: what "
            "a node would serve), a bundle folder, or a tier name / runs:/ID/model "
            "(a tier's evaluation fit)"
        ),
    ],
    requests: Annotated[
        Path, typer.Option(help="CSV/Parquet with user_id and optional store_id, timestamp; or a text file of user ids")
    ],
    out: Annotated[
        Path, typer.Option(help="output .parquet or .csv: the request's columns, item_id, rank, score, reason")
    ] = Path("recs.parquet"),
    k: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    store: Annotated[
        Optional[str], typer.Option(help="store of the rows that name none (default: no stock filter)")
    ] = None,
    public_key: Annotated[Optional[Path], typer.Option(help="key a bundle folder must verify with")] = None,
) -> None:
    """Batch top-k export: each request answered by the node's engine from the model's signed bundle."""
    import tempfile

    from edge.bundle import BundleError
    from evaluation.served import signing_keys
    from tracking.batch import BadRequests, answer_requests, open_model, read_requests

    try:
        frame = read_requests(requests, store)
    except (BadRequests, OSError) as error:
        raise typer.BadParameter(str(error), param_hint="--requests") from None
    private, public = signing_keys()
    with tempfile.TemporaryDirectory(dir=config.state_dir()) as tmp:
        try:
            opened = open_model(model, Path(tmp), private, public_key or public)
        except (LookupError, BundleError, OSError) as error:
            raise typer.BadParameter(f"cannot open {model!r}: {error}", param_hint="--model") from None
        answers = answer_requests(opened.engine, frame, k)
    out.parent.mkdir(parents=True, exist_ok=True)
    answers.to_csv(out, index=False) if out.suffix == ".csv" else answers.to_parquet(out, index=False)
    users = set(frame["user_id"])
    known = sum(u in opened.engine.user_index for u in users)
    console.print(
        f"{len(answers):,} rows for {len(frame):,} requests ({len(users):,} shoppers, {known:,} known) "
        f"from {opened.source} → {out}"
    )
    stores = frame["store_id"].dropna()
    unknown = int((~stores.isin(list(opened.engine.store_index))).sum())
    if unknown:
        console.print(
            f"[yellow]{unknown:,} requests at a store the bundle does not know: answered with global "
            "popularity and no stock filter, as a node answers them[/yellow]"
        )


@app.command()
def ui(port: Annotated[int, typer.Option()] = 5000) -> None:
    """Open the MLflow UI on the project's store at 127.0.0.1 (one worker, no job runner: ~0.5 GB)."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        config.mlflow_tracking_uri(),
        "--default-artifact-root",
        config.mlflow_artifact_root(),
    ]
    console.print(f"MLflow UI on http://127.0.0.1:{port} (store {config.mlflow_tracking_uri()}); Ctrl-C to stop")
    sys.stdout.flush()
    os.execve(sys.executable, command, env)  # the server takes over this process (and its PID)


def _gates(min_ndcg_ratio: float | None, max_p99_ms: float | None, max_size_mb: float | None) -> config.Gates:
    """`config.Gates()` with the thresholds given on the command line."""
    overrides = {
        "min_ndcg_ratio_to_teacher": min_ndcg_ratio,
        "max_latency_p99_ms": max_p99_ms,
        "max_model_size_mb": max_size_mb,
    }
    return config.Gates(**{k: v for k, v in overrides.items() if v is not None})


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


DatasetOption = Annotated[
    Optional[str],
    typer.Option(
        "--dataset", help="the dataset whose registered model (lightpersml-DATASET) is meant; default: the only one"
    ),
]


def _model_for(dataset: Optional[str]) -> str:
    """The dataset's registered model, or a usage error naming the datasets there are."""
    from tracking.registry import UnknownVersion, model_for

    try:
        return model_for(dataset)
    except UnknownVersion as error:
        message = f"{error} (store {config.mlflow_tracking_uri()})"
        if dataset is not None:
            raise typer.BadParameter(message, param_hint="--dataset") from None
        console.print(message, style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None


@app.command()
def models(dataset: DatasetOption = None) -> None:
    """List the versions of a dataset's registered model with their tier, aliases and key metrics."""
    from tracking.registry import list_versions

    name = _model_for(dataset)
    rows = list_versions(name)
    table = Table(title=f"Registered model {name} (metrics @10 on the test split)")
    for column in ("version", "tier", "aliases", "NDCG", "rec.explore", "p99 ms", "size MB", "params", "created"):
        table.add_column(column, justify="left" if column in ("tier", "aliases", "created") else "right")
    for row in rows:
        table.add_row(
            row.version,
            (row.tier or "?") + (" (teacher)" if row.teacher else ""),
            ", ".join(row.aliases),
            _fmt(row.ndcg_at_10, ".4f"),
            _fmt(row.recall_explore_at_10, ".4f"),
            _fmt(row.latency_p99_ms, ".3g"),
            _fmt(row.model_size_mb, ".3g"),
            _fmt(row.param_count, ","),
            row.created or "",
        )
    console.print(table)
    also = f" --dataset {dataset}" if dataset else ""
    console.print(f"Promote one to the edge alias with `lightpersml promote VERSION{also}`.")


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="the model version to point alias `edge` at")],
    force: Annotated[bool, typer.Option("--force", help="promote even if the gates fail (needs --reason)")] = False,
    reason: Annotated[Optional[str], typer.Option(help="why a failing version is promoted anyway (recorded)")] = None,
    dataset: DatasetOption = None,
    min_ndcg_ratio: Annotated[
        Optional[float], typer.Option(help="override the gate: minimum NDCG@10 / teacher's")
    ] = None,
    max_p99_ms: Annotated[Optional[float], typer.Option(help="override the gate: maximum p99 latency (ms)")] = None,
    max_size_mb: Annotated[Optional[float], typer.Option(help="override the gate: maximum model size (MB)")] = None,
) -> None:
    """Point alias `edge` at VERSION after checking the gates; a failing version needs --force --reason."""
    if force and not (reason and reason.strip()):
        raise typer.BadParameter("--force needs --reason TEXT (recorded on the version)", param_hint="--reason")
    from tracking.registry import PromotionRefused, UnknownVersion
    from tracking.registry import promote as promote_version

    gates = _gates(min_ndcg_ratio, max_p99_ms, max_size_mb)
    name = _model_for(dataset)
    try:
        failures = promote_version(version, gates, force=force, reason=reason, name=name)
    except UnknownVersion as error:
        raise typer.BadParameter(str(error), param_hint="VERSION") from None
    except PromotionRefused as error:
        console.print(f"Refused: version {error.version} of {name} fails the gates ({gates}):")
        for failure in error.failures:
            console.print(f"  [red]✗ {failure}[/red]")
        also = f" --dataset {dataset}" if dataset else ""
        console.print(
            "Alias `edge` is unchanged. To promote it anyway: "
            f'`lightpersml promote {error.version}{also} --force --reason "why"`.'
        )
        raise typer.Exit(1) from None
    from tracking.registry import list_versions

    row = next(r for r in list_versions(name) if r.version == str(int(version)))
    console.print(f"Alias `edge` of {name} now points to version {row.version} (tier {row.tier}).")
    if failures:
        console.print(f"[yellow]Forced past {len(failures)} gate failure(s), recorded with the reason:[/yellow]")
        for failure in failures:
            console.print(f"  [yellow]! {failure}[/yellow]")


def _run_or_exit(step, **parameters):
    """Run a flow or step; a bad nodes file or a missing registry version ends the command with exit 1."""
    try:
        return step(**parameters)
    except (ValueError, LookupError, FileNotFoundError) as error:
        console.print(str(error), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None


@keys_app.command("init")
def keys_init(
    folder: Annotated[
        Optional[Path], typer.Option(help="where the key pair goes (default $LIGHTPERSML_KEYS or .lightpersml/keys)")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace an existing pair (old bundles stop verifying)")
    ] = False,
) -> None:
    """Create the bundle signing key pair: the private key signs bundles here, the public key goes to every node."""
    from edge.bundle import init_keys

    folder = folder or config.keys_dir()
    try:
        private, public = init_keys(folder, overwrite)
    except FileExistsError as error:
        console.print(f"[red]{error}[/red] (use --overwrite to replace it)")
        raise typer.Exit(1) from None
    console.print(f"Private key (keep it here, mode 600): {private}\nPublic key (copy it to every node): {public}")


@app.command()
def bundle(
    out: Annotated[Path, typer.Option(help="folder to write the bundle into")] = Path("bundle"),
    alias: Annotated[str, typer.Option(help="registry alias whose version is bundled")] = "edge",
    version: Annotated[Optional[str], typer.Option(help="bundle this version instead of the alias's")] = None,
    key: Annotated[Optional[Path], typer.Option(help="private signing key")] = None,
    dataset: DatasetOption = None,
) -> None:
    """Build and sign the edge bundle of the version behind alias `edge` (or of --version)."""
    from edge.bundle import PRIVATE_KEY
    from tracking.bundles import registry_bundle

    key = key or config.keys_dir() / PRIVATE_KEY
    if not key.exists():
        raise typer.BadParameter(
            f"no signing key at {key}; create one with `lightpersml keys init`", param_hint="--key"
        )
    manifest = _run_or_exit(
        registry_bundle, folder=out, key_path=key, name=_model_for(dataset), alias=alias, version=version
    )
    console.print(f"Bundle of version {manifest['model_version']} ({manifest['tier']}) signed in {out}")


def _node_dir(node_dir: Optional[Path]) -> Path:
    return node_dir or config.state_dir() / "edge-node"


NodeDir = Annotated[
    Optional[Path],
    typer.Option(help="the node's state: bundles, event log, client keys (default .lightpersml/edge-node)"),
]


@client_keys_app.command("add")
def client_key_add(
    name: Annotated[str, typer.Argument(help="who uses it, e.g. web-shop or pos-app")],
    scope: Annotated[list[str], typer.Option(help="recommend and/or events (repeat the option)")] = [
        "recommend",
        "events",
    ],
    rate: Annotated[str, typer.Option(help="requests allowed, e.g. 1000/second or 50/minute")] = "1000/second",
    node_dir: NodeDir = None,
) -> None:
    """Make a client key; it is printed once (the node keeps only its hash). A running node picks it up."""
    from edge.clients import ClientKeyError, ClientKeys

    try:
        key, secret = ClientKeys(_node_dir(node_dir)).add(name, tuple(scope), rate)
    except ClientKeyError as error:
        raise typer.BadParameter(str(error)) from None
    console.print(
        f"Client key {key.name!r} ({key.key_id}; {', '.join(key.scopes)}; {key.rate}). "
        "Send it as the X-API-Key header; it is not shown again:"
    )
    print(secret)


@client_keys_app.command("list")
def client_key_list(node_dir: NodeDir = None) -> None:
    """The node's client keys (names, ids, scopes, rates; never the keys themselves)."""
    from edge.clients import ClientKeys

    table = Table(title=f"Client keys of {_node_dir(node_dir)}")
    for column in ("name", "id", "scopes", "rate", "created"):
        table.add_column(column)
    for key in ClientKeys(_node_dir(node_dir)).list():
        table.add_row(key.name, key.key_id, ", ".join(key.scopes), key.rate, key.created_at)
    console.print(table)


@client_keys_app.command("revoke")
def client_key_revoke(
    name: Annotated[str, typer.Argument(help="the key's name or id")], node_dir: NodeDir = None
) -> None:
    """Revoke a client key; a running node refuses it within a second."""
    from edge.clients import ClientKeyError, ClientKeys

    try:
        key = ClientKeys(_node_dir(node_dir)).revoke(name)
    except ClientKeyError as error:
        raise typer.BadParameter(str(error)) from None
    console.print(f"Revoked {key.name!r} ({key.key_id}).")


@app.command()
def serve(
    bundle: Annotated[
        Optional[Path], typer.Option(help="a bundle folder to install and serve (default: the node's active one)")
    ] = None,
    port: Annotated[int, typer.Option()] = 8000,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    node_dir: NodeDir = None,
    public_key: Annotated[
        Optional[Path], typer.Option(help="verifies bundles (default: the keys folder's public key)")
    ] = None,
    admin_token_file: Annotated[
        Optional[Path],
        typer.Option(help="file with the /admin bearer token (or set LIGHTPERSML_ADMIN_TOKEN; none: /admin is closed)"),
    ] = None,
    open_node: Annotated[
        bool,
        typer.Option(
            "--open",
            help="serve /v1 without client keys (only behind the shop's own "
            "gateway); answers then never word reasons with a shopper's "
            "purchases",
        ),
    ] = False,
    reasons: Annotated[
        Optional[str],
        typer.Option(
            help="personal (may mention the shopper's purchases and cart) or "
            "generic (default: personal with keys, generic when --open)"
        ),
    ] = None,
    max_shoppers: Annotated[
        int,
        typer.Option(
            min=100,
            help="shoppers whose live state is kept in memory (the rest are read back from the event log): about "
            "15 KB each once they have bought since the bundle, 5 KB otherwise",
        ),
    ] = 20_000,
    read_timeout: Annotated[
        float,
        typer.Option(
            min=0.1, help="seconds a client has to send a request's headers, and again its body (bundle uploads: 600)"
        ),
    ] = 10.0,
    port_file: Annotated[
        Optional[Path],
        typer.Option(
            help="write the port listened on here once bound (with --port 0: a free port chosen by the system)"
        ),
    ] = None,
    runtime: Annotated[
        str,
        typer.Option(help="onnx (nodes) or native (the cloud reference: LightGBM; needs the bundle's model.lgb.txt)"),
    ] = "onnx",
    discovery_slots: Annotated[
        int,
        typer.Option(min=0, max=100, help="ranked slots of each answer kept for items new to the shopper"),
    ] = 0,
    log_exposures: Annotated[
        bool,
        typer.Option(
            help="log every answer (exposures.db), not only experiments': the monitoring flow's scores and hit rate"
        ),
    ] = False,
) -> None:
    """Run an edge node: recommendations, events, health and metrics over HTTP."""
    import socket

    import uvicorn

    from edge.bundle import PUBLIC_KEY, BundleError, load_public_key
    from edge.clients import ClientKeyError, ClientKeys
    from edge.node import Node
    from edge.protocol import HeaderDeadlineProtocol
    from edge.server import create_app

    if reasons not in (None, "personal", "generic"):
        raise typer.BadParameter("personal or generic", param_hint="--reasons")
    public_key = public_key or config.keys_dir() / PUBLIC_KEY
    if not public_key.exists():
        raise typer.BadParameter(f"no public key at {public_key}", param_hint="--public-key")
    token = admin_token_file.read_text().strip() if admin_token_file else os.environ.get("LIGHTPERSML_ADMIN_TOKEN")
    folder = _node_dir(node_dir)
    try:
        keys = ClientKeys(folder)
    except ClientKeyError as error:
        console.print(str(error), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    personal = (reasons or ("generic" if open_node else "personal")) == "personal"
    node = Node(
        folder,
        load_public_key(public_key),
        runtime,
        personal_reasons=personal,
        max_shoppers=max_shoppers,
        discovery_slots=discovery_slots,
        log_exposures=log_exposures,
    )
    try:
        passed_over = node.start(bundle)
    except BundleError as error:
        console.print(f"[red]bundle refused: {error}[/red]")
        raise typer.Exit(1) from None
    for problem in passed_over:
        console.print(f"[red]not serving a stored bundle: {problem}[/red]")
    if node.engine is None:
        console.print("[yellow]No bundle yet: /readyz answers 503 until one is uploaded to /admin/bundle.[/yellow]")
    if open_node:
        logging.getLogger("lightpersml.edge").warning(
            "open node: /v1 routes answer anyone (reasons: %s)", "personal" if personal else "generic"
        )
        console.print(
            f"[yellow]Open node: /v1 needs no client key; reasons are {'personal' if personal else 'generic'}. "
            "Put it behind a gateway that authenticates callers.[/yellow]"
        )
    elif not keys:
        console.print(
            f"[yellow]No client keys in {keys.path}: /v1 routes answer 401 until one is added with "
            f"`lightpersml keys client add NAME --node-dir {folder}` (or start with --open behind a gateway)."
            "[/yellow]"
        )
    if not token:
        console.print(
            "[yellow]No admin token: /admin is closed (set LIGHTPERSML_ADMIN_TOKEN or --admin-token-file).[/yellow]"
        )
    HeaderDeadlineProtocol.header_timeout = read_timeout
    listening = socket.create_server((host, port), backlog=2048)  # bound here, so --port 0 can be reported
    if port_file:  # replaced whole, so a reader never sees half a number
        port_file.with_suffix(".tmp").write_text(str(listening.getsockname()[1]))
        os.replace(port_file.with_suffix(".tmp"), port_file)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(node, token, keys, open_node, body_timeout=read_timeout),
            log_level="warning",
            access_log=False,
            http=HeaderDeadlineProtocol,
        )
    )
    server.run(sockets=[listening])


def _print_node_report(rows: list[NodeUpdate], title: str) -> None:
    table = Table(title=title)
    for column in ("node", "status", "version_before", "version_after", "detail"):
        table.add_column(column.replace("_", " "))
    for row in rows:
        colour = "green" if row.status == "updated" else "red"
        table.add_row(
            row.node,
            f"[{colour}]{row.status}[/{colour}]",
            str(row.version_before),
            str(row.version_after),
            row.detail,
        )
    console.print(table)
    if any(row.status != "updated" for row in rows):
        raise typer.Exit(1)


@app.command()
def deploy(
    nodes: Annotated[Path, typer.Option(help="TOML file of [[nodes]] with name, url, token or token_env")],
    alias: Annotated[str, typer.Option(help="registry alias whose version is deployed")] = "edge",
    key: Annotated[Optional[Path], typer.Option(help="private signing key (default: the keys folder's)")] = None,
    dataset: DatasetOption = None,
) -> None:
    """Bundle the version behind alias `edge`, push it to every node, report per node (exit 1 if any failed)."""
    from flows.deploy import deploy_flow

    _print_node_report(
        _run_or_exit(deploy_flow, nodes_file=str(nodes), dataset=dataset, alias=alias, key=str(key) if key else None),
        f"Deploy of alias {alias}",
    )


@app.command()
def rollback(nodes: Annotated[Path, typer.Option(help="TOML nodes file (as for deploy)")]) -> None:
    """Every node serves its previous bundle again (exit 1 if any node failed)."""
    from flows.deploy import rollback_flow

    _print_node_report(_run_or_exit(rollback_flow, nodes_file=str(nodes)), "Rollback")


@app.command()
def stock(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet with store_id, item_id, in_stock (true/false)")],
    nodes: Annotated[Path, typer.Option(help="TOML nodes file (as for deploy)")],
) -> None:
    """Mark items in or out of stock on every node now, between bundles (exit 1 if any node failed)."""
    from nodes.fleet import read_nodes
    from nodes.stock import push_stock, read_stock_file

    try:
        changes, targets = read_stock_file(file), read_nodes(nodes)
    except (OSError, ValueError) as error:
        console.print(str(error), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    rows = [push_stock(node, changes) for node in targets]
    for row in rows:
        console.print(
            f"{row.node}: {row.status}, {row.applied:,} applied, {row.ignored:,} unknown to its bundle {row.detail}".rstrip(),
            markup=False,
        )
    if any(row.status != "updated" for row in rows):
        raise typer.Exit(1)


@app.command()
def collect(
    nodes: Annotated[Path, typer.Option(help="TOML nodes file (as for deploy)")],
    data: Annotated[str, typer.Option(help="the dataset whose training data receives the events")] = "completejourney",
) -> None:
    """Pull new shopper events from every node into the training data (exactly once, restartable)."""
    from flows.collect import collect_flow

    rows = _run_or_exit(collect_flow, nodes_file=str(nodes), data=data)
    for row in rows:
        console.print(
            f"{row.node}: {row.status}, {row.pulled:,} pulled, {row.appended:,} appended, "
            f"{row.quarantined:,} quarantined {row.detail}".rstrip(),
            markup=False,
        )
    if any(row.status != "collected" for row in rows):
        raise typer.Exit(1)


@app.command()
def federate(
    data: Annotated[
        str,
        typer.Option(
            help='"completejourney", "movielens-100k" or "movielens-1m" (bundled) or a folder of contract files'
        ),
    ] = "completejourney",
    nodes: Annotated[int, typer.Option(min=2, help="store groups, one federated node each")] = 8,
    rounds: Annotated[int, typer.Option(min=1, help="server rounds (fewer if the privacy budget ends first)")] = 10,
    target_epsilon: Annotated[float, typer.Option(help="stop before a round would pass this ε (δ = 1/shoppers)")] = 8.0,
    aggregation: Annotated[str, typer.Option(help="fedavg, fedtrimmedavg, fedmedian or krum")] = "fedavg",
    noise_multiplier: Annotated[float, typer.Option(min=0.0, help="DP-SGD noise; 0 trains without DP")] = 2.0,
    refit: Annotated[bool, typer.Option(help="refit on all data and register the federated tier")] = True,
) -> None:
    """Train the federated tier across store groups (Flower, DP-SGD, robust aggregation), log it beside the
    other tiers and register it."""
    from federated.server_app import STRATEGIES

    if aggregation not in STRATEGIES:
        raise typer.BadParameter(f"unknown aggregation {aggregation!r}; choose from {sorted(STRATEGIES)}")
    from data_contracts.errors import DataContractError, DataValidationError
    from flows.federate import federated_flow

    try:
        result = federated_flow(
            data=data,
            nodes=nodes,
            rounds=rounds,
            target_epsilon=target_epsilon,
            aggregation=aggregation,
            noise_multiplier=noise_multiplier,
            refit=refit,
        )
    except (DataContractError, DataValidationError, ValueError, RuntimeError) as error:
        console.print(str(error), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    print_tier_table([result.tier])
    summary = result.evaluation_summary
    console.print(
        f"{summary.rounds_trained} rounds, ε = {summary.epsilon:.2f} at δ = {summary.delta:.2g}"
        + (f"; registered as version {result.version}" if result.version else "")
    )
    console.print(f"MLflow run {result.run_id} (experiment {result.experiment_id})")


NodesOption = Annotated[Path, typer.Option(help="TOML nodes file (as for deploy)")]


def _print_experiment_rows(rows: list[ExperimentUpdate], title: str, ok: tuple[str, ...]) -> None:
    table = Table(title=title)
    for column in ("node", "status", "experiment", "share", "exposures (control / treatment)", "detail"):
        table.add_column(column)
    for row in rows:
        colour = "green" if row.status in ok else "red"
        table.add_row(
            row.node,
            f"[{colour}]{row.status}[/{colour}]",
            row.experiment or "",
            f"{row.treatment_share:.0%}" if row.treatment_share is not None else "",
            f"{row.exposures_control:,} / {row.exposures_treatment:,}",
            row.detail,
        )
    console.print(table)
    if any(row.status not in ok for row in rows):
        raise typer.Exit(1)


@app.command()
def monitor(
    nodes: NodesOption,
    data: Annotated[str, typer.Option(help="the dataset the served model was trained on")] = "completejourney",
) -> None:
    """Collect the nodes' events, compare the latest week with the training data; exit 1 on a breach (retrain)."""
    from flows.monitor import monitoring_flow
    from monitoring.checks import MonitoringBreach, markdown

    try:
        report = _run_or_exit(monitoring_flow, nodes_file=str(nodes), data=data)
    except MonitoringBreach as breach:
        console.print(str(breach), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    console.print(markdown(report), markup=False, highlight=False)


@experiment_app.command("start")
def experiment_start(
    name: Annotated[str, typer.Argument(help="a new name for the experiment (the same on every node)")],
    nodes: NodesOption,
    alias: Annotated[str, typer.Option(help="registry alias of the treatment's version")] = "candidate",
    share: Annotated[float, typer.Option(min=0.01, max=0.99, help="share of shoppers in the treatment")] = 0.5,
    window_hours: Annotated[
        float, typer.Option(min=0.01, max=720, help="a shown item's click, cart or purchase within it counts")
    ] = 24.0,
    key: Annotated[Optional[Path], typer.Option(help="private signing key (default: the keys folder's)")] = None,
    dataset: DatasetOption = None,
) -> None:
    """Serve the version behind `alias` to a share of shoppers beside what every node serves (exit 1 if any failed)."""
    from flows.deploy import deploy_flow

    rows = _run_or_exit(
        deploy_flow,
        nodes_file=str(nodes),
        dataset=dataset,
        alias=alias,
        key=str(key) if key else None,
        experiment=name,
        treatment_share=share,
        window_hours=window_hours,
    )
    _print_experiment_rows(rows, f"Experiment {name}: alias {alias} as treatment", ok=("running",))


@experiment_app.command("status")
def experiment_status(nodes: NodesOption) -> None:
    """The experiment each node runs (or ran last) and its exposures per arm."""
    from nodes.experiments import experiment_status as status
    from nodes.fleet import read_nodes

    rows = [status(node) for node in _run_or_exit(read_nodes, path=nodes)]
    _print_experiment_rows(rows, "Experiments", ok=("running", "stopped", "none"))


@experiment_app.command("stop")
def experiment_stop(
    nodes: NodesOption,
    promote: Annotated[bool, typer.Option(help="serve the treatment to everyone afterwards")] = False,
    reason: Annotated[str, typer.Option(help="why (kept with the experiment)")] = "stopped by hand",
) -> None:
    """Stop the running experiment on every node: shoppers get the control again (or the treatment, --promote)."""
    from nodes.experiments import stop_experiment
    from nodes.fleet import read_nodes

    rows = [stop_experiment(node, reason, promote) for node in _run_or_exit(read_nodes, path=nodes)]
    _print_experiment_rows(rows, "Experiment stopped", ok=("stopped",))


@experiment_app.command("report")
def experiment_report(
    name: Annotated[str, typer.Argument(help="the experiment's name")],
    nodes: NodesOption,
    data: Annotated[str, typer.Option(help="the dataset whose training data receives the events")] = "completejourney",
    guardrail: Annotated[bool, typer.Option(help="stop the treatment on every node if it is clearly worse")] = True,
) -> None:
    """Collect exposures and events from every node, compare the arms, log the report to MLflow."""
    from experiments.analysis import markdown
    from flows.experiment_report import experiment_report_flow

    report = _run_or_exit(
        experiment_report_flow, nodes_file=str(nodes), experiment=name, data=data, enforce_guardrail=guardrail
    )
    console.print(markdown(report), markup=False, highlight=False)


if __name__ == "__main__":
    app()
