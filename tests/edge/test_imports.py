"""An edge node runs from `pip install .[edge]`: nothing it loads may pull torch, prefect or mlflow,
nor pandas and pyarrow (75 MB of the node's memory for nothing it needs), nor SciPy (23 MB; a
node reads rows of plain arrays, `models.rows`), nor LightGBM (its ONNX export is what a node
serves)."""

import subprocess
import sys


def test_the_edge_runtime_and_cli_load_without_training_libraries():
    code = (
        "import sys, edge.server, edge.node, edge.engine, edge.events, edge.bundle, edge.clients, edge.inputs, edge.protocol, lightpersml.cli; "
        "print(','.join(m for m in ('torch', 'prefect', 'mlflow', 'optuna', 'great_expectations', 'pandas', 'pyarrow', 'lightgbm', 'scipy') "
        "if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""


def test_a_node_answers_and_follows_a_purchase_without_scipy(edge_bundle, signing_keys):
    """Loading a bundle, answering, and rebuilding a shopper after a purchase read only plain arrays."""
    code = f"""
import sys
from datetime import UTC, datetime
from edge.bundle import load_public_key
from edge.engine import Engine, Event
engine = Engine.load({str(edge_bundle)!r}, load_public_key({str(signing_keys[1])!r}))
user = str(engine.catalog.user_ids[0])
before = [r.item_id for r in engine.recommend(user, None, 10).items]
engine.apply([Event(user, str(engine.catalog.item_ids[1]), "purchase", datetime.now(UTC), None, "b1")])
after = engine.recommend(user, None, 10)
assert len(before) == len(after.items) == 10 and after.personalised
print(",".join(m for m in sys.modules if m.split(".")[0] == "scipy"))
"""
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
