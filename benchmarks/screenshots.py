"""Screenshots of what a person sees in the MLflow UI after a pipeline run, in headless Chromium.

Run: .venv/bin/python benchmarks/screenshots.py [--home PROJECT_HOME] [--out benchmarks/results/screenshots]
(Debian's `chromium` on PATH). Starts `lightpersml ui` on a free port for the project at HOME,
finds the newest training run, and saves: the parent run (description, gate results), the
compare view of its tier runs, the registered model with its versions and aliases, and the
Pareto plot artifact. Writes the PNGs and an index (screenshots.md) with the URLs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shoot(url: str, path: Path, width: int = 1600, height: int = 1100, wait_ms: int = 12000) -> None:
    """One full-window screenshot of `url` after `wait_ms` of (virtual) time for the SPA to render."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("no chromium on PATH (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        _run_browser(browser, profile, url, path, width, height, wait_ms)


def _run_browser(browser: str, profile: str, url: str, path: Path, width: int, height: int, wait_ms: int) -> None:
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            # no connections out (this machine refuses them) and a fresh profile every time
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={path}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )


def main(
    home: Annotated[Path, typer.Option(help="the project's home (LIGHTPERSML_HOME)")] = ROOT,
    out: Annotated[Path, typer.Option(help="folder for the PNGs")] = ROOT / "benchmarks/results/screenshots",
) -> None:
    os.environ["LIGHTPERSML_HOME"] = str(home.resolve())
    from lightpersml import config

    config.apply_environment()
    import mlflow

    out.mkdir(parents=True, exist_ok=True)
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.kind = 'pipeline' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
        max_results=1,
    )
    if not runs:
        raise SystemExit(f"no finished pipeline run in {config.mlflow_tracking_uri()}")
    parent = runs[0]
    experiment = parent.info.experiment_id
    children = mlflow.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", output_format="list"
    )
    tiers = [r.info.run_id for r in children if "tier" in r.data.tags]
    model = f"lightpersml-{parent.data.tags['dataset']}"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "lightpersml.cli", "ui", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the MLflow UI did not start")
            time.sleep(0.5)
        compare = "%5B" + "%2C".join(f"%22{r}%22" for r in tiers) + "%5D"
        view = "workflowType=machine_learning"  # the UI opens in its GenAI view unless a link asks
        pages = {
            "parent-run.png": f"{base}/#/experiments/{experiment}/runs/{parent.info.run_id}?{view}",
            "experiment-runs.png": f"{base}/#/experiments/{experiment}?{view}",
            "compare-tiers.png": f"{base}/#/compare-runs?runs={compare}&experiments=%5B%22{experiment}%22%5D&{view}",
            "registered-model.png": f"{base}/#/models/{model}?{view}",
            "pareto-artifact.png": f"{base}/#/experiments/{experiment}/runs/{parent.info.run_id}/artifacts/pareto.png?{view}",
        }
        lines = ["| screenshot | page |", "|---|---|"]
        for name, url in pages.items():
            shoot(url, out / name)
            lines.append(f"| `{name}` | {url.replace(base, '')} |")
        local = mlflow.artifacts.download_artifacts(f"runs:/{parent.info.run_id}/pareto.png", dst_path=str(out))
        lines.append(f"| `{Path(local).name}` | the parent run's Pareto plot itself (150 dpi) |")
        (out / "screenshots.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    typer.run(main)
