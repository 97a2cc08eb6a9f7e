"""Purchase-then-recommend through a real edge node on the full Complete Journey bundle.

A visit is what a shop's checkout then home page does: POST /v1/events with the shopper's basket
(`BASKET` purchases of their own past items and popular ones, one basket id), then GET
/v1/recommendations for that shopper at the basket's time, whose answer must follow the purchase
(the node folds the purchase into that shopper's statistics). Measured, each `--repeats` times (median-p99 run shown):

1. saturation: `--clients` visits always in flight for `--seconds`: visits (shoppers) per second;
2. open loop at `--rate` visits/s (latency from the scheduled time, so queueing counts): the GET's
   p99 after a purchase, beside the p99 of reads of *other* shoppers sent at `--reads` req/s at
   the same time (they must not wait for the purchases' work).

Goals stated by the issue: ≥ 500 shoppers/s, and GET p99 ≤ 10 ms at 200 shoppers/s.

  .venv/bin/python benchmarks/purchase_load.py [--rate 200] [--reads 500] [--clients 16] [--seconds 15] [--settle 35]
Writes benchmarks/results/purchase_load.{json,md}. Bundle and keys: those of benchmarks/edge_state.py.
"""

from __future__ import annotations

import asyncio
import json
import shutil
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

from benchmarks._measure import write_results  # noqa: E402
from benchmarks.edge_state import CACHE, NodeProcess, Shoppers, latency_summary, serving_folder, signed_bundles  # noqa: E402

BASKET = 8  # purchase lines per visit
OWN_SHARE = 0.6  # of them, the shopper's own past items (the rest: by popularity)


class Visits:
    """Visits of known shoppers, each dated one minute after the previous one (so every basket is
    newer than the last, as at a real till), starting just after the bundle's data ends."""

    def __init__(self, shoppers: Shoppers, seed: int):
        self.shoppers, self.rng = shoppers, np.random.default_rng(seed)
        self.moment = shoppers.data_end + timedelta(hours=1)
        self.count = 0

    def next(self) -> tuple[dict, dict]:
        """(POST body, GET params) of one visit."""
        s, rng = self.shoppers, self.rng
        user = int(rng.choice(len(s.user_ids), p=s.user_weight))
        lo, hi = s.owned.indptr[user], s.owned.indptr[user + 1]
        own = s.owned.indices[rng.integers(lo, hi, size=BASKET)] if hi > lo else np.zeros(0, int)
        popular = rng.choice(len(s.item_ids), size=BASKET, p=s.item_weight)
        items = np.unique(np.where(rng.random(BASKET) < OWN_SHARE, own, popular) if len(own) else popular)
        self.moment += timedelta(minutes=1)
        self.count += 1
        user_id, store = s.user_ids[user], s.usual[user] or s.store_ids[0]
        when = self.moment.isoformat()
        basket = f"visit-{self.count}"
        events = [
            {
                "user_id": user_id,
                "item_id": s.item_ids[item],
                "event_type": "purchase",
                "timestamp": when,
                "store_id": store,
                "basket_id": basket,
                "event_id": f"{basket}-{item}",
            }
            for item in items
        ]
        return {"events": events}, {"user_id": user_id, "store_id": store, "at": when}


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str):
        self.session, self.url = session, url
        self.visit_s: list[float] = []
        self.get_s: list[float] = []
        self.read_s: list[float] = []
        self.errors = 0

    async def visit(self, body: dict, params: dict, since: float) -> None:
        async with self.session.post(f"{self.url}/v1/events", json=body) as answer:
            await answer.read()
            self.errors += answer.status != 200
        start = time.perf_counter()
        async with self.session.get(f"{self.url}/v1/recommendations", params=params) as answer:
            await answer.read()
            self.errors += answer.status != 200
        done = time.perf_counter()
        self.get_s.append(done - start)
        self.visit_s.append(done - since)

    async def read(self, params: dict, since: float) -> None:
        async with self.session.get(f"{self.url}/v1/recommendations", params=params) as answer:
            await answer.read()
            self.errors += answer.status != 200
        self.read_s.append(time.perf_counter() - since)

    def summary(self, load: str, seconds: float) -> dict:
        """Shoppers/s over `seconds` and the latencies of visits and of their GETs (reads, if any)."""
        return {
            "load": load,
            "shoppers_per_s": round(len(self.visit_s) / seconds, 1),
            "visit": latency_summary(self.visit_s, self.errors),
            "get_after_purchase": latency_summary(self.get_s, 0),
            **({"reads_of_others": latency_summary(self.read_s, 0)} if self.read_s else {}),
        }


async def saturation(url: str, key: str, visits: Visits, clients: int, seconds: float) -> dict:
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, headers={"X-API-Key": key}) as session:
        client, start = Client(session, url), time.perf_counter()

        async def loop():
            while time.perf_counter() < start + seconds:
                await client.visit(*visits.next(), since=time.perf_counter())

        await asyncio.gather(*(loop() for _ in range(clients)))
        return client.summary(f"saturation, {clients} clients", time.perf_counter() - start)


async def open_loop(
    url: str, key: str, visits: Visits, reads: list[dict], rate: float, read_rate: float, seconds: float
):
    """Visits at `rate`/s and reads of other shoppers at `read_rate`/s, each on schedule."""
    connector = aiohttp.TCPConnector(limit=128)
    async with aiohttp.ClientSession(connector=connector, headers={"X-API-Key": key}) as session:
        client, tasks = Client(session, url), []
        start = time.perf_counter()
        schedule = sorted(
            [(j / rate, "visit") for j in range(int(rate * seconds))]
            + [(j / read_rate, "read") for j in range(int(read_rate * seconds))]
        )
        for n, (offset, kind) in enumerate(schedule):
            due = start + offset
            if due > time.perf_counter():
                await asyncio.sleep(due - time.perf_counter())
            job = (
                client.visit(*visits.next(), since=due) if kind == "visit" else client.read(reads[n % len(reads)], due)
            )
            tasks.append(asyncio.create_task(job))
        await asyncio.gather(*tasks)
        return client.summary(f"{rate:g} shoppers/s + {read_rate:g} reads/s", time.perf_counter() - start)


def main(
    rate: Annotated[float, typer.Option(help="open-loop visits (shoppers) per second")] = 200.0,
    reads: Annotated[float, typer.Option(help="reads of other shoppers per second beside them")] = 500.0,
    clients: Annotated[int, typer.Option(help="visits in flight at saturation")] = 16,
    seconds: Annotated[float, typer.Option(help="duration of each run")] = 15.0,
    repeats: Annotated[int, typer.Option(help="runs per load; the median-p99 run is reported")] = 3,
    seed: Annotated[int, typer.Option()] = 0,
    settle: Annotated[float, typer.Option(help="seconds idle after each load before memory is read again")] = 35.0,
) -> None:
    from edge.clients import ClientKeys

    serving = serving_folder()
    public_key, bundles = signed_bundles(serving)
    shoppers = Shoppers(bundles[0], json.loads((serving / "usual_stores.json").read_text()))
    visits = Visits(shoppers, seed)
    # Reads are of shoppers who do not visit in this run, each asked once beforehand (their cached answer).
    rng = np.random.default_rng(seed + 1)
    others = [
        {"user_id": user, "store_id": store, "at": (shoppers.data_end + timedelta(hours=1)).isoformat()}
        for user, store in shoppers.requests(2_000, rng)
    ]
    run = CACHE / "purchase-run"
    shutil.rmtree(run, ignore_errors=True)
    (run / "node").mkdir(parents=True)
    _, key = ClientKeys(run / "node").add("bench", rate="1000000/second")
    node = NodeProcess(run / "node", public_key)
    results = {"basket_lines": BASKET, "bundle": str(bundles[0]), "runs": []}
    try:
        node.start(bundles[0])
        asyncio.run(warm(node.url, key, others))
        for job in (
            lambda: saturation(node.url, key, visits, clients, seconds),
            lambda: open_loop(node.url, key, visits, others, rate, reads, seconds),
        ):
            runs = [asyncio.run(job()) for _ in range(repeats)]
            row = sorted(runs, key=lambda r: r["get_after_purchase"]["p99_ms"])[len(runs) // 2]
            row.update(node.memory_mb(), p99_runs_ms=[r["get_after_purchase"]["p99_ms"] for r in runs])
            time.sleep(settle)  # the node hands freed heap back every 30 s (edge.node.TRIM_EVERY_S)
            row["settled"] = node.memory_mb()
            print(row, flush=True)
            results["runs"].append(row)
    finally:
        node.stop()
        shutil.rmtree(run, ignore_errors=True)
    results["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    table = [
        {
            "load": r["load"],
            "shoppers/s": r["shoppers_per_s"],
            "visit p50 / p99 ms": f"{r['visit']['p50_ms']} / {r['visit']['p99_ms']}",
            "GET after purchase p50 / p99 ms": f"{r['get_after_purchase']['p50_ms']} / {r['get_after_purchase']['p99_ms']}",
            "p99 of each run": " / ".join(map(str, r["p99_runs_ms"])),
            "reads of others p50 / p99 ms": (
                f"{r['reads_of_others']['p50_ms']} / {r['reads_of_others']['p99_ms']}"
                if "reads_of_others" in r
                else "–"
            ),
            "errors": r["visit"]["errors"],
            "RSS MB (private)": f"{r['rss_mb']:.0f} ({r['private_mb']:.0f})",
            "idle after, RSS MB (private)": f"{r['settled']['rss_mb']:.0f} ({r['settled']['private_mb']:.0f})",
        }
        for r in results["runs"]
    ]
    path = write_results("purchase_load", results, table)
    print(path.read_text())


async def warm(url: str, key: str, reads: list[dict]) -> None:
    async with aiohttp.ClientSession(headers={"X-API-Key": key}) as session:
        client = Client(session, url)
        for params in reads:
            await client.read(params, time.perf_counter())


if __name__ == "__main__":
    typer.run(main)
