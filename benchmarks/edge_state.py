"""An edge node's state costs on the full Complete Journey bundle: restart, bundle swap, event ingest.

For each size of the node's event log (0, 100k and 1M events, written straight into its SQLite log
while the node is stopped; views, cart additions and purchases of real shoppers and items, 10% of
them by shoppers the bundle does not know, dated over the 4 weeks after the bundle's data ends):

1. restart to ready: `lightpersml serve` started as a subprocess without `--bundle` (it serves its
   active bundle) until `GET /readyz` answers 200, `--restarts` times (median reported); the
   server's RSS (VmRSS) and peak (VmHWM) once ready and after 2,000 recommendation requests for
   random known shoppers (each of them read back from the log on their first request);
2. bundle swap: 5 consecutive `POST /admin/bundle` of the .tar.gz of two bundles signed from the
   same serving folder with different model versions, alternating so each swap really swaps; the
   time until each answers 200 and the RSS right after it (and after 500 requests following it);
3. event ingest: `POST /v1/events` of one event per request from one client and from 8 concurrent
   clients, and of batches of 100 and of 1000 events from one client: events/s. These events
   stay in the log (the next size is topped up to its exact count).

Goals stated by the issue: ready in ≤ 3 s with ≤ 250 MB RSS at 1M events; no RSS growth across swaps.

The bundle is built once from the full data with the project's own functions (validate, split,
candidates, one epoch of the edge student, int8 ONNX, serving data) and cached with its key pair
in .lightpersml/bench/edge_state/; the node folder is made fresh there on every run.

  .venv/bin/python benchmarks/edge_state.py [--restarts 3] [--sizes 0,100000,1000000] [--keep-node]
Writes benchmarks/results/edge_state.{json,md}.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import aiohttp
import numpy as np
import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightpersml import config  # noqa: E402

config.apply_environment()

from benchmarks._measure import process_memory_mb, write_results  # noqa: E402

CACHE = config.state_dir() / "bench" / "edge_state"
TOKEN = "bench-admin-token"
TIFU_PARAMS = {"n_neighbors": 50, "group_size": 3}  # the nodes' generator of flows/federate.py
EVENT_MIX = {"view": 0.60, "add_to_cart": 0.25, "purchase": 0.15}
GUESTS, GUEST_IDS = 0.10, 20_000  # share of events by shoppers the bundle does not know, and how many of them
OWN_ITEMS = 0.5  # share of a known shopper's events on items they bought before (the rest: by popularity)
WINDOW = timedelta(days=28)  # events are dated over this long after the bundle's data ends
FILL_BATCH = 10_000
REQUESTS_AFTER_START, REQUESTS_AFTER_SWAP, SWAPS = 2_000, 500, 5
INGEST = {
    "single, 1 client": (1, 1, 2_000),
    "single, 8 clients": (1, 8, 4_000),
    "batch 100, 1 client": (100, 1, 100),
    "batch 1000, 1 client": (1000, 1, 20),
}  # (events/POST, clients, POSTs)


# ---- the bundle -------------------------------------------------------------------------------
def serving_folder() -> Path:
    """A deploy folder from the full data as the pipeline logs it (built once, then cached), with
    each shopper's most frequent store beside it."""
    folder = CACHE / "serving"
    if (folder / "usual_stores.json").exists():
        return folder
    import pandas as pd

    from data_contracts import schema
    from data_contracts.completejourney import load_completejourney
    from data_contracts.validation import validate_dataset
    from models.scorers import RANKER, scorer_spec
    from models.tier_bundle import TierScorer, lay_out
    from splits.temporal import build_splits
    from training.data import RankerSpec, fit_ranker, generator_settings, ranker_data
    from training.distill import STUDENTS
    from training.export import export_onnx, quantize_int8
    from training.tiers import serving_data

    work = CACHE / "build"
    clean, _ = validate_dataset(load_completejourney(), work / "report", **vars(config.ValidationSettings()))
    splits, _ = build_splits(clean, clean.content_hash(), work / "features")
    deploy = splits["deploy"]
    settings = generator_settings(TIFU_PARAMS)
    shared, _ = serving_data(deploy, settings, clean.items, exclude_seen=False, data_hash=clean.content_hash())
    data = ranker_data(deploy, 2, settings, generator=shared.generator)
    spec = RankerSpec(STUDENTS["edge"]["architecture"], lr=3e-3, weight_decay=1e-5, epochs=1)
    model, _ = fit_ranker(spec, data)
    int8 = quantize_int8(
        export_onnx(model, work / "edge.fp32.onnx", data.train.features.shape[1]), work / "edge.int8.onnx"
    )
    staging = CACHE / "serving.partial"
    shutil.rmtree(staging, ignore_errors=True)
    lay_out(shared, TierScorer("edge", scorer_spec(RANKER), int8, ranker_config=model.config), staging)
    usual = clean.events.groupby(schema.USER_ID)[schema.STORE_ID].agg(lambda s: s.mode().iloc[0])
    (staging / "usual_stores.json").write_text(json.dumps({str(k): str(v) for k, v in usual.items() if pd.notna(v)}))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def signed_bundles(serving: Path) -> tuple[Path, list[Path]]:
    """The public key and two bundles of `serving` (model versions 1 and 2), built once."""
    from edge.bundle import PUBLIC_KEY, init_keys, load_private_key
    from models.tier_bundle import sign

    keys = CACHE / "keys"
    if not (keys / PUBLIC_KEY).exists():
        init_keys(keys)
    bundles = []
    for version in ("1", "2"):
        folder = CACHE / f"bundle-v{version}"
        if not (folder / "manifest.sig").exists():
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(serving, folder, ignore=shutil.ignore_patterns("usual_stores.json"))
            sign(
                folder,
                load_private_key(keys / "bundle-signing.key"),
                {"model_version": version, "registered_model": "bench-edge-state"},
            )
        bundles.append(folder)
    return keys / PUBLIC_KEY, bundles


def folder_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file()) / 2**20, 1)


# ---- events -----------------------------------------------------------------------------------
class Shoppers:
    """Who shops and what, from a bundle: known shoppers by how often they shop at their usual
    store, their own past items and the catalog's popular ones; guests at stores by traffic."""

    def __init__(self, bundle_dir: Path, usual_stores: dict[str, str]):
        from edge.bundle import CATALOG, HISTORIES, SERVING
        from models.baskets import BasketHistory
        from models.catalog import Catalog

        with np.load(bundle_dir / CATALOG) as npz:
            catalog = Catalog.from_state(dict(npz))
        history = BasketHistory.load(bundle_dir / HISTORIES)
        self.user_ids = catalog.user_ids.astype(str)
        self.item_ids = catalog.item_ids.astype(str)
        self.store_ids = catalog.store_ids.astype(str)
        baskets = np.diff(history.user_ptr).astype(float)
        self.user_weight = baskets / baskets.sum()
        self.owned = history.user_item_counts().tocsr()
        popularity = np.asarray(catalog.popularity, float)
        self.item_weight = popularity / popularity.sum()
        traffic = catalog.store_popularity.row_sums()
        self.store_weight = traffic / traffic.sum()
        self.usual = [usual_stores.get(u) for u in self.user_ids]
        serving = json.loads((bundle_dir / SERVING).read_text())
        self.data_end = datetime.fromisoformat(serving["trained_until"]).replace(tzinfo=UTC)

    def events(self, n: int, rng: np.random.Generator, tag: str) -> tuple[list, list[str]]:
        """n events after the bundle's data, oldest first, and their event ids."""
        from edge.engine import Event

        start = self.data_end + timedelta(seconds=1)
        end = min(start + WINDOW, datetime.now(UTC) - timedelta(minutes=1))
        moments = np.sort(rng.uniform(start.timestamp(), end.timestamp(), n))
        kinds = rng.choice(list(EVENT_MIX), size=n, p=list(EVENT_MIX.values()))
        users = rng.choice(len(self.user_ids), size=n, p=self.user_weight)
        guests = rng.random(n) < GUESTS
        items = self._items(users, guests, rng)
        stores = rng.choice(len(self.store_ids), size=n, p=self.store_weight)
        out = []
        for j in range(n):
            user = f"guest-{users[j] % GUEST_IDS}" if guests[j] else self.user_ids[users[j]]
            store = (None if guests[j] else self.usual[users[j]]) or self.store_ids[stores[j]]
            moment = datetime.fromtimestamp(moments[j], UTC)
            basket = f"{user}-{moment:%Y%m%d}" if kinds[j] == "purchase" else None  # one trip a day
            out.append(Event(user, self.item_ids[items[j]], str(kinds[j]), moment, store, basket))
        return out, [f"{tag}-{j}" for j in range(n)]

    def _items(self, users: np.ndarray, guests: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        items = rng.choice(len(self.item_ids), size=len(users), p=self.item_weight)
        lo, hi = self.owned.indptr[users], self.owned.indptr[users + 1]
        own = (~guests) & (hi > lo) & (rng.random(len(users)) < OWN_ITEMS)
        picks = lo + (rng.random(len(users)) * (hi - lo)).astype(np.int64)
        items[own] = self.owned.indices[picks[own]]
        return items

    def requests(self, n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
        """n (user_id, store_id) of random known shoppers at their usual store."""
        users = rng.integers(len(self.user_ids), size=n)
        return [(self.user_ids[u], self.usual[u] or self.store_ids[0]) for u in users]


def as_json(event, event_id: str) -> dict:
    return {
        "user_id": event.user_id,
        "item_id": event.item_id,
        "event_type": event.event_type,
        "timestamp": event.timestamp.isoformat(),
        "store_id": event.store_id,
        "basket_id": event.basket_id,
        "event_id": event_id,
    }


def logged_events(node_dir: Path) -> int:
    import sqlite3

    with sqlite3.connect(node_dir / "events.db") as db:
        return db.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def fill_log(node_dir: Path, target: int, shoppers: Shoppers, rng: np.random.Generator) -> float:
    """Append events straight into the (stopped) node's log until it holds `target`; returns seconds."""
    from edge.events import EventLog

    start, log = time.perf_counter(), EventLog(node_dir / "events.db")
    try:
        have = logged_events(node_dir)
        while have < target:
            n = min(FILL_BATCH, target - have)
            log.append(*shoppers.events(n, rng, tag=f"fill{have}"))
            have += n
    finally:
        log.close()
    return time.perf_counter() - start


# ---- the node process -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NodeProcess:
    """`lightpersml serve` on a free port in its own process, stopped by PID."""

    def __init__(self, node_dir: Path, public_key: Path):
        self.node_dir, self.public_key = node_dir, public_key
        self.token_file = node_dir.parent / "admin-token"
        self.token_file.write_text(TOKEN)
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, bundle: Path | None = None, timeout: float = 300) -> float:
        """Start and wait for /readyz 200; returns the seconds from launch to ready."""
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "lightpersml.cli",
            "serve",
            "--node-dir",
            str(self.node_dir),
            "--public-key",
            str(self.public_key),
            "--admin-token-file",
            str(self.token_file),
            "--port",
            str(self.port),
            *(["--bundle", str(bundle)] if bundle else []),
        ]
        start = time.perf_counter()
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(self.node_dir.parent / "node.log", "ab")
        )
        while time.perf_counter() < start + timeout:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"node exited with {self.process.returncode}; see {self.node_dir.parent / 'node.log'}"
                )
            if self.ready() is not None:
                return time.perf_counter() - start
            time.sleep(0.01)
        raise TimeoutError("node not ready")

    def ready(self) -> dict | None:
        """/readyz's answer when it is 200, else None."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", "/readyz")
            answer = connection.getresponse()
            body = answer.read()
            return json.loads(body) if answer.status == 200 else None
        except OSError:
            return None
        finally:
            connection.close()

    def memory_mb(self) -> dict:
        """The server process's memory (`process_memory_mb`)."""
        return process_memory_mb(self.process.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ---- the measurements -------------------------------------------------------------------------
def latency_summary(seconds: list[float], errors: int) -> dict:
    ms = np.array(seconds) * 1000
    return {
        "requests": len(seconds),
        "errors": errors,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


async def recommend(url: str, key: str, pairs: list[tuple[str, str]]) -> dict:
    """One request after another (each shopper's first one reads them back from the log)."""
    latencies, errors = [], 0
    async with aiohttp.ClientSession(headers={"X-API-Key": key}) as session:
        for user, store in pairs:
            start = time.perf_counter()
            async with session.get(f"{url}/v1/recommendations", params={"user_id": user, "store_id": store}) as answer:
                await answer.read()
                errors += answer.status != 200
            latencies.append(time.perf_counter() - start)
    return latency_summary(latencies, errors)


def restarts(node: NodeProcess, key: str, shoppers: Shoppers, count: int, rng: np.random.Generator) -> dict:
    """`count` restarts without --bundle; the last one is left running for the swaps."""
    runs = []
    for j in range(count):
        node.stop()
        seconds = node.start()
        ready = node.memory_mb()
        answers = asyncio.run(recommend(node.url, key, shoppers.requests(REQUESTS_AFTER_START, rng)))
        runs.append(
            {"ready_s": round(seconds, 3), "ready": ready, "after_requests": node.memory_mb(), "requests": answers}
        )
        print(
            f"  restart {j + 1}: ready in {seconds:.2f} s, {ready} → {runs[-1]['after_requests']}; requests {answers}",
            flush=True,
        )
    median = statistics.median(r["ready_s"] for r in runs)
    return {"runs": runs, "median_ready_s": round(median, 3)}


def upload(node: NodeProcess, archive: bytes) -> tuple[float, dict]:
    """POST /admin/bundle; (seconds until its 200 answer, the answer)."""
    import httpx

    start = time.perf_counter()
    answer = httpx.post(
        f"{node.url}/admin/bundle",
        content=archive,
        timeout=600,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"},
    )
    seconds = time.perf_counter() - start
    if answer.status_code != 200:
        raise RuntimeError(f"swap refused: {answer.status_code} {answer.text[:500]}")
    return seconds, answer.json()


def swaps(
    node: NodeProcess, key: str, archives: dict[str, bytes], shoppers: Shoppers, rng: np.random.Generator
) -> dict:
    """SWAPS uploads, each of the bundle not being served; RSS after each and after requests following it."""
    runs = []
    for j in range(SWAPS):
        serving = node.ready()["model_version"]
        version = next(v for v in archives if v != serving)
        seconds, answer = upload(node, archives[version])
        if answer["model_version"] != version:
            raise RuntimeError(f"uploaded version {version}, node serves {answer['model_version']}")
        after_swap = node.memory_mb()
        answers = asyncio.run(recommend(node.url, key, shoppers.requests(REQUESTS_AFTER_SWAP, rng)))
        runs.append(
            {
                "version": version,
                "swap_s": round(seconds, 3),
                "after_swap": after_swap,
                "after_requests": node.memory_mb(),
                "requests": answers,
            }
        )
        print(f"  swap {j + 1} → v{version}: {seconds:.2f} s, {after_swap} → {runs[-1]['after_requests']}", flush=True)
    rss = [r["after_swap"]["rss_mb"] for r in runs]
    return {
        "runs": runs,
        "median_swap_s": round(statistics.median(r["swap_s"] for r in runs), 3),
        "max_swap_s": max(r["swap_s"] for r in runs),
        "rss_growth_mb": round(rss[-1] - rss[0], 1),
    }


async def post_events(url: str, key: str, bodies: list, clients: int) -> dict:
    """POST every body, `clients` at a time; events/s over the whole run."""
    latencies, errors, queue = [], [0], list(reversed(bodies))
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, headers={"X-API-Key": key}) as session:

        async def client():
            while queue:
                body = queue.pop()
                start = time.perf_counter()
                async with session.post(f"{url}/v1/events", json=body) as answer:
                    await answer.read()
                    errors[0] += answer.status != 200
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - start
    events = sum(len(b["events"]) if "events" in b else 1 for b in bodies)
    return {
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds, 1),
        **latency_summary(latencies, errors[0]),
    }


def ingest(node: NodeProcess, key: str, shoppers: Shoppers, rng: np.random.Generator, tag: str) -> dict:
    out = {}
    for name, (size, clients, posts) in INGEST.items():
        events, ids = shoppers.events(size * posts, rng, tag=f"{tag}-{name}")
        bodies = [as_json(e, i) for e, i in zip(events, ids)]
        if size > 1:
            bodies = [{"events": bodies[j : j + size]} for j in range(0, len(bodies), size)]
        out[name] = asyncio.run(post_events(node.url, key, bodies, clients))
        print(f"  ingest {name}: {out[name]}", flush=True)
    return out


def measure_size(
    node: NodeProcess,
    key: str,
    size: int,
    restart_count: int,
    archives: dict[str, bytes],
    shoppers: Shoppers,
    rng: np.random.Generator,
) -> dict:
    """Restarts, swaps and ingest with `size` events in the log (the node is stopped on return)."""
    node.stop()
    filled = fill_log(node.node_dir, size, shoppers, rng)
    result = {
        "log_events": logged_events(node.node_dir),
        "fill_s": round(filled, 1),
        "events_db_mb": round(sum(p.stat().st_size for p in node.node_dir.glob("events.db*")) / 2**20, 1),
    }
    print(f"log: {result}", flush=True)
    try:
        result["restart"] = restarts(node, key, shoppers, restart_count, rng)
        result["swap"] = swaps(node, key, archives, shoppers, rng)
        result["ingest"] = ingest(node, key, shoppers, rng, tag=f"http{size}")
        result["log_events_after"] = logged_events(node.node_dir)
    finally:
        node.stop()
    return result


def import_seconds() -> float:
    """How long a fresh interpreter takes to import what `lightpersml serve` runs (no bundle, no log)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import lightpersml.cli, uvicorn, edge.node, edge.server, edge.protocol"],
        cwd=ROOT,
        check=True,
    )
    return time.perf_counter() - start


def table_row(result: dict) -> dict:
    restart, swap, ingest_ = result["restart"], result["swap"], result["ingest"]
    last = restart["runs"][-1]  # the restart whose server then took the swaps
    return {
        "events in log": f"{result['log_events']:,}",
        "events.db MB": result["events_db_mb"],
        "restart to ready s (each)": f"{restart['median_ready_s']} ({' / '.join(str(r['ready_s']) for r in restart['runs'])})",
        "RSS ready MB (private)": f"{last['ready']['rss_mb']:.0f} ({last['ready']['private_mb']:.0f})",
        "RSS after 2k req MB (private)": (
            f"{last['after_requests']['rss_mb']:.0f} ({last['after_requests']['private_mb']:.0f})"
        ),
        "peak RSS MB": last["after_requests"]["peak_rss_mb"],
        "first-request p50 / p99 ms": f"{last['requests']['p50_ms']} / {last['requests']['p99_ms']}",
        "swap s median (max)": f"{swap['median_swap_s']} ({swap['max_swap_s']})",
        "RSS after swaps 1–5 MB": " / ".join(str(r["after_swap"]["rss_mb"]) for r in swap["runs"]),
        "peak RSS after swaps MB": swap["runs"][-1]["after_requests"]["peak_rss_mb"],
        **{f"ingest {name} ev/s": ingest_[name]["events_per_s"] for name in INGEST},
    }


def main(
    restarts_per_size: Annotated[int, typer.Option("--restarts", help="restarts per log size")] = 3,
    sizes: Annotated[str, typer.Option(help="event-log sizes, ascending")] = "0,100000,1000000",
    keep_node: Annotated[bool, typer.Option(help="keep the node folder (and its log) afterwards")] = False,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    from edge.bundle import archive_bundle
    from edge.clients import ClientKeys

    began = time.perf_counter()
    serving = serving_folder()
    public_key, bundles = signed_bundles(serving)
    archives = {json.loads((b / "manifest.json").read_text())["model_version"]: archive_bundle(b) for b in bundles}
    shoppers = Shoppers(bundles[0], json.loads((serving / "usual_stores.json").read_text()))
    rng = np.random.default_rng(seed)
    results = {
        "bundle_mb": folder_mb(bundles[0]),
        "archive_mb": round(len(next(iter(archives.values()))) / 2**20, 1),
        "shoppers": len(shoppers.user_ids),
        "items": len(shoppers.item_ids),
        "bundle_data_ends": shoppers.data_end.isoformat(),
        "event_mix": EVENT_MIX,
        "guest_share": GUESTS,
        "import_s": round(import_seconds(), 2),
        "sizes": [],
    }
    print({k: v for k, v in results.items() if k != "sizes"}, flush=True)
    run = CACHE / "run"
    shutil.rmtree(run, ignore_errors=True)
    (run / "node").mkdir(parents=True)
    _, key = ClientKeys(run / "node").add("bench", rate="1000000/second")
    node = NodeProcess(run / "node", public_key)
    try:
        results["first_start_with_bundle_s"] = round(node.start(bundles[0]), 3)
        for size in map(int, sizes.split(",")):
            results["sizes"].append(measure_size(node, key, size, restarts_per_size, archives, shoppers, rng))
    finally:
        node.stop()
        if not keep_node:
            shutil.rmtree(run, ignore_errors=True)
    results["total_s"] = round(time.perf_counter() - began, 1)
    path = write_results("edge_state", results, [table_row(r) for r in results["sizes"]])
    print(path.read_text())
    print(f"total {results['total_s']} s")


if __name__ == "__main__":
    typer.run(main)
