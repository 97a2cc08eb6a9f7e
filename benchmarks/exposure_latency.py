"""What logging exposures costs an answer: one node, the same bundle, the same shoppers asked one
request at a time and 8 at once over HTTP, first with nothing logged, then during an A/A experiment
(every answer synced to exposures.db before it is sent; with 8 clients the group commit shares one
sync among the answers waiting for it).

Run: .venv/bin/python -m benchmarks.exposure_latency --bundle DIR --public-key FILE [--requests 3000]
(writes benchmarks/results/exposure-latency.{json,md}).
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOKEN = "benchmark-admin-token"


def _ask(url: str, headers: dict, users: list[str], store: str, clients: int) -> list[float]:
    import httpx

    def one(chunk: list[str]) -> list[float]:
        spent = []
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            for user in chunk:
                start = time.perf_counter()
                client.get("/v1/recommendations", params={"user_id": user, "store_id": store}).raise_for_status()
                spent.append((time.perf_counter() - start) * 1000)
        return spent

    with ThreadPoolExecutor(clients) as pool:
        return [ms for part in pool.map(one, [users[i::clients] for i in range(clients)]) for ms in part]


def main(
    bundle: Annotated[Path, typer.Option(help="a signed bundle folder")],
    public_key: Annotated[Path, typer.Option(help="its public key")],
    requests: Annotated[int, typer.Option(help="requests per condition")] = 3000,
) -> None:
    import httpx
    import numpy as np

    from benchmarks._measure import write_results
    from benchmarks.edge_load import Server
    from edge.bundle import load_public_key
    from edge.engine import Engine

    engine = Engine.load(bundle, load_public_key(public_key))
    users = [str(u) for u in engine.catalog.user_ids]
    store = str(engine.catalog.store_ids[0])
    del engine
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "node"
        folder.mkdir()
        (Path(tmp) / "token").write_text(TOKEN)
        server = Server(
            sys.executable, bundle, public_key, "onnx", folder, 18900, ("--admin-token-file", str(Path(tmp) / "token"))
        )
        try:
            server.wait_ready()
            _ask(server.url, server.headers, users, store, 1)  # every shopper once: candidates cached alike
            for label, experiment, clients in (
                ("no exposure logged", False, 1),
                ("no exposure logged, 8 clients at once", False, 8),
                ("A/A experiment: every answer synced first", True, 1),
                ("A/A experiment, 8 clients at once", True, 8),
            ):
                if experiment and not any(r["experiment"] for r in rows):
                    ready = httpx.get(f"{server.url}/readyz").json()
                    started = httpx.post(
                        f"{server.url}/admin/experiment",
                        json={"name": "latency", "treatment_bundle_id": ready["bundle_id"]},
                        headers={"Authorization": f"Bearer {TOKEN}"},
                    )
                    started.raise_for_status()
                asked = list(rng.choice(users, requests))
                began = time.perf_counter()
                spent = _ask(server.url, server.headers, asked, store, clients)
                seconds = time.perf_counter() - began
                rows.append(
                    {
                        "condition": label,
                        "experiment": experiment,
                        "clients": clients,
                        "p50 ms": round(float(np.percentile(spent, 50)), 2),
                        "p99 ms": round(float(np.percentile(spent, 99)), 2),
                        "answers/s": round(requests / seconds),
                    }
                )
                print(rows[-1], flush=True)
        finally:
            server.process.terminate()
            server.process.wait(30)
    path = write_results("exposure-latency", {"bundle": str(bundle), "requests": requests, "rows": rows}, rows)
    print(path.read_text())


if __name__ == "__main__":
    typer.run(main)
