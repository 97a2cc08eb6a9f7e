"""A real signed edge bundle, built once per session from the Complete Journey slice: the deploy
split's candidates, an int8 edge ranker trained for one epoch, the serving data, signed with a
fresh key pair. Built by the same functions the pipeline and `lightpersml bundle` use."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lightpersml import config

TOKEN = "test-admin-token"


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory) -> tuple[Path, Path]:
    from edge.bundle import init_keys

    return init_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def serving_dir(cj_slice, tmp_path_factory) -> Path:
    """A deploy folder as the pipeline logs it: the edge tier's bundle files, unsigned."""
    from data_contracts.sources import load_source
    from data_contracts.validation import validate_dataset
    from models.scorers import RANKER, scorer_spec
    from models.tier_bundle import TierScorer, lay_out
    from splits.temporal import build_splits
    from training.data import RankerSpec, fit_ranker, generator_settings, ranker_data
    from training.distill import STUDENTS
    from training.export import export_onnx, quantize_int8
    from training.tiers import serving_data

    tmp = tmp_path_factory.mktemp("serving")
    clean, _ = validate_dataset(load_source(str(cj_slice)), tmp / "report", **vars(config.ValidationSettings()))
    splits, _ = build_splits(clean, clean.content_hash(), tmp / "features")
    deploy = splits["deploy"]
    settings = generator_settings({"n_neighbors": 20, "group_size": 3})
    shared, _ = serving_data(deploy, settings, clean.items, exclude_seen=False, data_hash=clean.content_hash())
    data = ranker_data(deploy, 2, settings, generator=shared.generator)
    spec = RankerSpec(STUDENTS["edge"]["architecture"], lr=3e-3, weight_decay=1e-5, epochs=1)
    model, _ = fit_ranker(spec, data)
    int8 = quantize_int8(
        export_onnx(model, tmp / "edge.fp32.onnx", data.train.features.shape[1]), tmp / "edge.int8.onnx"
    )
    return lay_out(shared, TierScorer("edge", scorer_spec(RANKER), int8, ranker_config=model.config), tmp / "deploy")


def build_bundle(serving_dir: Path, private_key: Path, folder: Path, version: str) -> Path:
    from edge.bundle import load_private_key
    from models.tier_bundle import sign

    shutil.copytree(serving_dir, folder)
    sign(folder, load_private_key(private_key), {"model_version": version, "registered_model": "test"})
    return folder


@pytest.fixture(scope="session")
def edge_bundle(serving_dir, signing_keys, tmp_path_factory) -> Path:
    """Signed bundle, model version 7 (read-only: copy it before changing anything)."""
    return build_bundle(serving_dir, signing_keys[0], tmp_path_factory.mktemp("bundle") / "v7", "7")


@pytest.fixture
def bundle_copy(edge_bundle, tmp_path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(edge_bundle, target)
    return target


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


class NodeProcess:
    """`lightpersml serve` in its own process, on a free port, stopped by PID. Unless `open_node`,
    it has one client key with both scopes (`headers` carries it) and `rate` requests allowed."""

    def __init__(
        self,
        folder: Path,
        public_key: Path,
        open_node: bool = False,
        rate: str = "100000/second",
        options: tuple[str, ...] = (),
    ):
        from edge.clients import ClientKeys

        self.folder, self.public_key, self.open_node, self.options = folder, public_key, open_node, options
        (folder / "token").write_text(TOKEN)
        self.url, self.process = None, None
        self.headers: dict[str, str] = {}
        if not open_node:
            _, key = ClientKeys(self.node_dir).add("tests", rate=rate)
            self.headers = {"X-API-Key": key}

    @property
    def node_dir(self) -> Path:
        return self.folder / "node"

    def start(self, bundle: Path | None = None, until: str = "/readyz") -> NodeProcess:
        """Start and wait until `until` answers 200. The node binds a free port itself and reports it
        (no race between choosing a port and binding it)."""
        port_file = self.folder / "port"
        port_file.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "lightpersml.cli",
            "serve",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--node-dir",
            str(self.node_dir),
            "--public-key",
            str(self.public_key),
            "--admin-token-file",
            str(self.folder / "token"),
            *self.options,
        ]
        if self.open_node:
            command.append("--open")
        if bundle is not None:
            command += ["--bundle", str(bundle)]
        self.process = subprocess.Popen(
            command, stdout=open(self.folder / "stdout.log", "ab"), stderr=open(self.folder / "stderr.log", "ab")
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"node exited: {(self.folder / 'stderr.log').read_text()[-2000:]}")
            if not port_file.exists() or not port_file.read_text():
                time.sleep(0.2)
                continue
            self.url = f"http://127.0.0.1:{port_file.read_text()}"
            try:
                if httpx.get(f"{self.url}{until}", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError("node did not become ready")

    def client(self, **options) -> httpx.Client:
        """An HTTP client for this node that sends its client key."""
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=options.pop("timeout", 30), **options)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="session")
def shop(completejourney, tmp_path_factory) -> Path:
    """Every 4th household of Complete Journey (~620): enough shoppers to tell two experiment
    arms apart, and a week of purchases big enough to monitor category by category."""
    from tests.conftest import write_slice

    return write_slice(completejourney, tmp_path_factory.mktemp("cj_quarter"), every=4)


@pytest.fixture(scope="session")
def busy_shopper(edge_bundle) -> tuple[str, str]:
    """(the shopper with the most baskets, the store with the most items in stock) of the bundle."""
    import numpy as np

    from edge.bundle import CATALOG, HISTORIES
    from models.baskets import BasketHistory
    from models.catalog import Catalog

    with np.load(edge_bundle / CATALOG) as npz:
        catalog = Catalog.from_state(dict(npz))
    history = BasketHistory.load(edge_bundle / HISTORIES)
    return (
        str(catalog.user_ids[int(np.argmax(np.diff(history.user_ptr)))]),
        str(catalog.store_ids[int(np.argmax(np.diff(catalog.in_stock.indptr)))]),
    )


def write_nodes_file(path: Path, urls: dict[str, str], token_env: str | None = None) -> Path:
    """A nodes file (as `lightpersml deploy` reads it) of nodes {name: url}, each with the admin
    token, or with `token_env` naming the variable that holds it."""
    token = f'token_env = "{token_env}"' if token_env else f'token = "{TOKEN}"'
    path.write_text("".join(f'[[nodes]]\nname = "{name}"\nurl = "{url}"\n{token}\n\n' for name, url in urls.items()))
    return path


def raw_request(url: str, data: bytes, timeout: float = 30) -> int | None:
    """Send `data` as-is on a new connection; the status of the answer, or None when the node
    closed the connection without one."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        try:
            s.sendall(data)
            head = s.recv(64)
        except (ConnectionResetError, BrokenPipeError):
            return None
    return int(head.split()[1]) if head.startswith(b"HTTP/") else None


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024
