"""Schemathesis (its CLI, `st run`) generates valid and invalid requests for every operation in the
node's OpenAPI schema, admin routes included (with the token and a client key): none may get a 5xx."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.edge.conftest import TOKEN, NodeProcess


def test_no_generated_request_gets_a_server_error(edge_bundle, signing_keys, tmp_path):
    node = NodeProcess(tmp_path, signing_keys[1]).start(edge_bundle)
    try:
        st = Path(sys.executable).with_name("st")
        result = subprocess.run(
            [
                str(st),
                "run",
                f"{node.url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "30",
                "--seed",
                "1",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--header",
                f"X-API-Key: {node.headers['X-API-Key']}",
                "--workers",
                "1",
                "--generation-database",
                "none",
                "--no-color",
                "--report-dir",
                str(tmp_path / "report"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
    finally:
        node.stop()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert generated and int(generated.group(1)) > 100 and generated.group(1) == generated.group(2)
