"""Live stock against a real node process: an item marked out of stock leaves the next answer,
the push survives a restart, needs the admin token, and ids the bundle does not know are reported."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from edge.bundle import load_public_key
from edge.engine import Engine
from edge.stock import LiveStock
from lightpersml.cli import app
from tests.edge.conftest import TOKEN, NodeProcess

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def recommended(node: NodeProcess, user: str, store: str) -> list[str]:
    with node.client() as client:
        answer = client.get("/v1/recommendations", params={"user_id": user, "store_id": store, "k": 10})
    assert answer.status_code == 200, answer.text
    return [item["item_id"] for item in answer.json()["items"]]


@pytest.fixture
def node(tmp_path, edge_bundle, signing_keys):
    process = NodeProcess(tmp_path, signing_keys[1]).start(edge_bundle)
    yield process
    process.stop()


def push(node: NodeProcess, changes: list[dict], headers=AUTH) -> httpx.Response:
    return httpx.put(f"{node.url}/admin/stock", json={"changes": changes}, headers=headers, timeout=30)


def test_an_item_marked_out_of_stock_leaves_the_next_answer_and_stays_out_after_a_restart(node, tmp_path, busy_shopper):
    user, store = busy_shopper
    first = recommended(node, user, store)
    gone = first[:3]
    assert push(node, [{"store_id": store, "item_id": gone[0], "in_stock": False}], headers={}).status_code == 401
    response = push(
        node,
        [{"store_id": store, "item_id": item, "in_stock": False} for item in gone]
        + [{"store_id": "no-such-store", "item_id": gone[0], "in_stock": False}],
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"applied": 3, "unknown_stores": ["no-such-store"], "ignored": 1}
    after = recommended(node, user, store)
    assert not set(gone) & set(after) and len(after) == 10  # the very next request
    assert set(recommended(node, user, "no-such-store")) & set(gone)  # only that store's stock changed
    node.stop()
    node.start()  # from its state folder: the pushed stock is read back
    assert not set(gone) & set(recommended(node, user, store))
    nodes = tmp_path / "nodes.toml"
    nodes.write_text(f'[[nodes]]\nname = "store"\nurl = "{node.url}"\ntoken = "{TOKEN}"\n')
    stock = tmp_path / "stock.csv"
    stock.write_text(f"store_id,item_id,in_stock\n{store},{gone[0]},maybe\n")
    refused = CliRunner().invoke(app, ["stock", str(stock), "--nodes", str(nodes)])
    assert refused.exit_code == 1 and "column in_stock" in refused.output and "lines 2" in refused.output
    stock.write_text(f"store_id,item_id,in_stock\n{store},{gone[0]},true\n")
    pushed = CliRunner().invoke(app, ["stock", str(stock), "--nodes", str(nodes)])
    assert pushed.exit_code == 0 and "store: updated, 1 applied" in pushed.output, pushed.output
    assert gone[0] in recommended(node, user, store)  # back in stock, back in the answer


def test_a_malformed_or_oversized_stock_push_is_refused_and_changes_nothing(node, busy_shopper):
    user, store = busy_shopper
    before = recommended(node, user, store)
    for body in (
        {"changes": []},
        {"changes": [{"store_id": store, "item_id": before[0], "in_stock": "maybe"}]},
        {"changes": [{"store_id": store, "item_id": before[0], "in_stok": False}]},
        {"changes": [{"store_id": store, "item_id": "x" * 500, "in_stock": False}]},
    ):
        response = httpx.put(f"{node.url}/admin/stock", json=body, headers=AUTH, timeout=30)
        assert response.status_code == 422, (body, response.text)
    assert recommended(node, user, store) == before
    assert LiveStock(node.node_dir / "stock.db").newer_than(0.0) == {}


def test_pushes_are_kept_across_reopening_and_those_older_than_a_bundle_do_not_apply_to_it(tmp_path):
    live = LiveStock(tmp_path / "stock.db")
    live.push({("s1", "i1"): False}, at=100.0)
    live.push({("s1", "i2"): False, ("s1", "i1"): True}, at=200.0)
    again = LiveStock(tmp_path / "stock.db")  # as a restarted node opens it
    assert again.newer_than(150.0) == {("s1", "i2"): False, ("s1", "i1"): True}
    assert again.newer_than(50.0) == again.newer_than(150.0)  # the newest push of a pair wins
    assert again.newer_than(250.0) == {}  # a bundle whose data ends later has newer stock


def test_a_store_with_nothing_left_in_stock_is_offered_nothing_not_other_stores_best_sellers(
    bundle_copy, signing_keys, busy_shopper
):
    user, store = busy_shopper
    engine = Engine.load(bundle_copy, load_public_key(signing_keys[1]))
    assert len(engine.recommend(user, store, 10).items) == 10
    stock = engine.catalog.in_stock
    row = engine.store_index[store]
    items = engine.catalog.item_ids[stock.indices[stock.indptr[row] : stock.indptr[row + 1]]]
    assert engine.restock({(store, str(item)): False for item in items}) == len(items)
    assert engine.recommend(user, store, 10).items == []  # the global fill is held to the store's stock too
    assert len(engine.recommend(user, None, 10).items) == 10  # no store: no stock filter
