"""Model registry: each tier's ONNX model is a version of its dataset's registered model,
`lightpersml-<dataset>` (DESIGN.md, "Registry and promotion"), so an alias can never point at a
model of another dataset.

The pipeline registers every exported tier (`register_tier`) and moves the alias `candidate` to the
best version of its run that passes the gates (`update_candidate`). A person moves the alias `edge`
with `promote` (or `lightpersml promote`), which refuses a version failing the gates unless forced
with a recorded reason.

Gotchas of MLflow 3.17 handled here (see also STACK.md):
- `search_model_versions` returns versions with an empty `aliases` list; aliases come from
  `get_registered_model(name).aliases` (alias → version) or `get_model_version`.
- `ModelVersion.version` (and the values of `RegisteredModel.aliases`) come back as ints from the
  SQL store although the API takes strings; everything here returns strings.
- `mlflow.onnx.log_model(..., run_id=...)` files the LoggedModel under the active experiment (by
  default "Default", with artifacts in `./mlruns` of the cwd), not the run's: set it first.
- `mlflow.onnx.log_model(..., run_id=...)` logs into an existing (even finished) run without
  resuming it, so the run's status and end time stay as they were.
- Without `pip_requirements`, `log_model` infers them by loading the model in a subprocess (~3 s
  per version on 2 cores); the flavor's pinned defaults (onnx, onnxruntime) are passed instead.
"""

from __future__ import annotations

import getpass
import logging
import math
import os
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlflow.exceptions import MlflowException

import mlflow
from lightpersml.config import REGISTERED_MODEL_PREFIX, Gates

log = logging.getLogger(__name__)

KEY_METRICS = (
    "ndcg_at_10",
    "recall_at_10",
    "recall_repeat_at_10",
    "recall_explore_at_10",
    "latency_p99_ms",
    "peak_memory_mb",
    "model_size_mb",
    "param_count",
)
CANDIDATE = "candidate"
EDGE = "edge"
ONNX_ARTIFACT = "onnx"  # the LoggedModel's name inside the tier's run
PROMOTION_TAGS = (
    "promoted_by",
    "promoted_at",
    "promotion_forced",
    "promotion_reason",
    "promotion_gate_failures",
    "replaced_edge_version",
)


class PromotionRefused(ValueError):
    """The version fails the gates and promotion was not forced (with a reason)."""

    def __init__(self, name: str, version: str, failures: list[str]):
        self.name, self.version, self.failures = name, version, list(failures)
        super().__init__(f"version {version} of {name!r} fails the gates: " + "; ".join(self.failures))


class UnknownVersion(LookupError):
    """No such registered model or version in the store."""


def _client() -> mlflow.MlflowClient:
    return mlflow.MlflowClient()


def _tag_value(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else f"{value:.6g}"  # readable in the UI


def _signature(model):
    """An MLflow signature read from the ONNX graph (dynamic dimensions as -1); None if unsupported."""
    try:
        import numpy as np
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec
        from onnx.helper import tensor_dtype_to_np_dtype

        initializers = {init.name for init in model.graph.initializer}

        def spec(value_info) -> TensorSpec:
            tensor = value_info.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
            return TensorSpec(np.dtype(tensor_dtype_to_np_dtype(tensor.elem_type)), shape, value_info.name)

        inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
        return ModelSignature(inputs=Schema(inputs), outputs=Schema([spec(v) for v in model.graph.output]))
    except Exception as error:  # noqa: BLE001 — a signature is a nicety; the model is logged without it
        log.warning("no signature for the ONNX model: %s", error)
        return None


def register_tier(
    run_id: str, onnx_path: Path, tier: str, metrics: dict[str, float], pipeline_run_id: str, teacher: bool, name: str
) -> str:
    """Log the ONNX model into the existing run `run_id` (as the LoggedModel `onnx`) and register it
    as a new version of `name`.

    Version tags: tier, pipeline_run_id, teacher ("true"/"false"), onnx_size_mb (the file) and every
    KEY_METRICS value present in `metrics` (model_size_mb defaults to the ONNX file's size).
    Returns the version string.
    """
    import onnx

    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path))
    onnx_size_mb = onnx_path.stat().st_size / 2**20
    metrics = {"model_size_mb": onnx_size_mb, **{k: v for k, v in metrics.items() if v is not None}}
    tags = {
        "tier": tier,
        "pipeline_run_id": pipeline_run_id,
        "teacher": "true" if teacher else "false",
        "onnx_size_mb": _tag_value(onnx_size_mb),
        **{k: _tag_value(metrics[k]) for k in KEY_METRICS if k in metrics},
    }
    # Without an active run, log_model files the LoggedModel under the *active* experiment (the
    # Default one, artifacts in ./mlruns of the cwd), not the run's: point it at the run's experiment.
    mlflow.set_experiment(experiment_id=_client().get_run(run_id).info.experiment_id)
    with warnings.catch_warnings():  # the signature read from the graph makes an input example unnecessary
        warnings.filterwarnings("ignore", message=".*[Ii]nput example")
        info = mlflow.onnx.log_model(
            model,
            name=ONNX_ARTIFACT,
            run_id=run_id,
            signature=_signature(model),
            save_as_external_data=False,
            tags=tags,
            # explicit: else MLflow infers them in a subprocess that loads the model (~3 s)
            pip_requirements=mlflow.onnx.get_default_pip_requirements(),
        )
    # Registered through the client: MLflow's fluent registration prints two lines per version.
    client = _client()
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    created = client.create_model_version(name, info.model_uri, run_id=run_id, tags=tags, model_id=info.model_id)
    version = str(created.version)
    log.info("registered tier %s (run %s) as version %s of %s", tier, run_id, version, name)
    return version


def _get_version(name: str, version: str):
    version = str(version).strip()
    client = _client()
    if not version.isdigit():
        raise UnknownVersion(f"{version!r} is not a version number (versions of {name!r} are 1, 2, …)")
    try:
        return client.get_model_version(name, version)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    known = [str(v.version) for v in _versions(name)]
    if not known:
        raise UnknownVersion(
            f"no registered model {name!r} in {mlflow.get_tracking_uri()}; run `lightpersml run` first"
        )
    raise UnknownVersion(f"{name!r} has no version {version} (versions: {', '.join(known)})")


def _versions(name: str, pipeline_run_id: str | None = None, teacher: bool | None = None) -> list:
    """Versions of `name` (optionally of one pipeline run / teachers only), oldest first."""
    filters = [f"name = '{name}'"]
    if pipeline_run_id is not None:
        filters.append(f"tags.pipeline_run_id = '{pipeline_run_id}'")
    if teacher is not None:
        filters.append(f"tags.teacher = '{'true' if teacher else 'false'}'")
    found = _client().search_model_versions(" and ".join(filters), max_results=10_000)
    return sorted(found, key=lambda v: int(v.version))


def version_metrics(version) -> dict[str, float]:
    """KEY_METRICS of a version from its tags, falling back to its run's metrics."""
    metrics = {}
    for key in KEY_METRICS:
        try:
            metrics[key] = float(version.tags[key])
        except (KeyError, ValueError):
            pass
    missing = [k for k in KEY_METRICS if k not in metrics]
    if missing and version.run_id:
        try:
            run_metrics = _client().get_run(version.run_id).data.metrics
        except MlflowException:
            run_metrics = {}
        metrics.update({k: float(run_metrics[k]) for k in missing if k in run_metrics})
    return metrics


def _teacher(name: str, pipeline_run_id: str | None):
    """The newest version tagged teacher=true of that pipeline run, or None."""
    if not pipeline_run_id:
        return None
    teachers = _versions(name, pipeline_run_id, teacher=True)
    return teachers[-1] if teachers else None


_NO_TEACHER = object()


def reference_teacher_run(data_hash: str, name: str) -> str | None:
    """Pipeline run id of the newest teacher version trained on data `data_hash`, or None. Tiers
    trained outside the training pipeline (federated) are gated against that teacher."""
    for version in reversed(_versions(name, teacher=True)):
        if version.run_id and _client().get_run(version.run_id).data.tags.get("data_hash") == data_hash:
            return version.tags.get("pipeline_run_id")
    return None


def tag_federated_version(name: str, version: str, epsilon: float, delta: float, data_hash: str) -> None:
    """The released federated model's own privacy budget, ε at δ (the run's metrics are the
    evaluation fit's), and the training pipeline whose teacher its NDCG gate compares with."""
    client = _client()
    for key, value in (("epsilon", epsilon), ("delta", delta)):
        client.set_model_version_tag(name, version, f"deploy_fit_{key}", str(value))
    teacher_run = reference_teacher_run(data_hash, name)
    if teacher_run:
        client.set_model_version_tag(name, version, "teacher_pipeline_run_id", teacher_run)


def _failures(version, gates: Gates, name: str, teacher=_NO_TEACHER) -> list[str]:
    metrics = version_metrics(version)
    # A federated version names the training pipeline whose teacher it is compared with.
    pipeline_run_id = version.tags.get("teacher_pipeline_run_id") or version.tags.get("pipeline_run_id")
    if teacher is _NO_TEACHER:
        teacher = _teacher(name, pipeline_run_id)
    failures = []
    ndcg = metrics.get("ndcg_at_10")
    if not pipeline_run_id:
        failures.append("no pipeline_run_id tag: cannot find the teacher to compare NDCG@10 with")
    elif teacher is None:
        failures.append(
            f"no teacher version (tag teacher=true) registered for pipeline run {pipeline_run_id}: "
            f"cannot check the NDCG ratio (minimum {gates.min_ndcg_ratio_to_teacher:.0%})"
        )
    elif ndcg is None:
        failures.append("no ndcg_at_10 recorded")
    else:
        teacher_ndcg = version_metrics(teacher).get("ndcg_at_10")
        teacher_label = f"teacher version {teacher.version} ({teacher.tags.get('tier', '?')})"
        if teacher_ndcg is None or not teacher_ndcg > 0:
            failures.append(f"{teacher_label} has no positive ndcg_at_10 ({teacher_ndcg}): cannot check the NDCG ratio")
        else:
            ratio = ndcg / teacher_ndcg
            if not ratio >= gates.min_ndcg_ratio_to_teacher:  # `not >=` also fails NaN
                failures.append(
                    f"NDCG@10 {ndcg:.4f} is {ratio:.1%} of the {teacher_label}'s {teacher_ndcg:.4f}; "
                    f"minimum {gates.min_ndcg_ratio_to_teacher:.0%}"
                )
    for key, limit, label, unit in [
        ("latency_p99_ms", gates.max_latency_p99_ms, "p99 latency", "ms"),
        ("model_size_mb", gates.max_model_size_mb, "model size", "MB"),
    ]:
        value = metrics.get(key)
        if value is None:
            failures.append(f"no {key} recorded (maximum {limit:g} {unit})")
        elif not value <= limit:
            failures.append(f"{label} {value:.3g} {unit} exceeds the maximum {limit:g} {unit}")
    return failures


def gate_failures(version: str, gates: Gates, name: str) -> list[str]:
    """Human-readable reasons the version fails the gates ([] = passes).

    The NDCG ratio is against the version tagged teacher=true with the same pipeline_run_id (none →
    that gate fails with a reason); a missing metric fails its gate. Unknown version → UnknownVersion.
    """
    return _failures(_get_version(name, version), gates, name)


@dataclass(frozen=True)
class GateResult:
    """One version checked against the gates: failures () means it passes."""

    version: str
    tier: str
    ndcg_at_10: float | None
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    def tag(self) -> str:
        """The version's `gate_results` tag."""
        return "passed" if self.passed else "failed: " + "; ".join(self.failures)


@dataclass(frozen=True)
class CandidateChoice:
    """What `update_candidate` decided for one pipeline run of registered model `name`."""

    name: str
    version: str | None  # the version alias `candidate` now points to for this run; None: no version passed
    tier: str | None
    passing: int  # versions of the run that pass the gates
    versions: int  # versions the run registered
    unchanged_alias: str | None  # with version None: where `candidate` still points (an earlier run's), if anywhere
    results: tuple[GateResult, ...] = ()  # every version of the run, as checked
    gates: Gates | None = None

    def markdown(self) -> str:
        """The summary and a table of every version's gate results (parent run's gates.md, Prefect artifact)."""
        lines = [f"**Candidate**: {self.summary()}", ""]
        if self.gates is not None:
            lines += [
                f"Gates: NDCG@10 ≥ {self.gates.min_ndcg_ratio_to_teacher:.0%} of the run's teacher, p99 ≤ "
                f"{self.gates.max_latency_p99_ms:g} ms, model ≤ {self.gates.max_model_size_mb:g} MB",
                "",
            ]
        lines += ["| version | tier | NDCG@10 | gates |", "|---|---|---|---|"]
        for result in self.results:
            ndcg = "–" if result.ndcg_at_10 is None else f"{result.ndcg_at_10:.4f}"
            marker = " ← candidate" if result.version == self.version else ""
            lines.append(f"| {result.version}{marker} | {result.tier} | {ndcg} | {result.tag()} |")
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        if self.version is not None:
            return (
                f"alias candidate → version {self.version} ({self.tier}) of {self.name}: the best of "
                f"{self.passing} of {self.versions} versions passing the gates"
            )
        where = f"still version {self.unchanged_alias}, from an earlier run" if self.unchanged_alias else "not set"
        return (
            f"no version of this run passes the gates ({self.versions} registered): alias candidate of "
            f"{self.name} unchanged ({where})"
        )


def update_candidate(pipeline_run_id: str, gates: Gates, name: str) -> CandidateChoice:
    """Point alias `candidate` at the passing version of that pipeline run with the best ndcg_at_10
    (ties → smaller model_size_mb, then the newer version); no version passing leaves it where it
    was. The outcome is also the pipeline run's tag `candidate` (when that run exists)."""
    versions = _versions(name, pipeline_run_id)
    teacher = _teacher(name, pipeline_run_id) if versions else None
    passing, results = [], []
    for version in versions:
        metrics = version_metrics(version)
        result = GateResult(
            str(version.version),
            version.tags.get("tier", "?"),
            metrics.get("ndcg_at_10"),
            tuple(_failures(version, gates, name, teacher)),
        )
        results.append(result)
        _client().set_model_version_tag(name, str(version.version), "gate_results", result.tag())
        if result.passed:
            passing.append((version, metrics))
        else:
            log.info("version %s (%s) fails the gates: %s", result.version, result.tier, "; ".join(result.failures))
    if passing:
        best, metrics = max(passing, key=lambda p: (p[1]["ndcg_at_10"], -p[1]["model_size_mb"], int(p[0].version)))
        _client().set_registered_model_alias(name, CANDIDATE, str(best.version))
        choice = CandidateChoice(
            name, str(best.version), best.tags.get("tier"), len(passing), len(versions), None, tuple(results), gates
        )
    else:
        try:
            current = _client().get_registered_model(name).aliases.get(CANDIDATE)
        except MlflowException:  # no such registered model yet
            current = None
        choice = CandidateChoice(
            name, None, None, 0, len(versions), None if current is None else str(current), tuple(results), gates
        )
    (log.info if choice.version else log.warning)("%s (gates %s)", choice.summary(), gates)
    try:
        _client().set_tag(pipeline_run_id, "candidate", choice.summary())
        _client().log_text(pipeline_run_id, choice.markdown(), "gates.md")
    except MlflowException:  # not a run of this store (e.g. a pipeline run id that never existed)
        pass
    return choice


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 — no login name in some containers
        return os.environ.get("USER") or "unknown"


def promote(version: str, gates: Gates, force: bool = False, reason: str | None = None, *, name: str) -> list[str]:
    """Point alias `edge` at the version if it passes the gates; returns the failures ([] = passed).

    A failing version raises PromotionRefused unless `force` with a non-empty `reason`. Tags on the
    version record the latest promotion: promoted_by, promoted_at (UTC ISO), promotion_forced, and for
    a forced one promotion_reason and promotion_gate_failures; replaced_edge_version if edge moved.
    """
    if force and not (reason and reason.strip()):
        raise ValueError("a forced promotion needs a non-empty reason")
    model_version = _get_version(name, version)
    version = str(model_version.version)
    failures = _failures(model_version, gates, name)
    if failures and not force:
        raise PromotionRefused(name, version, failures)
    client = _client()
    previous = client.get_registered_model(name).aliases.get(EDGE)
    tags = {
        "promoted_by": _user(),
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "promotion_forced": "true" if failures else "false",
    }
    if failures:
        tags |= {"promotion_reason": reason.strip(), "promotion_gate_failures": "; ".join(failures)}
    if previous is not None and str(previous) != version:
        tags["replaced_edge_version"] = str(previous)
    for key in PROMOTION_TAGS:  # the tags describe this promotion only, not an earlier one
        if key not in tags and key in model_version.tags:
            client.delete_model_version_tag(name, version, key)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, EDGE, version)
    log.info(
        "alias %s → version %s (%s) of %s%s",
        EDGE,
        version,
        model_version.tags.get("tier"),
        name,
        f", FORCED by {tags['promoted_by']}: {reason} (fails: {'; '.join(failures)})" if failures else "",
    )
    return failures


def _iso(timestamp_ms: int | None) -> str | None:
    if timestamp_ms is None:
        return None
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class VersionRow:
    """One registered version as `lightpersml models` lists it. Metrics are KEY_METRICS of its
    evaluation fit on the test split (@10, 0–1; latency in ms; memory and size in MiB), None when
    unrecorded."""

    version: str
    tier: str | None
    aliases: tuple[str, ...]  # the registered model's aliases pointing at it, sorted
    teacher: bool  # tagged teacher=true: the NDCG gate's reference for its pipeline run
    ndcg_at_10: float | None
    recall_at_10: float | None
    recall_repeat_at_10: float | None
    recall_explore_at_10: float | None
    latency_p99_ms: float | None
    peak_memory_mb: float | None
    model_size_mb: float | None
    param_count: int | float | None  # an int, unless recorded as NaN
    pipeline_run_id: str | None
    created: str | None  # UTC, ISO 8601
    run_id: str | None  # the evaluation fit's run


def list_versions(name: str) -> list[VersionRow]:
    """Every version of `name`, oldest first; [] if no such model."""
    client = _client()
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    by_version: dict[str, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for version in _versions(name):
        metrics = version_metrics(version)
        if "param_count" in metrics and not math.isnan(metrics["param_count"]):
            metrics["param_count"] = int(metrics["param_count"])
        rows.append(
            VersionRow(
                version=str(version.version),
                tier=version.tags.get("tier"),
                aliases=tuple(by_version.get(str(version.version), [])),
                teacher=version.tags.get("teacher") == "true",
                **{k: metrics.get(k) for k in KEY_METRICS},
                pipeline_run_id=version.tags.get("pipeline_run_id"),
                created=_iso(version.creation_timestamp),
                run_id=version.run_id,
            )
        )
    return rows


def dataset_models() -> list[str]:
    """The registered models of datasets (`lightpersml-<dataset>`) in the store, sorted."""
    found = _client().search_registered_models(filter_string=f"name LIKE '{REGISTERED_MODEL_PREFIX}%'")
    return sorted(model.name for model in found)


def model_for(dataset: str | None) -> str:
    """The registered model of `dataset`, or with None the only dataset's that has one.
    UnknownVersion (naming the datasets there are) when it is missing or ambiguous."""
    known = dataset_models()
    datasets = ", ".join(name.removeprefix(REGISTERED_MODEL_PREFIX) for name in known) or "none yet"
    if dataset is not None:
        name = f"{REGISTERED_MODEL_PREFIX}{dataset}"
        if name not in known:
            raise UnknownVersion(
                f"no registered model for dataset {dataset!r} (datasets with one: {datasets}); "
                "run `lightpersml run` on it first"
            )
        return name
    if len(known) != 1:
        raise UnknownVersion(
            "no registered model yet: run `lightpersml run` first"
            if not known
            else f"registered models of several datasets ({datasets}): name one with --dataset"
        )
    return known[0]
