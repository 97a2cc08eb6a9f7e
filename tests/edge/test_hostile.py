"""A hostile corpus against one real node: malformed and abusive requests across the public
routes and /admin, sent as raw bytes. None may get a 5xx, and while each is in flight the node
still answers /healthz (the best of three probes within 100 ms: a frozen node fails all three)."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import threading
import time

import httpx
import pytest

from tests.edge.conftest import TOKEN, NodeProcess, raw_request

PROBES, HEALTHY_S = 3, 0.100


def _get(path: str, key: str | None, extra: str = "") -> bytes:
    auth = f"X-API-Key: {key}\r\n" if key else ""
    return f"GET {path} HTTP/1.1\r\nHost: node\r\n{auth}{extra}Connection: close\r\n\r\n".encode()


def _post(
    path: str, body: bytes, auth: str, content_type: str = "application/json", length: int | None = None
) -> bytes:
    length = len(body) if length is None else length
    return (
        f"POST {path} HTTP/1.1\r\nHost: node\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


def _bomb() -> bytes:
    """A .tar.gz of a few MB whose one member unpacks to 3 GiB (its header says so honestly)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("model.onnx")
        info.size = 3 * 2**30
        tar.addfile(info)  # header only: refused before the (absent) data would be read
    return buffer.getvalue()


def _gzip_of_zeros(megabytes: int) -> bytes:
    return gzip.compress(b"\0" * (megabytes * 2**20), compresslevel=1)


def corpus(key: str, events_only_key: str, shopper: str, store: str) -> dict[str, bytes]:
    client = f"X-API-Key: {key}\r\n"
    admin = f"Authorization: Bearer {TOKEN}\r\n"
    rec = f"/v1/recommendations?user_id={shopper}&store_id={store}"

    def event(**fields) -> bytes:
        return json.dumps({"user_id": shopper, "item_id": "1", "event_type": "view", **fields}).encode()

    return {
        # GET /v1/recommendations
        "no parameters": _get("/v1/recommendations", key),
        "k=5.0": _get(f"{rec}&k=5.0", key),
        "k=-1": _get(f"{rec}&k=-1", key),
        "k=1e3": _get(f"{rec}&k=1e3", key),
        "k=0x10": _get(f"{rec}&k=0x10", key),
        "k repeated": _get(f"{rec}&k=5&k=6", key),
        "k of 5,000 digits": _get(f"{rec}&k={'9' * 5000}", key),
        "user_id repeated": _get(f"{rec}&user_id=other", key),
        "user_id of 10 KB": _get(f"/v1/recommendations?user_id={'u' * 10_000}&store_id={store}", key),
        "exclude of 10 KB": _get(f"{rec}&exclude={'x' * 10_000}", key),
        "101 exclude values": _get(rec + "".join(f"&exclude={j}" for j in range(101)), key),
        "51 recent values": _get(rec + "".join(f"&recent={j}" for j in range(51)), key),
        "at 9999-12-31T23:59:59-14:00": _get(f"{rec}&at=9999-12-31T23:59:59-14:00", key),
        "at year 1": _get(f"{rec}&at=0001-01-01T00:00:00%2B14:00", key),
        "at of 5,000 digits": _get(f"{rec}&at={'9' * 5000}", key),
        "at repeated": _get(f"{rec}&at=2017-01-01&at=2017-01-02", key),
        "at NaN": _get(f"{rec}&at=NaN", key),
        "NUL in user_id": _get(f"/v1/recommendations?user_id=a%00b&store_id={store}", key),
        "escape character in store_id": _get(f"/v1/recommendations?user_id={shopper}&store_id=%1b[2J", key),
        "invalid UTF-8": _get(f"/v1/recommendations?user_id=%ff%fe&store_id={store}", key),
        "encoded lone surrogate": _get(f"/v1/recommendations?user_id=%ed%a0%80&store_id={store}", key),
        "query string of 100 KB": _get(f"{rec}&pad={'p' * 100_000}", key),
        "5,000 unknown parameters": _get(rec + "".join(f"&p{j}=1" for j in range(5000)), key),
        "no key": _get(rec, None),
        "wrong key": _get(rec, "lpk_00000000_not-a-key"),
        "key of 100 KB": _get(rec, "lpk_" + "k" * 100_000),
        "events-only key": _get(rec, events_only_key),
        "path traversal to admin": _get("/v1/%2e%2e/admin/events", key),
        # POST /v1/events
        "timestamp 9999-12-31T23:59:59-14:00": _post(
            "/v1/events", event(timestamp="9999-12-31T23:59:59-14:00"), client
        ),
        "timestamp NaN": _post("/v1/events", event()[:-1] + b', "timestamp": NaN}', client),
        "timestamp 1e400": _post("/v1/events", event()[:-1] + b', "timestamp": 1e400}', client),
        "timestamp of 30 digits": _post("/v1/events", event()[:-1] + b', "timestamp": ' + b"9" * 30 + b"}", client),
        "timestamp year 1": _post("/v1/events", event(timestamp="0001-01-01T00:00:00+14:00"), client),
        "timestamp in 2100": _post("/v1/events", event(timestamp="2100-01-01T00:00:00Z"), client),
        "lone surrogate in user_id": _post(
            "/v1/events", b'{"user_id": "\\ud800", "item_id": "1", "event_type": "view"}', client
        ),
        "NUL in item_id": _post("/v1/events", event(item_id="a\x00b"), client),
        "user_id of 129 characters": _post("/v1/events", event(user_id="u" * 129), client),
        "unknown event type": _post("/v1/events", event(event_type="like"), client),
        "non-ASCII event type": _post("/v1/events", event(event_type="vïew"), client),
        "extra field": _post("/v1/events", event(admin=True), client),
        "batch of 1,001": _post("/v1/events", json.dumps({"events": [json.loads(event())] * 1001}).encode(), client),
        "empty batch": _post("/v1/events", b'{"events": []}', client),
        "not JSON": _post("/v1/events", b"{not json", client),
        "JSON nested 200,000 deep": _post("/v1/events", b"[" * 200_000 + b"]" * 200_000, client),
        "text/plain body": _post("/v1/events", event(), client, content_type="text/plain"),
        "Content-Length of 50 MB, no body": _post("/v1/events", b"", client, length=50 * 2**20),
        "Content-Length abc": _post("/v1/events", b"", client).replace(b"Content-Length: 0", b"Content-Length: abc"),
        "Content-Length larger than the body": _post("/v1/events", event(), client, length=10_000),
        "body of 2 MB": _post("/v1/events", b" " * (2 * 2**20), client),
        "gzip of 64 MB of zeros as JSON": _post(
            "/v1/events", _gzip_of_zeros(64), client + "Content-Encoding: gzip\r\n"
        ),
        # /admin
        "admin without token": _get("/admin/events", None),
        "admin with a wrong lowercase bearer": _get("/admin/events", None, "Authorization: bearer wrong\r\n"),
        "admin with a token of 100 KB": _get("/admin/events", None, f"Authorization: Bearer {'t' * 100_000}\r\n"),
        "admin events after=-1": _get("/admin/events?after=-1", None, admin),
        "admin events limit=10^12": _get("/admin/events?limit=1000000000000", None, admin),
        "admin events after beyond int64": _get(f"/admin/events?after={2**70}", None, admin),
        "bundle upload declaring 1 GiB": _post("/admin/bundle", b"", admin, "application/octet-stream", length=2**30),
        "bundle that unpacks to 3 GiB": _post("/admin/bundle", _bomb(), admin, "application/octet-stream"),
        "bundle of gzipped zeros": _post("/admin/bundle", _gzip_of_zeros(64), admin, "application/octet-stream"),
        "bundle that is not an archive": _post("/admin/bundle", b"hello", admin, "application/octet-stream"),
        "empty bundle upload": _post("/admin/bundle", b"", admin, "application/octet-stream"),
        "rollback with nothing to roll back to": _post("/admin/rollback", b"", admin),
        # the HTTP layer
        "unknown method": b"BREW /v1/recommendations HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n",
        "header of 100 KB": _get(rec, key, f"X-Pad: {'h' * 100_000}\r\n"),
        "2,000 headers": _get(rec, key, "".join(f"X-H{j}: 1\r\n" for j in range(2000))),
        "garbage request line": b"\x00\x01\x02 not http at all\r\n\r\n",
        "HTTP/0.9 request": b"GET /healthz\r\n\r\n",
    }


@pytest.fixture(scope="module")
def node(tmp_path_factory, edge_bundle, signing_keys):
    process = NodeProcess(tmp_path_factory.mktemp("hostile"), signing_keys[1], options=("--read-timeout", "2"))
    process.start(edge_bundle)
    yield process
    process.stop()


def healthz_seconds(url: str) -> float:
    """Seconds until a new connection's GET /healthz is answered (inf: not answered with 200)."""
    start = time.perf_counter()
    try:
        ok = raw_request(url, _get("/healthz", None), timeout=5) == 200
    except OSError:
        ok = False
    return time.perf_counter() - start if ok else float("inf")


def test_no_hostile_request_gets_a_server_error_or_stalls_the_node(node, busy_shopper):
    from edge.clients import ClientKeys

    _, events_only = ClientKeys(node.node_dir).add("till", scopes=("events",))
    time.sleep(1.2)  # the node rereads its keys file once a second
    requests = corpus(node.headers["X-API-Key"], events_only, *busy_shopper)
    assert len(requests) >= 40
    report = {}
    for name, data in requests.items():
        answer: list[int | None] = []
        sender = threading.Thread(target=lambda answer=answer, data=data: answer.append(raw_request(node.url, data)))
        sender.start()
        best = min(healthz_seconds(node.url) for _ in range(PROBES))
        sender.join(120)
        report[name] = (answer[0] if answer else "no answer in 120 s", round(best * 1000, 1))
    server_errors = {
        name: r
        for name, r in report.items()
        if not isinstance(r[0], int) and r[0] is not None or isinstance(r[0], int) and r[0] >= 500
    }
    stalled = {name: r for name, r in report.items() if r[1] > HEALTHY_S * 1000}
    assert not server_errors and not stalled, f"5xx or no answer: {server_errors}; /healthz slow: {stalled}"
    assert httpx.get(f"{node.url}/readyz").json()["model_version"] == "7"
    assert httpx.get(f"{node.url}/admin/events", headers={"Authorization": f"Bearer {TOKEN}"}).json()["events"] == []
    assert (
        sum(1 for status, _ in report.values() if status is None) <= 3
    )  # only the HTTP layer's refusals close silently
