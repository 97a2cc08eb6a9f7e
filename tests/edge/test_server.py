"""The edge node as a real process (`lightpersml serve` on 127.0.0.1, stopped by PID): the API,
admin protection, refused and accepted bundle swaps under load, and durability across kill -9."""

from __future__ import annotations

import signal
import threading

import httpx
import pytest

from edge.bundle import archive_bundle
from tests.edge.conftest import TOKEN, NodeProcess, build_bundle

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def node(tmp_path, edge_bundle, signing_keys):
    process = NodeProcess(tmp_path, signing_keys[1]).start(edge_bundle)
    yield process
    process.stop()


@pytest.fixture(scope="module", autouse=True)
def known_ids(edge_bundle):
    import numpy as np

    from edge.bundle import CATALOG, HISTORIES
    from models.baskets import BasketHistory
    from models.catalog import Catalog

    global SHOPPER, STORE
    with np.load(edge_bundle / CATALOG) as npz:
        catalog = Catalog.from_state(dict(npz))
    history = BasketHistory.load(edge_bundle / HISTORIES)
    SHOPPER = str(catalog.user_ids[int(np.argmax(np.diff(history.user_ptr)))])
    STORE = str(catalog.store_ids[int(np.argmax(np.diff(catalog.in_stock.indptr)))])


def recommend(node: NodeProcess, **params) -> httpx.Response:
    return httpx.get(
        f"{node.url}/v1/recommendations",
        params={"user_id": SHOPPER, "store_id": STORE, **params},
        headers=node.headers,
        timeout=10,
    )


def post_events(node: NodeProcess, **request) -> httpx.Response:
    return httpx.post(f"{node.url}/v1/events", headers={**node.headers, **request.pop("headers", {})}, **request)


def test_recommendations_events_health_and_metrics(node):
    answer = recommend(node)
    assert answer.status_code == 200
    body = answer.json()
    assert body["model_version"] == "7" and body["known_user"] and not body["cold_start"]
    assert len(body["items"]) == 10 and all(item["reason"] for item in body["items"])
    top = body["items"][0]["item_id"]

    event = {"user_id": SHOPPER, "item_id": top, "event_type": "add_to_cart", "store_id": STORE}
    assert post_events(node, json=event).json() == {"accepted": 1, "new": 1}
    assert top not in {item["item_id"] for item in recommend(node).json()["items"]}  # the next answer knows
    batch = {"events": [{**event, "event_type": "view", "event_id": f"e{i}"} for i in range(3)]}
    assert post_events(node, json=batch).json() == {"accepted": 3, "new": 3}
    assert post_events(node, json=batch).json() == {"accepted": 3, "new": 0}  # a retry

    timed = recommend(node, at="2017-06-01T10:00:00+02:00")  # a backtest asks at a basket's time
    assert timed.status_code == 200 and len(timed.json()["items"]) == 10

    cold = recommend(node, user_id="someone-new", k=3).json()
    assert cold["cold_start"] and [i["reason"] for i in cold["items"]] == ["popular in this store"] * 3
    unknown_store = recommend(node, store_id="no-such-store").json()
    assert unknown_store["known_store"] is False and len(unknown_store["items"]) == 10

    assert httpx.get(f"{node.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{node.url}/readyz").json()
    assert ready["ready"] and ready["model_version"] == "7" and ready["bundle_id"].startswith("v7-")
    metrics = httpx.get(f"{node.url}/metrics").text
    for name in (
        "lightpersml_requests_total",
        "lightpersml_request_seconds_bucket",
        "lightpersml_errors_total",
        'lightpersml_model_info{bundle_id="v7-',
        "lightpersml_bundle_age_seconds",
        "lightpersml_events_total",
    ):
        assert name in metrics
    assert httpx.get(f"{node.url}/openapi.json").json()["paths"]["/v1/recommendations"]


@pytest.mark.parametrize(
    "params",
    [
        {"k": 0},
        {"k": 101},
        {"k": "ten"},
        {"k": "²"},
        {"k": "9" * 5000},
        {"store_id": ""},
        {"user_id": "x" * 200},
        {"k": "5.0"},
        {"k": "+10"},
        {"k": ["5", "6"]},
        {"user_id": ["a", "b"]},
        {"exclude": "x" * 10_000},
        {"recent": "a\x00b"},
        {"at": "2100-01-01T00:00:00Z"},
        {"at": "yesterday"},
        {"at": ["2017-01-01", "2017-01-02"]},
    ],
)
def test_bad_requests_get_a_clear_4xx(node, params):
    response = recommend(node, **params)
    assert response.status_code == 422 and response.json()["detail"]


def test_bad_events_get_a_clear_4xx_and_nothing_is_logged(node):
    for body in ({"user_id": "u", "item_id": "i", "event_type": "like"}, {"events": []}, {"user_id": "u"}, [1, 2]):
        assert post_events(node, json=body).status_code == 422
    assert post_events(node, content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert httpx.get(f"{node.url}/admin/events", headers=AUTH).json()["events"] == []


def test_admin_needs_the_bearer_token(node):
    assert httpx.post(f"{node.url}/admin/rollback").status_code == 401
    assert (
        httpx.post(f"{node.url}/admin/bundle", content=b"x", headers={"Authorization": "Bearer wrong"}).status_code
        == 401
    )
    assert httpx.get(f"{node.url}/admin/anything-at-all").status_code == 401
    assert httpx.get(f"{node.url}/admin/events", headers=AUTH).status_code == 200


def test_a_tampered_bundle_is_refused_and_a_good_one_swapped_in_under_load(
    node, serving_dir, signing_keys, bundle_copy, tmp_path
):
    statuses, stop = [], threading.Event()

    def shop():
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                statuses.append(
                    client.get(
                        f"{node.url}/v1/recommendations",
                        headers=node.headers,
                        params={"user_id": SHOPPER, "store_id": STORE},
                    ).status_code
                )

    shoppers = [threading.Thread(target=shop) for _ in range(4)]
    for thread in shoppers:
        thread.start()
    try:
        with open(bundle_copy / "catalog.npz", "ab") as f:
            f.write(b"tampered")
        refused = httpx.post(f"{node.url}/admin/bundle", content=archive_bundle(bundle_copy), headers=AUTH, timeout=120)
        assert refused.status_code == 400 and "catalog.npz does not match its SHA-256" in refused.json()["detail"]
        assert httpx.get(f"{node.url}/readyz").json()["model_version"] == "7"
        assert httpx.post(f"{node.url}/admin/bundle", content=b"not a tarball", headers=AUTH).status_code == 400

        v8 = build_bundle(serving_dir, signing_keys[0], tmp_path / "v8", "8")
        swapped = httpx.post(f"{node.url}/admin/bundle", content=archive_bundle(v8), headers=AUTH, timeout=120)
        assert swapped.status_code == 200 and swapped.json()["model_version"] == "8"
        assert recommend(node).json()["model_version"] == "8"
        rolled = httpx.post(f"{node.url}/admin/rollback", headers=AUTH, timeout=120)
        assert rolled.status_code == 200 and rolled.json()["model_version"] == "7"
    finally:
        stop.set()
        for thread in shoppers:
            thread.join()
    assert len(statuses) > 20 and set(statuses) == {200}


def test_acknowledged_events_survive_kill_9(node):
    answer = recommend(node).json()
    carted = [item["item_id"] for item in answer["items"][:2]]
    for i, item in enumerate(carted * 10):
        response = post_events(
            node,
            json={
                "user_id": SHOPPER,
                "item_id": item,
                "event_type": "add_to_cart",
                "store_id": STORE,
                "event_id": f"k{i}",
            },
        )
        assert response.status_code == 200
    node.stop(signal.SIGKILL)
    node.start()  # no --bundle: the node comes back with its active bundle and its event log
    logged = httpx.get(f"{node.url}/admin/events", headers=AUTH, params={"limit": 100}).json()["events"]
    assert [e["event_id"] for e in logged] == [f"k{i}" for i in range(20)]
    assert not set(carted) & {item["item_id"] for item in recommend(node).json()["items"]}  # replayed into state
