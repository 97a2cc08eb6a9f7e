"""Helpers shared by benchmarks: stage timing with peak resident memory, and result files."""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Resident set size of this process now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def process_memory_mb(pid: int) -> dict[str, float]:
    """A process's memory in MiB: rss_mb (VmRSS) and peak_rss_mb (VmHWM), and RSS split into
    private_mb (RssAnon: its own allocations) and file_mb (RssFile: pages of files it maps, such as
    libraries and a bundle's memory-mapped arrays: shared, and dropped by the kernel when short)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return {
        "rss_mb": fields["VmRSS"],
        "peak_rss_mb": fields["VmHWM"],
        "private_mb": fields["RssAnon"],
        "file_mb": fields["RssFile"],
    }


class Stages:
    """Times named stages and samples RSS every 20 ms to report each stage's peak."""

    def __init__(self):
        self.rows: list[dict] = []

    @contextmanager
    def stage(self, name: str):
        peak, stop = [rss_mb()], threading.Event()

        def sample():
            while not stop.wait(0.02):
                peak[0] = max(peak[0], rss_mb())

        sampler = threading.Thread(target=sample, daemon=True)
        start_rss, start = rss_mb(), time.perf_counter()
        sampler.start()
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            stop.set()
            sampler.join()
            self.rows.append(
                {
                    "stage": name,
                    "seconds": round(seconds, 2),
                    "rss_before_mb": round(start_rss),
                    "peak_rss_mb": round(max(peak[0], rss_mb())),
                }
            )


def write_results(name: str, payload: dict, table: list[dict]) -> Path:
    """Write results/<name>.json (payload + machine) and results/<name>.md (the table)."""
    RESULTS.mkdir(exist_ok=True)
    payload = {
        **payload,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
    columns = list(table[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in table]
    (RESULTS / f"{name}.md").write_text(f"# {name}\n\n" + "\n".join(lines) + "\n")
    return RESULTS / f"{name}.md"
