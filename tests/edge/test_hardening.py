"""The edge node as an attacker and a busy shop meet it (real `lightpersml serve` processes on
127.0.0.1): nothing a client sends is logged unchecked or stops the node starting, nobody reads
or writes a shopper without a key, long inputs cost nothing, and uploads leave nothing behind."""

from __future__ import annotations

import io
import json
import signal
import socket
import sqlite3
import tarfile
import time

import httpx
import pytest

from edge.bundle import archive_bundle
from edge.clients import ClientKeys
from tests.edge.conftest import TOKEN, NodeProcess, peak_rss_mb, raw_request

AUTH = {"Authorization": f"Bearer {TOKEN}"}
GENERIC_REASONS = {"recommended for you", "often bought together", "popular in this store", "popular with shoppers"}


@pytest.fixture(scope="module")
def node(tmp_path_factory, edge_bundle, signing_keys):
    process = NodeProcess(tmp_path_factory.mktemp("hardened"), signing_keys[1]).start(edge_bundle)
    yield process
    process.stop()


def logged(node: NodeProcess) -> list[dict]:
    return httpx.get(f"{node.url}/admin/events", headers=AUTH, params={"limit": 10_000}).json()["events"]


def event(**fields) -> dict:
    return {"user_id": "u1", "item_id": "i1", "event_type": "view", **fields}


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(event(timestamp="9999-12-31T23:59:59-14:00")),  # overflows when turned into UTC
        json.dumps(event(timestamp="2100-01-01T00:00:00Z")),  # after the node's clock
        json.dumps(event(timestamp="1990-01-01T00:00:00Z")),  # before the node's data begins
        json.dumps(
            {"events": [event(), event(timestamp="9999-12-31T23:59:59-14:00")]}
        ),  # one bad event refuses the batch
        '{"user_id": "u1", "item_id": "i1", "event_type": "view", "timestamp": NaN}',
        '{"user_id": "\\ud800", "item_id": "i1", "event_type": "view"}',  # a lone surrogate
        json.dumps(event(item_id="a\x00b")),
        json.dumps(event(user_id="x" * 129)),
        json.dumps(event(timestmp="2017-01-01")),  # a misspelt field is not silently dropped
    ],
)
def test_a_bad_event_is_refused_with_422_and_nothing_is_logged(node, body):
    before = len(logged(node))
    response = httpx.post(
        f"{node.url}/v1/events", content=body.encode(), headers={**node.headers, "content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] == "body"
    assert len(logged(node)) == before


def test_a_node_whose_log_holds_unappliable_rows_still_starts(tmp_path, edge_bundle, signing_keys, busy_shopper):
    """A log written by an older node with the row that used to brick it, and a row of an unknown
    type: the node starts, counts both, and applies every other row."""
    shopper, store = busy_shopper
    node = NodeProcess(tmp_path, signing_keys[1])
    first = node.start(edge_bundle)
    top = httpx.get(
        f"{first.url}/v1/recommendations", params={"user_id": shopper, "store_id": store}, headers=node.headers
    ).json()["items"][0]["item_id"]
    node.stop()
    db = sqlite3.connect(node.node_dir / "events.db")
    db.execute("DROP TABLE events")
    db.execute("""CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE, user_id TEXT NOT NULL,
                  item_id TEXT NOT NULL, event_type TEXT NOT NULL, timestamp TEXT NOT NULL, store_id TEXT, basket_id TEXT,
                  received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))""")  # schema 1
    db.execute("PRAGMA user_version = 0")
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    db.executemany(
        "INSERT INTO events (user_id, item_id, event_type, timestamp, store_id) VALUES (?, ?, ?, ?, ?)",
        [
            (shopper, top, "purchase", "9999-12-31T23:59:59-14:00", store),
            (shopper, top, "like", now, store),
            (shopper, top, "add_to_cart", now, store),
        ],
    )
    db.commit()
    db.close()
    node.start()  # no --bundle: its active bundle and this log
    answer = httpx.get(
        f"{node.url}/v1/recommendations", params={"user_id": shopper, "store_id": store}, headers=node.headers
    )
    assert answer.status_code == 200 and top not in {
        i["item_id"] for i in answer.json()["items"]
    }  # the cart row applied
    assert httpx.get(f"{node.url}/readyz").json()["unusable_events"] == 2
    assert "lightpersml_unusable_events 2.0" in httpx.get(f"{node.url}/metrics").text
    node.stop()


def test_a_long_id_costs_no_more_than_a_short_one(node, busy_shopper):
    shopper, store = busy_shopper
    with node.client() as client:
        for j in range(10):  # warm every code path with short ids first
            client.get(
                "/v1/recommendations", params={"user_id": shopper, "store_id": store, "exclude": [f"i{j}"] * 100}
            )
        before = peak_rss_mb(node.process.pid)
        for j in range(10):
            longest = [f"{j:03d}" + "x" * 125] * 100
            assert (
                client.get(
                    "/v1/recommendations", params={"user_id": "y" * 128, "store_id": store, "exclude": longest}
                ).status_code
                == 200
            )
        refused = client.get(
            "/v1/recommendations", params={"user_id": shopper, "store_id": store, "exclude": "x" * 10_000}
        )
        assert refused.status_code == 422
        assert peak_rss_mb(node.process.pid) - before < 20


def test_oversized_bodies_get_413_before_they_are_read(node):
    host = node.url.removeprefix("http://")
    key = node.headers["X-API-Key"]
    head = f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n"
    assert raw_request(node.url, f"{head}Content-Length: 52428800\r\n\r\n".encode()) == 413  # no body sent at all
    chunk = b"[" * 65536
    chunked = f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + b"".join(
        b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)
    )
    assert raw_request(node.url, chunked) == 413  # 1.3 MB streamed without a length
    upload = f"POST /admin/bundle HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {2**30}\r\n\r\n"
    assert raw_request(node.url, upload.encode()) == 413
    assert httpx.get(f"{node.url}/readyz").status_code == 200


def test_public_routes_need_a_key_with_the_right_scope(node, busy_shopper):
    shopper, store = busy_shopper
    ask = {"user_id": shopper, "store_id": store}
    assert httpx.get(f"{node.url}/v1/recommendations", params=ask).status_code == 401
    assert (
        httpx.get(f"{node.url}/v1/recommendations", params=ask, headers={"X-API-Key": "lpk_00000000_guess"}).status_code
        == 401
    )
    assert httpx.post(f"{node.url}/v1/events", json=event()).status_code == 401
    keys = ClientKeys(node.node_dir)
    _, writer = keys.add("pos-till", scopes=("events",))
    time.sleep(1.2)  # the node rereads its keys file at most once a second
    assert httpx.get(f"{node.url}/v1/recommendations", params=ask, headers={"X-API-Key": writer}).status_code == 403
    assert httpx.post(f"{node.url}/v1/events", json=event(), headers={"X-API-Key": writer}).status_code == 200
    keys.revoke("pos-till")
    time.sleep(1.2)
    assert httpx.post(f"{node.url}/v1/events", json=event(), headers={"X-API-Key": writer}).status_code == 401
    assert httpx.get(f"{node.url}/admin/events", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_an_over_limit_key_gets_429_with_retry_after(node, busy_shopper):
    shopper, store = busy_shopper
    _, slow = ClientKeys(node.node_dir).add("slow-app", rate="5/minute")
    time.sleep(1.2)
    statuses = [
        httpx.get(
            f"{node.url}/v1/recommendations",
            params={"user_id": shopper, "store_id": store},
            headers={"X-API-Key": slow},
        )
        for _ in range(7)
    ]
    assert [r.status_code for r in statuses] == [200] * 5 + [429] * 2
    assert int(statuses[-1].headers["Retry-After"]) >= 1
    assert (
        httpx.get(
            f"{node.url}/v1/recommendations", params={"user_id": shopper, "store_id": store}, headers=node.headers
        ).status_code
        == 200
    )  # other keys are not held back


def test_without_keys_the_public_routes_are_closed(tmp_path, edge_bundle, signing_keys):
    node = NodeProcess(tmp_path, signing_keys[1])
    (node.node_dir / "clients.json").unlink()
    node.start(edge_bundle)
    try:
        refused = httpx.get(f"{node.url}/v1/recommendations", params={"user_id": "1", "store_id": "1"})
        assert refused.status_code == 401 and "lightpersml keys client add" in refused.json()["detail"]
    finally:
        node.stop()
    assert "No client keys" in (tmp_path / "stdout.log").read_text()


def test_an_open_node_never_words_reasons_with_a_shoppers_purchases(tmp_path, edge_bundle, signing_keys, busy_shopper):
    shopper, store = busy_shopper
    node = NodeProcess(tmp_path, signing_keys[1], open_node=True).start(edge_bundle)
    try:
        answer = httpx.get(
            f"{node.url}/v1/recommendations", params={"user_id": shopper, "store_id": store, "k": 100}
        ).json()
        assert answer["known_user"] is None and answer["cold_start"] is None
        top = answer["items"][0]["item_id"]
        assert (
            httpx.post(
                f"{node.url}/v1/events",
                json=event(user_id=shopper, item_id=top, event_type="add_to_cart", store_id=store),
            ).status_code
            == 200
        )
        again = httpx.get(
            f"{node.url}/v1/recommendations", params={"user_id": shopper, "store_id": store, "k": 100}
        ).json()
        reasons = {item["reason"] for item in answer["items"] + again["items"]}
        assert reasons <= GENERIC_REASONS and "recommended for you" in reasons
        unknown = httpx.get(f"{node.url}/v1/recommendations", params={"user_id": "nobody", "store_id": store}).json()
        assert unknown.keys() == again.keys() and unknown["known_user"] is None
    finally:
        node.stop()


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def test_refused_uploads_leave_nothing_behind_and_leftovers_go_at_start(
    tmp_path, edge_bundle, bundle_copy, signing_keys
):
    node = NodeProcess(tmp_path, signing_keys[1]).start(edge_bundle)
    huge = tarfile.TarInfo("model.onnx")
    huge.size = 5 * 2**30  # declares 5 GiB: refused from its header, nothing written
    link = tarfile.TarInfo("catalog.npz")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    escape = tarfile.TarInfo("../outside.txt")
    escape.size = 2
    with open(bundle_copy / "serving.json", "a") as f:
        f.write(" ")
    uploads = {
        "bomb": _tar([(huge, None)]),
        "symlink": _tar([(link, None)]),
        "traversal": _tar([(escape, b"hi")]),
        "tampered": archive_bundle(bundle_copy),
        "garbage": b"\x1f\x8b not really gzip",
    }
    try:
        for name, data in uploads.items():
            response = httpx.post(f"{node.url}/admin/bundle", content=data, headers=AUTH, timeout=60)
            assert response.status_code == 400, (name, response.text)
            assert sorted(p.name for p in node.node_dir.iterdir() if p.name.startswith(".")) == [], name
            assert not [p for p in (node.node_dir / "bundles").iterdir() if p.name.startswith(".")], name
        assert not (tmp_path / "outside.txt").exists() and not (node.node_dir / "outside.txt").exists()
        node.stop(signal.SIGKILL)
        (node.node_dir / ".upload-killed.tar.gz").write_bytes(b"half an upload")
        (node.node_dir / "bundles" / ".staging-killed").mkdir()
        node.start()
        assert not (node.node_dir / ".upload-killed.tar.gz").exists()
        assert not (node.node_dir / "bundles" / ".staging-killed").exists()
    finally:
        node.stop()


def test_shoppers_not_in_memory_are_read_back_from_the_log(tmp_path, edge_bundle, signing_keys, busy_shopper):
    """With room for 100 shoppers, 300 others push the busy shopper out of memory; their cart is
    read back from the log (no replay at start-up either)."""
    shopper, store = busy_shopper
    node = NodeProcess(tmp_path, signing_keys[1], options=("--max-shoppers", "100")).start(edge_bundle)
    try:
        with node.client() as client:
            ask = {"user_id": shopper, "store_id": store}
            top = client.get("/v1/recommendations", params=ask).json()["items"][0]["item_id"]
            assert (
                client.post(
                    "/v1/events", json=event(user_id=shopper, item_id=top, event_type="add_to_cart", store_id=store)
                ).status_code
                == 200
            )
            for j in range(300):
                client.get("/v1/recommendations", params={"user_id": f"guest-{j}", "store_id": store})
            assert top not in {i["item_id"] for i in client.get("/v1/recommendations", params=ask).json()["items"]}
        node.stop()
        node.start()
        with node.client() as client:
            assert top not in {i["item_id"] for i in client.get("/v1/recommendations", params=ask).json()["items"]}
    finally:
        node.stop()


def test_slow_headers_and_bodies_are_cut_off(tmp_path, edge_bundle, signing_keys):
    node = NodeProcess(tmp_path, signing_keys[1], options=("--read-timeout", "1")).start(edge_bundle)
    host, port = node.url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=10) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finish
            time.sleep(1.5)
            assert slow.recv(100) == b""  # closed by the node
        with socket.create_connection((host, int(port)), timeout=10) as slow:
            slow.sendall(
                f"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-API-Key: {node.headers['X-API-Key']}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
            )
            assert slow.recv(100).split()[1] == b"408"
        assert httpx.get(f"{node.url}/healthz").status_code == 200
    finally:
        node.stop()


def test_a_node_whose_stored_bundle_is_damaged_starts_on_the_one_before_or_none(
    tmp_path, edge_bundle, serving_dir, signing_keys
):
    from tests.edge.conftest import build_bundle

    node = NodeProcess(tmp_path, signing_keys[1]).start(edge_bundle)
    v8 = build_bundle(serving_dir, signing_keys[0], tmp_path / "v8", "8")
    assert (
        httpx.post(f"{node.url}/admin/bundle", content=archive_bundle(v8), headers=AUTH, timeout=120).status_code == 200
    )
    node.stop()
    active = json.loads((node.node_dir / "active.json").read_text())
    (node.node_dir / "bundles" / active["current"] / "model.onnx").write_bytes(b"disk trouble")
    node.start()
    assert httpx.get(f"{node.url}/readyz").json()["model_version"] == "7"
    node.stop()
    (node.node_dir / "active.json").write_text("{half written")
    node.start(until="/healthz")  # up, waiting for an upload
    assert httpx.get(f"{node.url}/readyz").status_code == 503
    node.stop()


def test_a_node_without_a_bundle_answers_503_and_a_signed_bundle_it_cannot_load_is_refused(
    tmp_path, edge_bundle, bundle_copy, signing_keys
):
    from edge.bundle import load_private_key, sign_bundle

    node = NodeProcess(tmp_path, signing_keys[1]).start(until="/healthz")
    try:
        assert httpx.get(f"{node.url}/readyz").status_code == 503
        assert (
            httpx.get(
                f"{node.url}/v1/recommendations", params={"user_id": "1", "store_id": "1"}, headers=node.headers
            ).status_code
            == 503
        )
        assert httpx.post(f"{node.url}/v1/events", json=event(), headers=node.headers).status_code == 503
        assert (
            httpx.post(
                f"{node.url}/admin/bundle", content=archive_bundle(edge_bundle), headers=AUTH, timeout=120
            ).status_code
            == 200
        )
        (bundle_copy / "serving.json").write_text("{}")  # signed below: verifies, but no node can serve it
        sign_bundle(bundle_copy, load_private_key(signing_keys[0]), {"model_version": "9"})
        refused = httpx.post(f"{node.url}/admin/bundle", content=archive_bundle(bundle_copy), headers=AUTH, timeout=120)
        assert refused.status_code == 400 and "could not be loaded" in refused.json()["detail"]
        assert httpx.get(f"{node.url}/readyz").json()["model_version"] == "7"
    finally:
        node.stop()
