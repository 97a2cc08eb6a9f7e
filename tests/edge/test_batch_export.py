"""Batch export is the node: `lightpersml recommend` on a bundle folder and a real node serving the
same bundle give the same top-k, item for item, for the same requests."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
from typer.testing import CliRunner

from edge.bundle import CATALOG
from lightpersml.cli import app
from models.catalog import Catalog
from tests.edge.conftest import NodeProcess


def requests_for(bundle) -> pd.DataFrame:
    """Known shoppers at stores that stock something, a shopper without a store, a new shopper and
    an unknown store: every branch of the engine's answer."""
    with np.load(bundle / CATALOG) as npz:
        catalog = Catalog.from_state(dict(npz))
    stocked = catalog.store_ids[np.argsort(-np.diff(catalog.in_stock.indptr), kind="stable")[:5]]
    users = catalog.user_ids[:: max(1, len(catalog.user_ids) // 25)][:25]
    rows = [(str(u), str(stocked[j % len(stocked)])) for j, u in enumerate(users)]
    rows += [(str(users[0]), None), ("someone-new", str(stocked[0])), (str(users[1]), "no-such-store")]
    return pd.DataFrame(rows, columns=["user_id", "store_id"])


def test_recommend_and_a_real_node_return_identical_top_k(tmp_path, edge_bundle, signing_keys):
    requests = requests_for(edge_bundle)
    requests.to_csv(tmp_path / "requests.csv", index=False)
    out = tmp_path / "recs.csv"
    result = CliRunner().invoke(
        app,
        [
            "recommend",
            "--model",
            str(edge_bundle),
            "--requests",
            str(tmp_path / "requests.csv"),
            "--public-key",
            str(signing_keys[1]),
            "--out",
            str(out),
            "--k",
            "10",
        ],
    )
    assert result.exit_code == 0, result.output
    exported = pd.read_csv(out, dtype={"user_id": str, "store_id": str, "item_id": str})
    (tmp_path / "node-home").mkdir()
    node = NodeProcess(tmp_path / "node-home", signing_keys[1]).start(edge_bundle)
    try:
        for request in requests.itertuples(index=False):
            store = None if pd.isna(request.store_id) else request.store_id
            # A node always takes a store; one it does not know is answered as no store is in a batch.
            params = {"user_id": request.user_id, "k": 10, "store_id": store or "no-such-store"}
            answer = httpx.get(f"{node.url}/v1/recommendations", params=params, headers=node.headers, timeout=30)
            assert answer.status_code == 200, answer.text
            served = [(item["item_id"], item["score"]) for item in answer.json()["items"]]
            rows = exported[
                (exported["user_id"] == request.user_id) & (exported["store_id"].fillna("") == (store or ""))
            ].sort_values("rank")
            assert rows["item_id"].tolist() == [item for item, _ in served], request
            assert np.allclose(rows["score"].to_numpy(), [score for _, score in served], atol=1e-6), request
            assert len(served) == 10, request
    finally:
        node.stop()
