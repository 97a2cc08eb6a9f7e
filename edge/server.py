"""The edge node's HTTP API (FastAPI on uvicorn). Run it with `lightpersml serve`.

    GET  /v1/recommendations  top-k for a shopper in a store, each item with a score and a reason
    POST /v1/events           view / add_to_cart / purchase, one or a batch: logged durably, then applied
    GET  /healthz, /readyz    liveness; readiness with the bundle's model version
    GET  /metrics             Prometheus: requests, latency, errors, model version, bundle age
    POST /admin/bundle        upload a signed bundle (.tar.gz); verified, warmed, swapped in
    POST /admin/rollback      serve the previous bundle again
    PUT  /admin/stock         mark items of stores in or out of stock between bundles (edge.stock)
    GET  /admin/events        the event log after a cursor (for flows/collect.py)
    GET  /admin/experiment    the running experiment, its exposures per arm, the ones before
    POST /admin/experiment    start one: an installed bundle (`/admin/bundle?activate=false`) as treatment
    POST /admin/experiment/stop   stop it: everyone gets the control again, or the treatment (promote)
    GET  /admin/exposures     the exposure log after a cursor (for the experiment report)

Who may call what (`Guard`): /admin needs `Authorization: Bearer <admin token>`; the /v1 routes
need `X-API-Key: <client key>` with the route's scope (`edge.clients`), and each key has its own
rate. A node started `open` serves /v1 without keys (it sits behind the shop's own gateway); its
answers then never mention a shopper's purchases or cart, nor whether it knows the shopper.
Health, readiness, metrics and the schema need nothing.

Every input is bounded before work is done (`edge.inputs`): bodies by Content-Length and while
they stream, and in time; ids by length and characters; event times by a window.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from data_contracts.schema import EVENT_TYPES
from edge.bundle import BundleError
from edge.clients import ClientKeys, RateLimits
from edge.engine import Engine, Event
from edge.experiment import MAX_WINDOW_S, SERVED, Experiment, ExperimentError, Exposure
from edge.inputs import (
    ID_PATTERN,
    MAX_BATCH,
    MAX_EVENTS_BODY,
    MAX_EXCLUDE,
    MAX_ID,
    MAX_K,
    MAX_RECENT,
    MAX_SMALL_BODY,
    MAX_TIME,
    MAX_VALUE,
    Problem,
    RecommendationQuery,
    TimeWindow,
    parse_recommendation_query,
)
from edge.node import MAX_UPLOAD_BYTES, Node, Serving
from edge.stock import MAX_STOCK_CHANGES

log = logging.getLogger(__name__)

UPLOAD_TIMEOUT_S = 600.0
Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN)]
After = Annotated[int, Query(ge=0, le=2**63 - 1, description="the last seq already taken")]  # a log's cursor
Limit = Annotated[int, Query(ge=1, le=10_000)]
ROUTES = (
    "/v1/recommendations",
    "/v1/events",
    "/healthz",
    "/readyz",
    "/metrics",
    "/admin/bundle",
    "/admin/rollback",
    "/admin/stock",
    "/admin/events",
    "/admin/experiment",
    "/admin/experiment/stop",
    "/admin/exposures",
)
SCOPE_OF = {("GET", "/v1/recommendations"): "recommend", ("POST", "/v1/events"): "events"}
BODY_LIMIT = {"/v1/events": MAX_EVENTS_BODY, "/admin/bundle": MAX_UPLOAD_BYTES, "/admin/stock": 16 * 2**20}


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id
    item_id: Id
    event_type: Literal[EVENT_TYPES]  # the data contract's event types
    timestamp: datetime | None = Field(
        None,
        description="when it happened (ISO 8601; no zone: UTC); default: when "
        "received. From a day before the node's data to 10 minutes "
        "ahead of its clock",
    )
    store_id: Id | None = None
    basket_id: Id | None = Field(None, description="purchases with the same basket_id form one basket")
    event_id: Id | None = Field(None, description="client id of the event: a retried POST is not counted twice")
    value: float | None = Field(
        None, ge=0, le=MAX_VALUE, allow_inf_nan=False, description="what a purchase was worth (the shop's currency)"
    )


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class EventsAccepted(BaseModel):
    accepted: int = Field(description="events in the request, all durably logged")
    new: int = Field(description="events not logged before (by event_id)")


class StockChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store_id: Id
    item_id: Id
    in_stock: bool


class StockPush(BaseModel):
    model_config = ConfigDict(extra="forbid")

    changes: list[StockChange] = Field(min_length=1, max_length=MAX_STOCK_CHANGES)


class StockAccepted(BaseModel):
    applied: int = Field(description="(store, item) changes now served, and kept across restarts")
    unknown_stores: list[str] = Field(description="stores the served bundle does not know (the first 20)")
    ignored: int = Field(description="changes for a store or item the served bundle does not know")


class Item(BaseModel):
    item_id: str
    score: float = Field(description="higher is better: candidates 1–2, co-purchase 0.5–1, popularity 0–0.5")
    reason: str


class Recommendations(BaseModel):
    user_id: str
    store_id: str
    model_version: str
    known_user: bool | None = Field(description="the shopper is in the bundle's data (null on an open node)")
    known_store: bool = Field(description="false: the store is unknown; global popularity, stock not checked")
    cold_start: bool | None = Field(
        description="true: no purchase history for this shopper; popularity and session only (null on an open node)"
    )
    items: list[Item]
    experiment: str | None = Field(None, description="the experiment this answer belongs to (null: none runs)")
    arm: Literal["control", "treatment"] | None = Field(None, description="the shopper's arm of the experiment")
    exposure_id: str | None = Field(
        None, description="the id under which this answer was logged (experiments, --log-exposures)"
    )


class ExperimentStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Id
    treatment_bundle_id: Id = Field(description="an installed bundle (POST /admin/bundle?activate=false)")
    treatment_share: float = Field(0.5, gt=0, lt=1, description="share of shoppers in the treatment arm")
    window_hours: float = Field(
        24.0, gt=0, le=MAX_WINDOW_S / 3600, description="a shown item's click, cart or purchase within it counts"
    )
    salt: Id | None = Field(None, description="assignment salt (default: random); the same salt on every node")


class ExperimentStop(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("stopped by hand", max_length=500)
    promote: bool = Field(False, description="serve the treatment to everyone afterwards")


class ExperimentOut(BaseModel):
    name: str
    control: str
    treatment: str
    control_version: str
    treatment_version: str
    treatment_share: float
    window_hours: float
    salt: str
    started_at: datetime
    stopped_at: datetime | None
    stop_reason: str

    @classmethod
    def of(cls, e: Experiment) -> ExperimentOut:
        return cls(
            **{k: getattr(e, k) for k in ("name", "control", "treatment", "control_version", "treatment_version")},
            treatment_share=e.treatment_share,
            window_hours=e.window_s / 3600,
            salt=e.salt,
            started_at=datetime.fromtimestamp(e.started_at, UTC),
            stopped_at=datetime.fromtimestamp(e.stopped_at, UTC) if e.stopped_at is not None else None,
            stop_reason=e.stop_reason,
        )


class ExperimentStatus(BaseModel):
    running: ExperimentOut | None
    exposures: dict[str, int] = Field(description="exposures logged per arm of the running experiment")
    experiments: list[ExperimentOut] = Field(description="every experiment this node remembers, newest first")


class BundleStored(BaseModel):
    bundle_id: str
    model_version: str
    active: bool = Field(description="false: stored only (a treatment for an experiment)")


class Ready(BaseModel):
    ready: bool
    model_version: str | None = None
    bundle_id: str | None = None
    bundle_created_at: str | None = None
    events_from: str | None = Field(None, description="the earliest event time accepted (ISO 8601, UTC)")
    unusable_events: int = Field(0, description="logged events that are never applied (an unreadable time or type)")


class Metrics:
    def __init__(self, node: Node):
        self.registry = CollectorRegistry()
        self.requests = Counter("lightpersml_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.errors = Counter(
            "lightpersml_errors", "HTTP 4xx and 5xx answers", ["route", "kind"], registry=self.registry
        )
        self.latency = Histogram(
            "lightpersml_request_seconds",
            "request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5),
        )
        self.model = Gauge(
            "lightpersml_model_info",
            "the served bundle (value 1)",
            ["model_version", "bundle_id"],
            registry=self.registry,
        )
        age = Gauge(
            "lightpersml_bundle_age_seconds", "seconds since the served bundle was created", registry=self.registry
        )
        age.set_function(lambda: _bundle_age(node))
        unusable = Gauge(
            "lightpersml_unusable_events",
            "logged events never applied (unreadable time or type)",
            registry=self.registry,
        )
        unusable.set_function(node.unusable_events)
        self.events = Counter("lightpersml_events", "events logged", ["event_type"], registry=self.registry)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, "server" if status >= 500 else "client").inc()


def _bundle_age(node: Node) -> float:
    if node.engine is None:
        return float("nan")
    created = datetime.fromisoformat(node.engine.manifest["created_at"])
    return (datetime.now(UTC) - created).total_seconds()


class AsciiJSON(JSONResponse):
    """JSON with every non-ASCII character escaped: encodable whatever a client sent."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def problems_response(problems: list[Problem]) -> AsciiJSON:
    return AsciiJSON({"detail": [p.detail() for p in problems]}, status_code=422)


def problems_body(problems: list[Problem]) -> bytes:
    """The body of a 422 answer (as `problems_response`)."""
    return bytes(problems_response(problems).body)


def recommendations_body(serving: Serving, query: RecommendationQuery, disclose: bool) -> tuple[bytes, Exposure | None]:
    """The JSON answer of GET /v1/recommendations (schema: `Recommendations`), and during an
    experiment the exposure to log before it is sent."""
    engine = serving.engine
    answer = engine.recommend(query.user_id, query.store_id, query.k, query.exclude, query.recent, query.at)
    exposure, experiment = None, serving.experiment
    if serving.logged:
        exposure = Exposure(
            experiment.name if experiment else "",
            serving.arm or SERVED,
            serving.bundle_id,
            engine.version,
            query.user_id,
            query.store_id,
            [(r.item_id, r.score) for r in answer.items],
            time.time() if query.at is None else query.at,
        )
    body = {
        "user_id": query.user_id,
        "store_id": query.store_id,
        "model_version": engine.version,
        "known_user": answer.known_user if disclose else None,
        "known_store": answer.known_store,
        "cold_start": (not answer.personalised) if disclose else None,
        "items": [{"item_id": r.item_id, "score": r.score, "reason": r.reason} for r in answer.items],
        "experiment": experiment.name if experiment else None,
        "arm": serving.arm,
        "exposure_id": exposure.exposure_id if exposure else None,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), exposure


async def answer_recommendations(node: Node, query: RecommendationQuery, disclose: bool) -> bytes | None:
    """The answer's body, its exposure (if any) synced first; None without a bundle."""
    serving = node.serving(query.user_id)
    if serving is None:
        return None
    body, exposure = recommendations_body(serving, query, disclose)
    if exposure is not None:  # waits for the group commit's fsync: in a worker thread
        await run_in_threadpool(node.exposures.record, exposure)
    return body


EVENTS_IN = TypeAdapter(EventIn | EventBatch)


def accept_events(
    node: Node, serving: Engine, metrics: Metrics, posted: EventIn | EventBatch
) -> EventsAccepted | list[Problem]:
    """Log the posted events durably, then apply them (blocks until they are synced); or the
    problems of their times, and then nothing of the batch is logged."""
    window = TimeWindow.for_origin(serving.origin)
    batch = posted.events if isinstance(posted, EventBatch) else [posted]
    where = (
        (lambda j: ("body", "events", j, "timestamp"))
        if isinstance(posted, EventBatch)
        else (lambda j: ("body", "timestamp"))
    )
    problems = [
        p for j, e in enumerate(batch) if e.timestamp is not None and (p := window.problem(e.timestamp, where(j)))
    ]
    if problems:
        return problems[:20]
    received = datetime.now(UTC)
    parsed = [
        Event(
            e.user_id, e.item_id, e.event_type, _aware(e.timestamp) or received, e.store_id, e.basket_id, value=e.value
        )
        for e in batch
    ]
    new = node.record(parsed, [e.event_id for e in batch])
    for e in batch:
        metrics.events.labels(e.event_type).inc()
    return EventsAccepted(accepted=len(batch), new=new)


def validation_problems(error: ValidationError) -> list[Problem]:
    """A body's validation errors as FastAPI words them (loc from "body"), at most 20."""
    return [
        Problem(("body", *e.get("loc", ())), str(e.get("msg", "")), str(e.get("type", ""))) for e in error.errors()[:20]
    ]


class Refusal(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        self.status, self.detail, self.headers = status, detail, headers or {}


async def respond(send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Pure ASGI middleware in front of FastAPI: who may call (admin token, client keys, rates),
    body limits in size and time, request metrics, and GET /v1/recommendations answered in full
    (strict parsing, no framework hops: the node's hot path)."""

    def __init__(
        self,
        app,
        metrics: Metrics,
        node: Node,
        admin_token: str | None,
        keys: ClientKeys,
        open_node: bool,
        body_timeout: float,
    ):
        self.app, self.metrics, self.node, self.keys, self.open = app, metrics, node, keys, open_node
        self.body_timeout = body_timeout
        self.token = admin_token.encode() if admin_token else None
        self.rates = RateLimits()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        start, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            self._check_access(scope, path, method)
            if path == "/v1/recommendations" and method == "GET":
                await self._recommend(scope, send_status)
            elif path == "/v1/events" and method == "POST":
                body = await self._read_body(receive, MAX_EVENTS_BODY, self.body_timeout)
                await self._events(dict(scope["headers"]).get(b"content-type"), body, send_status)
            elif path != "/admin/bundle" and method in ("POST", "PUT", "PATCH", "DELETE"):
                body = await self._read_body(receive, BODY_LIMIT.get(path, MAX_SMALL_BODY), self.body_timeout)
                await self.app(scope, _replay(body, receive), send_status)
            else:
                await self.app(scope, receive, send_status)
        except Refusal as refusal:
            # The body may be unread: close the connection rather than parse what follows as a request.
            await respond(
                send_status,
                refusal.status,
                json.dumps({"detail": refusal.detail}).encode(),
                {**refusal.headers, "Connection": "close"},
            )
        except ClientGone:
            status[0] = 499
        finally:
            self.metrics.observe(path if path in ROUTES else "other", status[0], time.perf_counter() - start)

    def _check_access(self, scope, path: str, method: str) -> None:
        """Raises a Refusal unless the caller may call `path`; then checks the declared body size."""
        headers = dict(scope["headers"])
        if path.startswith("/admin"):
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            if self.token is None or scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.token):
                raise Refusal(
                    401,
                    "missing or wrong bearer token"
                    if self.token
                    else "/admin is closed: this node was started without an admin token",
                    {"WWW-Authenticate": "Bearer"},
                )
        elif path.startswith("/v1/") and not self.open:
            if not self.keys:
                raise Refusal(
                    401,
                    "no client keys on this node: add one with `lightpersml keys client add`",
                    {"WWW-Authenticate": "ApiKey"},
                )
            key = self.keys.authenticate(headers.get(b"x-api-key", b"").decode("latin-1"))
            if key is None:
                raise Refusal(401, "missing or unknown X-API-Key", {"WWW-Authenticate": "ApiKey"})
            needed = SCOPE_OF.get((method, path))
            if needed and needed not in key.scopes:
                raise Refusal(403, f"key {key.name!r} lacks the {needed!r} scope")
            wait = self.rates.retry_after(key.key_id, key.rate)
            if wait is not None:
                raise Refusal(429, f"key {key.name!r} is over its rate of {key.rate}", {"Retry-After": str(wait)})
        declared = headers.get(b"content-length")
        if declared is not None:
            limit = BODY_LIMIT.get(path, MAX_SMALL_BODY)
            if not declared.isdigit():
                raise Refusal(400, "Content-Length is not a whole number")
            if int(declared) > limit:
                raise Refusal(413, f"body larger than {limit} bytes")

    async def _recommend(self, scope, send) -> None:
        query = parse_recommendation_query(scope["query_string"])
        if isinstance(query, list):
            return await problems_response(query)(scope, None, send)
        body = await answer_recommendations(self.node, query, disclose=not self.open)
        if body is None:
            raise Refusal(503, "no bundle loaded yet: upload one to /admin/bundle")
        await respond(send, 200, body)

    async def _events(self, content_type: bytes | None, body: bytes, send) -> None:
        engine = self.node.engine
        if engine is None:
            raise Refusal(503, "no bundle loaded yet: upload one to /admin/bundle")
        media = (content_type or b"application/json").split(b";")[0].strip().lower()
        if media != b"application/json" and not media.endswith(b"+json"):  # as FastAPI: no type means JSON
            problem = Problem(("body",), "send the events as JSON (Content-Type: application/json)", "json_type")
            return await respond(send, 422, problems_body([problem]))
        try:
            posted = EVENTS_IN.validate_json(body)
        except ValidationError as error:
            return await respond(send, 422, problems_body(validation_problems(error)))
        # Logging waits for the group commit's fsync: in a worker thread, as FastAPI would run it.
        outcome = await run_in_threadpool(accept_events, self.node, engine, self.metrics, posted)
        if isinstance(outcome, list):
            return await respond(send, 422, problems_body(outcome))
        await respond(send, 200, outcome.model_dump_json().encode())

    @staticmethod
    async def _read_body(receive, limit: int, seconds: float) -> bytes:
        """The whole body, at most `limit` bytes, within `seconds` (else 413 / 408)."""
        chunks, size = [], 0
        try:
            async with asyncio.timeout(seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise Refusal(413, f"body larger than {limit} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body"):
                        return b"".join(chunks)
        except TimeoutError:
            raise Refusal(408, f"the body took longer than {seconds:g} s to arrive") from None


class ClientGone(Exception):
    """The client disconnected before its request was read."""


def _replay(body: bytes, receive):
    """An ASGI receive that hands the app the body already read, then waits on the real one."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed():
        return pending.pop() if pending else await receive()

    return replayed


def create_app(
    node: Node, admin_token: str | None, keys: ClientKeys, open_node: bool = False, body_timeout: float = 10.0
) -> Guard:
    """The node's ASGI app. open_node: /v1 needs no client key; body_timeout: seconds to send a body."""
    api = FastAPI(
        title="LightPersML edge node",
        version="1",
        description="Top-k recommendations for a shopper in a store, from a signed bundle. "
        "/v1 routes need `X-API-Key` (unless the node is open); /admin needs the admin token.",
    )
    metrics = Metrics(node)

    @api.exception_handler(RequestValidationError)
    async def refused(request: Request, error: RequestValidationError) -> AsciiJSON:
        return problems_response(
            [
                Problem(tuple(e.get("loc", ())), str(e.get("msg", "")), str(e.get("type", "")))
                for e in error.errors()[:20]
            ]
        )

    def engine():
        current = node.engine
        if current is None:
            raise HTTPException(503, "no bundle loaded yet: upload one to /admin/bundle")
        return current

    # Answered by the Guard (`edge.inputs.parse_recommendation_query`); declared here for the schema.
    @api.get("/v1/recommendations", response_model=Recommendations)
    async def recommendations(
        request: Request,
        user_id: Annotated[str, Query(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN)],
        store_id: Annotated[str, Query(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        exclude: Annotated[list[str], Query(max_length=MAX_EXCLUDE, description="item ids not to recommend")] = [],
        recent: Annotated[
            list[str], Query(max_length=MAX_RECENT, description="item ids the shopper just looked at")
        ] = [],
        at: Annotated[
            str | None,
            Query(max_length=MAX_TIME, description="ISO 8601 time the answer is for (default: the node's clock)"),
        ] = None,
    ) -> Response:
        query = parse_recommendation_query(request.scope["query_string"])
        if isinstance(query, list):
            return problems_response(query)
        body = await answer_recommendations(node, query, disclose=not open_node)
        if body is None:
            raise HTTPException(503, "no bundle loaded yet: upload one to /admin/bundle")
        return Response(body, media_type="application/json")

    # Answered by the Guard (`accept_events`); declared here for the schema.
    @api.post("/v1/events", response_model=EventsAccepted)
    def events(body: EventIn | EventBatch) -> EventsAccepted | AsciiJSON:
        outcome = accept_events(node, engine(), metrics, body)
        return problems_response(outcome) if isinstance(outcome, list) else outcome

    @api.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @api.get("/readyz", response_model=Ready, responses={503: {"model": Ready}})
    async def readyz():
        current = node.engine
        if current is None:
            return JSONResponse(Ready(ready=False).model_dump(), status_code=503)
        return Ready(
            ready=True,
            model_version=current.version,
            bundle_id=node.current,
            bundle_created_at=current.manifest.get("created_at"),
            events_from=TimeWindow.for_origin(current.origin).earliest.isoformat(),
            unusable_events=node.unusable_events(),
        )

    @api.get("/metrics")
    def prometheus() -> Response:
        metrics.model.clear()
        if node.engine is not None:
            metrics.model.labels(node.engine.version, node.current).set(1)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @api.post(
        "/admin/bundle",
        response_model=Ready | BundleStored,
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "the bundle's files as a .tar.gz",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def upload_bundle(
        request: Request,
        activate: Annotated[bool, Query(description="false: store it only (an experiment's treatment)")] = True,
    ) -> Ready | BundleStored:
        with node.upload_file() as upload:
            size = 0
            try:
                async with asyncio.timeout(UPLOAD_TIMEOUT_S):
                    with open(upload, "wb") as f:
                        async for chunk in request.stream():
                            size += len(chunk)
                            if size > MAX_UPLOAD_BYTES:
                                raise HTTPException(
                                    413, f"bundle larger than {MAX_UPLOAD_BYTES} bytes", headers={"Connection": "close"}
                                )
                            f.write(chunk)
            except TimeoutError:
                raise HTTPException(408, f"the upload took longer than {UPLOAD_TIMEOUT_S:.0f} s") from None
            if not size:
                raise HTTPException(400, "empty body: send the bundle as a .tar.gz")
            try:
                bundle_id = await run_in_threadpool(node.install_archive, upload, activate)
            except BundleError as error:
                raise HTTPException(400, f"bundle refused, still serving {node.current}: {error}") from None
        if not activate:
            stored = json.loads((node.bundles / bundle_id / "manifest.json").read_text())
            return BundleStored(bundle_id=bundle_id, model_version=str(stored.get("model_version", "?")), active=False)
        return await readyz()

    @api.post("/admin/rollback", response_model=Ready)
    async def rollback() -> Ready:
        try:
            await run_in_threadpool(node.rollback)
        except BundleError as error:
            raise HTTPException(409, str(error)) from None
        return await readyz()

    @api.put("/admin/stock", response_model=StockAccepted)
    async def push_stock(push: StockPush) -> StockAccepted:
        changes = {(change.store_id, change.item_id): change.in_stock for change in push.changes}
        try:
            applied = await run_in_threadpool(node.push_stock, changes)
        except BundleError as error:
            raise HTTPException(503, str(error)) from None
        return StockAccepted(**dataclasses.asdict(applied))

    @api.get("/admin/experiment", response_model=ExperimentStatus)
    def experiment_status() -> ExperimentStatus:
        running = node.experiments.running
        return ExperimentStatus(
            running=ExperimentOut.of(running) if running else None,
            exposures=node.exposures.counts(running.name) if running else {},
            experiments=[ExperimentOut.of(e) for e in node.experiments.all],
        )

    @api.post("/admin/experiment", response_model=ExperimentStatus)
    async def start_experiment(start: ExperimentStart) -> ExperimentStatus:
        try:
            await run_in_threadpool(
                node.start_experiment,
                start.name,
                start.treatment_bundle_id,
                start.treatment_share,
                start.window_hours * 3600,
                start.salt,
            )
        except ExperimentError as error:
            raise HTTPException(409, str(error)) from None
        return experiment_status()

    @api.post("/admin/experiment/stop", response_model=ExperimentStatus)
    async def stop_experiment(stop: ExperimentStop) -> ExperimentStatus:
        try:
            await run_in_threadpool(node.stop_experiment, stop.reason, stop.promote)
        except ExperimentError as error:
            raise HTTPException(409, str(error)) from None
        except BundleError as error:
            raise HTTPException(409, f"stopped, but the treatment could not be promoted: {error}") from None
        return experiment_status()

    def page(name: str, rows: list[dict], after: int) -> dict:
        """A page of a log after cursor `after`, and the cursor of the next page."""
        return {name: rows, "next": rows[-1]["seq"] if rows else after}

    @api.get("/admin/exposures")
    def logged_exposures(after: After = 0, limit: Limit = 1000) -> dict:
        return page("exposures", node.exposures.since(after, limit), after)

    @api.get("/admin/events")
    def logged_events(after: After = 0, limit: Limit = 1000) -> dict:
        return page("events", node.events.since(after, limit), after)

    return Guard(api, metrics, node, admin_token, keys, open_node, body_timeout)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
