"""Load test of an edge node on the full Complete Journey bundle, beside the cloud reference.

Starts `lightpersml serve` on 127.0.0.1 twice, one at a time: the edge tier (int8 ONNX, the
version behind alias `edge`) and the cloud reference (the same pipeline's teacher in PyTorch eager
behind the same API). Each is driven open-loop at fixed rates (latency counts from the scheduled
send time, so queueing is included) and then closed-loop to saturation, each `--repeats` times;
the run with the median p99 is reported with every run's p99 beside it. Requests mix known
shoppers, weighted by how often they shop, at their usual store, with 10% unknown shoppers at
stores weighted by traffic. Every shopper is asked once before the timed runs (their first answer
builds their candidates; `first request` reports that cost separately).

The edge node runs from a fresh `pip install .[edge]` (no torch, Prefect or MLflow; its size is
reported), the cloud reference from the project's venv.

Run after `lightpersml run` and `lightpersml promote VERSION` (a throwaway key pair signs the bundles):
  .venv/bin/python benchmarks/edge_load.py [--rates 500,1000,2000] [--seconds 15] [--repeats 3] [--no-edge-venv]
Writes benchmarks/results/edge_load.{json,md}.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import aiohttp
import numpy as np
import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightpersml import config  # noqa: E402

config.apply_environment()

from benchmarks._measure import process_memory_mb, write_results  # noqa: E402

GUESTS = 0.10  # share of requests from shoppers the node has never seen
CONNECTIONS = 64  # client connection pool (open loop); saturation uses SATURATION_CLIENTS in flight
SATURATION_CLIENTS = 32


def request_mix(bundle: Path, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (user_id, store_id) pairs: known shoppers by basket count at their most frequent store,
    plus GUESTS unknown shoppers at stores weighted by their sales."""
    from data_contracts import schema
    from data_contracts.completejourney import load_completejourney
    from edge.bundle import CATALOG, HISTORIES
    from models.baskets import BasketHistory
    from models.catalog import Catalog

    with np.load(bundle / CATALOG) as npz:
        catalog = Catalog.from_state(dict(npz))
    baskets = np.diff(BasketHistory.load(bundle / HISTORIES).user_ptr).astype(float)
    events = load_completejourney().events
    usual = events.groupby(schema.USER_ID)[schema.STORE_ID].agg(lambda s: s.mode().iloc[0]).to_dict()
    rng = np.random.default_rng(seed)
    users = rng.choice(len(baskets), size=n, p=baskets / baskets.sum())
    store_weight = catalog.store_popularity.row_sums()
    stores = rng.choice(len(store_weight), size=n, p=store_weight / store_weight.sum())
    guest = rng.random(n) < GUESTS
    mix = []
    for j in range(n):
        if guest[j]:
            mix.append((f"guest-{j}", str(catalog.store_ids[stores[j]])))
        else:
            user = str(catalog.user_ids[users[j]])
            mix.append((user, str(usual.get(user, catalog.store_ids[stores[j]]))))
    return mix


class Server:
    """`lightpersml serve` in its own process, with one client key (`headers`) allowed any rate."""

    def __init__(
        self,
        python: str,
        bundle: Path,
        public_key: Path,
        runtime: str,
        folder: Path,
        port: int,
        options: tuple[str, ...] = (),
    ):
        """options: more `lightpersml serve` options (e.g. ("--discovery-slots", "2"))."""
        from edge.clients import ClientKeys

        self.url = f"http://127.0.0.1:{port}"
        self.headers = {"X-API-Key": ClientKeys(folder).add("load", rate="10000000/second")[1]}
        self.process = subprocess.Popen(
            [
                python,
                "-m",
                "lightpersml.cli",
                "serve",
                "--bundle",
                str(bundle),
                "--public-key",
                str(public_key),
                "--runtime",
                runtime,
                "--port",
                str(port),
                "--node-dir",
                str(folder),
                *options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(folder.with_suffix(".log"), "wb"),
        )

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("server exited during start-up")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError("server not ready")

    def memory_mb(self) -> dict:
        """The server process's memory (`process_memory_mb`)."""
        return process_memory_mb(self.process.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


class Recorder:
    """Latency and status of every request; latency counts from `since` (sent or scheduled)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str]):
        self.session, self.url, self.headers = session, url, headers
        self.latencies: list[float] = []
        self.statuses: list[int] = []

    async def get(self, user: str, store: str, since: float) -> None:
        try:
            async with self.session.get(
                f"{self.url}/v1/recommendations", params={"user_id": user, "store_id": store}, headers=self.headers
            ) as answer:
                await answer.read()
                status = answer.status
        except (TimeoutError, aiohttp.ClientError):
            status = 0
        self.latencies.append(time.perf_counter() - since)
        self.statuses.append(status)

    def summary(self, seconds: float) -> dict:
        return _summary(self.latencies, self.statuses, seconds)


def _summary(latencies: list[float], statuses: list[int], seconds: float) -> dict:
    ms = np.array(latencies) * 1000
    return {
        "requests": len(statuses),
        "throughput_rps": round(len(statuses) / seconds, 1),
        "errors": int(sum(s != 200 for s in statuses)),
        **{f"p{q}_ms": round(float(np.percentile(ms, q)), 3) for q in (50, 95, 99)},
    }


async def open_loop(server: Server, mix: list[tuple[str, str]], rate: float, seconds: float) -> dict:
    """Send at `rate` per second on schedule whatever the answers do; latency from the scheduled time."""
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        recorder, tasks = Recorder(session, server.url, server.headers), []
        start = time.perf_counter()
        for j in range(int(rate * seconds)):
            due = start + j / rate
            if due > time.perf_counter():
                await asyncio.sleep(due - time.perf_counter())
            tasks.append(asyncio.create_task(recorder.get(*mix[j % len(mix)], since=due)))
        await asyncio.gather(*tasks)
        return {"target_rps": rate, **recorder.summary(time.perf_counter() - start)}


async def closed_loop(
    server: Server, mix: list[tuple[str, str]], seconds: float, clients: int = SATURATION_CLIENTS
) -> dict:
    """`clients` requests always in flight for `seconds`: the node's saturation throughput."""
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        recorder = Recorder(session, server.url, server.headers)
        start = time.perf_counter()

        async def client(j: int):
            while time.perf_counter() < start + seconds:
                await recorder.get(*mix[j % len(mix)], since=time.perf_counter())
                j += clients

        await asyncio.gather(*(client(c) for c in range(clients)))
        return {"target_rps": "saturation", **recorder.summary(time.perf_counter() - start)}


async def first_requests(server: Server, mix: list[tuple[str, str]]) -> dict:
    """Every distinct shopper once, one at a time: the cost of building their candidates."""
    async with aiohttp.ClientSession() as session:
        recorder, seen = Recorder(session, server.url, server.headers), set()
        start = time.perf_counter()
        for user, store in mix:
            if user not in seen:
                seen.add(user)
                await recorder.get(user, store, since=time.perf_counter())
        return {"target_rps": "first request per shopper", **recorder.summary(time.perf_counter() - start)}


def edge_install(folder: Path) -> tuple[str, dict]:
    """Install `.[edge]` into a fresh venv from the package registry: its python and the size of
    what it installed (the edge server of this benchmark then runs from it)."""
    venv = folder / "edge-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    root = Path(__file__).resolve().parents[1]
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{root}[edge]"], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file()) / 2**20
    check = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sys, edge.server, lightpersml.cli; "
            "print(','.join(m for m in ('torch', 'prefect', 'mlflow') if m in sys.modules) or 'none')",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return str(venv / "bin" / "python"), {
        "edge_extra_site_packages_mb": round(size, 1),
        "training_libraries_loaded": check.stdout.strip(),
    }


def main(
    rates: Annotated[str, typer.Option(help="open-loop rates, req/s")] = "500,1000,2000",
    seconds: Annotated[float, typer.Option(help="duration of each run")] = 15.0,
    edge_version: Annotated[str, typer.Option(help="registry version (default: alias edge)")] = "",
    cloud_version: Annotated[str, typer.Option(help="teacher version (default: the edge version's teacher)")] = "",
    repeats: Annotated[int, typer.Option(help="runs per rate; the run with the median p99 is reported")] = 3,
    edge_venv: Annotated[bool, typer.Option(help="serve the edge tier from a fresh `pip install .[edge]`")] = True,
    dataset: Annotated[str, typer.Option(help="whose registered model (lightpersml-DATASET)")] = "completejourney",
) -> None:
    import mlflow
    from edge.bundle import init_keys
    from tracking.bundles import registry_bundle

    client, name = mlflow.MlflowClient(), config.registered_model(dataset)
    edge = (
        client.get_model_version(name, edge_version)
        if edge_version
        else client.get_model_version_by_alias(name, "edge")
    )
    if not cloud_version:
        pipeline = edge.tags.get("pipeline_run_id")
        teachers = [
            v
            for v in client.search_model_versions(f"name = '{name}'")
            if v.tags.get("pipeline_run_id") == pipeline and v.tags.get("teacher") == "true"
        ]
        if not teachers:
            raise SystemExit(f"no teacher version from pipeline run {pipeline}; pass --cloud-version")
        cloud_version = teachers[0].version
    results = {"edge_version": str(edge.version), "cloud_version": str(cloud_version), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        private, public = init_keys(tmp / "keys")
        edge_python = sys.executable
        if edge_venv:
            edge_python, results["install"] = edge_install(tmp)
            print(results["install"], flush=True)
        bundles = {
            "edge": (tmp / "edge-bundle", str(edge.version), "onnx", edge_python),
            "cloud": (tmp / "cloud-bundle", str(cloud_version), "native", sys.executable),
        }
        for folder, version, _, _ in bundles.values():
            registry_bundle(folder, private, name, version=version)
        mix = request_mix(bundles["edge"][0], 20_000)
        gc.collect()
        gc.freeze()  # the data loaded for the mix must not cost this load generator collector pauses
        for name, (folder, version, runtime, python) in bundles.items():
            server = Server(python, folder, public, runtime, tmp / f"node-{name}", 18500 + len(results["runs"]))
            try:
                server.wait_ready()
                phases = [(lambda server=server: first_requests(server, mix), 1)]
                phases += [
                    (lambda rate=rate, server=server: open_loop(server, mix, float(rate), seconds), repeats)
                    for rate in rates.split(",")
                ]
                phases.append((lambda server=server: closed_loop(server, mix, seconds), repeats))
                for phase, times in phases:
                    runs = []
                    for _ in range(times):  # tails on a shared 2-core machine vary from run to run
                        cpu, start = server.cpu_seconds(), time.perf_counter()
                        runs.append(asyncio.run(phase()))
                        runs[-1]["server_cpu_cores"] = round(
                            (server.cpu_seconds() - cpu) / (time.perf_counter() - start), 2
                        )
                    row = sorted(runs, key=lambda r: r["p99_ms"])[len(runs) // 2]
                    row.update(
                        server=name,
                        runtime=runtime,
                        version=version,
                        p99_runs_ms=[r["p99_ms"] for r in runs],
                        **server.memory_mb(),
                    )
                    print(row, flush=True)
                    results["runs"].append(row)
            finally:
                server.stop()
    cloud = {str(r["target_rps"]): r for r in results["runs"] if r["server"] == "cloud"}
    table = []
    for row in results["runs"]:
        reference = cloud.get(str(row["target_rps"]))
        table.append(
            {
                "server": row["server"],
                "load": row["target_rps"],
                "achieved req/s": row["throughput_rps"],
                "p50 ms": row["p50_ms"],
                "p95 ms": row["p95_ms"],
                "p99 ms": row["p99_ms"],
                "p99 of each run": " / ".join(map(str, row["p99_runs_ms"])),
                "errors": row["errors"],
                "server CPU (cores)": row["server_cpu_cores"],
                "RSS MB": row["rss_mb"],
                "peak RSS MB": row["peak_rss_mb"],
                "p99 / cloud": round(row["p99_ms"] / reference["p99_ms"], 3) if reference else "–",
            }
        )
    path = write_results("edge_load", {**results, "seconds_per_rate": seconds}, table)
    print(path.read_text())


if __name__ == "__main__":
    typer.run(main)
