"""The edge node's HTTP API (FastAPI on uvicorn). Run it with `lightpersml serve`.

    GET  /v1/recommendations  top-k for a shopper in a store, each item with a score and a reason
    POST /v1/events           view / add_to_cart / purchase, one or a batch: logged durably, then applied
    GET  /healthz, /readyz    liveness; readiness with the bundle's model version
    GET  /metrics             Prometheus: requests, latency, errors, model version, bundle age
    POST /admin/bundle        upload a signed bundle (.tar.gz); verified, warmed, swapped in
    POST /admin/rollback      serve the previous bundle again
    GET  /admin/events        the event log after a cursor (for flows/collect.py)

Everything under /admin needs `Authorization: Bearer <token>`; without it any /admin path is 401.
"""

from __future__ import annotations

import hmac
import json
import time
from urllib.parse import parse_qsl
from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field

from edge.bundle import BundleError
from edge.engine import Event
from edge.node import Node

MAX_K = 100
MAX_BATCH = 1000
MAX_BUNDLE_BYTES = 512 * 2**20
Id = Annotated[str, Field(min_length=1, max_length=128)]
ROUTES = ("/v1/recommendations", "/v1/events", "/healthz", "/readyz", "/metrics", "/admin/bundle", "/admin/rollback",
          "/admin/events")


class EventIn(BaseModel):
    user_id: Id
    item_id: Id
    event_type: Literal["view", "add_to_cart", "purchase"]
    timestamp: datetime | None = Field(None, description="when it happened (ISO 8601); default: when received")
    store_id: Id | None = None
    basket_id: Id | None = Field(None, description="purchases with the same basket_id form one basket")
    event_id: Id | None = Field(None, description="client id of the event: a retried POST is not counted twice")


class EventBatch(BaseModel):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class EventsAccepted(BaseModel):
    accepted: int = Field(description="events in the request, all durably logged")
    new: int = Field(description="events not logged before (by event_id)")


class Item(BaseModel):
    item_id: str
    score: float = Field(description="higher is better: candidates 1–2, co-purchase 0.5–1, popularity 0–0.5")
    reason: str


class Recommendations(BaseModel):
    user_id: str
    store_id: str
    model_version: str
    known_user: bool
    known_store: bool = Field(description="false: the store is unknown; global popularity, stock not checked")
    cold_start: bool = Field(description="true: no purchase history for this shopper; popularity and session only")
    items: list[Item]


class Ready(BaseModel):
    ready: bool
    model_version: str | None = None
    bundle_id: str | None = None
    bundle_created_at: str | None = None


class Metrics:
    def __init__(self, node: Node):
        self.registry = CollectorRegistry()
        self.requests = Counter("lightpersml_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.errors = Counter("lightpersml_errors", "HTTP 4xx and 5xx answers", ["route", "kind"], registry=self.registry)
        self.latency = Histogram("lightpersml_request_seconds", "request latency", ["route"], registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5))
        self.model = Gauge("lightpersml_model_info", "the served bundle (value 1)", ["model_version", "bundle_id"],
                           registry=self.registry)
        age = Gauge("lightpersml_bundle_age_seconds", "seconds since the served bundle was created", registry=self.registry)
        age.set_function(lambda: _bundle_age(node))
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
    return (datetime.now(timezone.utc) - created).total_seconds()


def recommendations_body(serving, user_id: str, store_id: str, k: int, exclude: tuple, recent: tuple) -> dict:
    """The JSON answer of GET /v1/recommendations (schema: `Recommendations`)."""
    answer = serving.recommend(user_id, store_id, k, exclude, recent)
    return {"user_id": user_id, "store_id": store_id, "model_version": serving.version,
            "known_user": answer.known_user, "known_store": answer.known_store, "cold_start": not answer.personalised,
            "items": [{"item_id": r.item_id, "score": r.score, "reason": r.reason} for r in answer.items]}


def plain_recommendation_query(query_string: bytes) -> tuple | None:
    """(user_id, store_id, k, exclude, recent) when the query is plainly valid, else None (then
    FastAPI handles the request and its validation words any error)."""
    values: dict[str, list[str]] = {}
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        values.setdefault(key, []).append(value)
    user, store, k = values.get("user_id", []), values.get("store_id", []), values.get("k", ["10"])
    exclude, recent = values.get("exclude", []), values.get("recent", [])
    if not (len(user) == len(store) == len(k) == 1 and 0 < len(user[0]) <= 128 and 0 < len(store[0]) <= 128
            and k[0].isascii() and k[0].isdigit() and len(k[0]) <= 3 and 1 <= int(k[0]) <= MAX_K
            and len(exclude) <= MAX_K and len(recent) <= 50):
        return None
    return user[0], store[0], int(k[0]), tuple(exclude), tuple(recent)


class Guard:
    """Pure ASGI middleware: bearer check for every /admin path, request metrics, and a fast path
    for plainly valid recommendation requests (the node's hot path skips the framework's routing,
    validation and thread hops: about 3× the requests per core). The FastAPI route stays for the
    schema and answers everything else, errors included."""

    def __init__(self, app, metrics: Metrics, admin_token: str | None, node: Node):
        self.app, self.metrics, self.node = app, metrics, node
        self.token = f"Bearer {admin_token}".encode() if admin_token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in ROUTES else "other"
        start, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            query = (plain_recommendation_query(scope["query_string"])
                     if path == "/v1/recommendations" and scope["method"] == "GET" and self.node.engine else None)
            if query is not None:
                body = json.dumps(recommendations_body(self.node.engine, *query), ensure_ascii=False,
                                  separators=(",", ":")).encode()
                await send_status({"type": "http.response.start", "status": 200,
                                   "headers": [(b"content-type", b"application/json"),
                                               (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
            elif path.startswith("/admin") and not self._authorised(scope):
                response = JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(route, status[0], time.perf_counter() - start)

    def _authorised(self, scope) -> bool:
        given = dict(scope["headers"]).get(b"authorization", b"")
        return self.token is not None and hmac.compare_digest(given, self.token)


def create_app(node: Node, admin_token: str | None) -> "Guard":
    api = FastAPI(title="LightPersML edge node", version="1",
                  description="Top-k recommendations for a shopper in a store, from a signed bundle.")
    metrics = Metrics(node)

    def engine():
        current = node.engine
        if current is None:
            raise HTTPException(503, "no bundle loaded yet: upload one to /admin/bundle")
        return current

    # async: answers run on the event loop without a thread hop (they are short and CPU-bound);
    # event writes (fsync) and bundle installs (seconds) run in the thread pool.
    @api.get("/v1/recommendations", response_model=Recommendations)
    async def recommendations(
        user_id: Annotated[str, Query(min_length=1, max_length=128)],
        store_id: Annotated[str, Query(min_length=1, max_length=128)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        exclude: Annotated[list[str], Query(max_length=MAX_K, description="item ids not to recommend")] = [],
        recent: Annotated[list[str], Query(max_length=50, description="item ids the shopper just looked at")] = [],
    ) -> Recommendations:
        return JSONResponse(recommendations_body(engine(), user_id, store_id, k, tuple(exclude), tuple(recent)))

    @api.post("/v1/events", response_model=EventsAccepted)
    def events(body: EventIn | EventBatch) -> EventsAccepted:
        engine()
        batch = body.events if isinstance(body, EventBatch) else [body]
        received = datetime.now(timezone.utc)
        parsed = [Event(e.user_id, e.item_id, e.event_type, _aware(e.timestamp) or received, e.store_id, e.basket_id)
                  for e in batch]
        new = node.record(parsed, [e.event_id for e in batch])
        for e in batch:
            metrics.events.labels(e.event_type).inc()
        return EventsAccepted(accepted=len(batch), new=new)

    @api.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @api.get("/readyz", response_model=Ready, responses={503: {"model": Ready}})
    async def readyz():
        current = node.engine
        if current is None:
            return JSONResponse(Ready(ready=False).model_dump(), status_code=503)
        return Ready(ready=True, model_version=current.version, bundle_id=node.current,
                     bundle_created_at=current.manifest.get("created_at"))

    @api.get("/metrics")
    def prometheus() -> Response:
        metrics.model.clear()
        if node.engine is not None:
            metrics.model.labels(node.engine.version, node.current).set(1)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @api.post("/admin/bundle", response_model=Ready,
              openapi_extra={"requestBody": {"required": True, "description": "the bundle's files as a .tar.gz",
                                             "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload_bundle(request: Request) -> Ready:
        data = await request.body()
        if not data:
            raise HTTPException(400, "empty body: send the bundle as a .tar.gz")
        if len(data) > MAX_BUNDLE_BYTES:
            raise HTTPException(413, f"bundle larger than {MAX_BUNDLE_BYTES} bytes")
        try:
            await run_in_threadpool(node.install_archive, data)
        except BundleError as error:
            raise HTTPException(400, f"bundle refused, still serving {node.current}: {error}") from None
        return await readyz()

    @api.post("/admin/rollback", response_model=Ready)
    async def rollback() -> Ready:
        try:
            await run_in_threadpool(node.rollback)
        except BundleError as error:
            raise HTTPException(409, str(error)) from None
        return await readyz()

    @api.get("/admin/events")
    def logged_events(after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
                      limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict:
        rows = node.events.since(after, limit)
        return {"events": rows, "next": rows[-1]["seq"] if rows else after}

    return Guard(api, metrics, admin_token, node)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)
