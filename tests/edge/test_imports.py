"""An edge node runs from `pip install .[edge]`: nothing it loads may pull torch, prefect or mlflow,
nor pandas and pyarrow (75 MB of the node's memory for nothing it needs), nor LightGBM (its ONNX
export is what a node serves)."""

import subprocess
import sys


def test_the_edge_runtime_and_cli_load_without_training_libraries():
    code = (
        "import sys, edge.server, edge.node, edge.engine, edge.events, edge.bundle, edge.clients, edge.inputs, edge.protocol, lightpersml.cli; "
        "print(','.join(m for m in ('torch', 'prefect', 'mlflow', 'optuna', 'great_expectations', 'pandas', 'pyarrow', 'lightgbm') "
        "if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
