"""Flower's deployment engine, as real processes: a SuperLink, three SuperNodes (one per store
group, each with its own state folder) and `flwr run` of this project's app (the FAB built from
pyproject.toml's `[tool.flwr.app]`). One round must beat the random initial model on the central
validation lists, as in the simulation test, and the run must finish as completed."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from federated.summary import FederatedSummary
from lightpersml.config import QUIET_ENVIRONMENT

ROOT = Path(__file__).resolve().parents[2]  # the Flower app: pyproject.toml's [tool.flwr.app]
BIN = Path(sys.executable).parent  # the same venv's flower-superlink, flower-supernode, flwr
CONNECTION = "lightpersml-test"  # the SuperLink connection, in the CLI's $FLWR_HOME/config.toml
N_NODES = 3
RUN_TIMEOUT = 600  # seconds for the whole run (3 nodes + server on 2 busy cores)
STARTUP_TIMEOUT = 120  # seconds until every SuperNode is online


def _free_port() -> int:
    """A port free now; another process may take it before ours binds it (`start_listening` retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _environment(home: Path) -> dict[str, str]:
    """The parent's environment, quiet, with every state folder (Flower's and the project's) in
    `home`; the venv's executables first on PATH (SuperLink and SuperNode start `flower-superexec`,
    which starts `flwr-serverapp`/`flwr-clientapp`, by name)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PREFECT_HOME", "MPLCONFIGDIR", "MLFLOW_TRACKING_URI", "PREFECT_API_URL"}
    }
    env.update(QUIET_ENVIRONMENT)
    env.update(
        {
            "FLWR_HOME": str(home / "flwr"),
            "LIGHTPERSML_HOME": str(home),
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    (home / "flwr").mkdir(parents=True, exist_ok=True)
    return env


def _tail(path: Path, lines: int = 60) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else ["(no log)"]
    return "\n".join(text[-lines:])


def _own_leftovers(root: Path) -> list[int]:
    """PIDs of processes whose FLWR_HOME lies under `root`: everything this test started, even
    grandchildren (SuperExec, ServerApp, ClientApps) or a SuperLink detached by `flwr run`."""
    marker = f"FLWR_HOME={root}/".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if any(var.startswith(marker) for var in (entry / "environ").read_bytes().split(b"\0")):
                    pids.append(int(entry.name))
            except OSError:  # gone meanwhile, or not ours
                pass
    return pids


class Deployment:
    """The processes of one local deployment, their logs, and the CLI talking to the SuperLink."""

    def __init__(self, root: Path):
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir()
        self.processes: dict[str, subprocess.Popen] = {}
        self.cli_env = _environment(root / "cli")

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("wb")
        # A session of its own: stopping the process group also stops its SuperExec and app processes.
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=_environment(self.root / name),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes[name] = process
        return process

    def start_listening(
        self, name: str, args: Callable[[list[int]], list[str]], n_ports: int, attempts: int = 3
    ) -> list[int]:
        """Start `args(ports)` on `n_ports` free ports and wait until it listens on all of them.
        A process that exits first (a port taken between choosing and binding) is started again
        on new ports."""
        for attempt in range(1, attempts + 1):
            ports = [_free_port() for _ in range(n_ports)]
            label = name if attempt == 1 else f"{name}-try{attempt}"  # each attempt keeps its own log
            process = self.start(label, args(ports))
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while process.poll() is None and not all(_accepts(port) for port in ports):
                assert time.monotonic() < deadline, f"{name} not listening on {ports} after {STARTUP_TIMEOUT} s"
                time.sleep(0.5)
            self.processes.pop(label)
            if process.poll() is None:
                self.processes[name] = process
                return ports
        raise AssertionError(f"{name} exited before listening, {attempts} times")

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """One `flwr` CLI command against the test's SuperLink connection; its output is logged too."""
        result = subprocess.run(
            [str(BIN / "flwr"), *args], cwd=ROOT, env=self.cli_env, capture_output=True, text=True, timeout=timeout
        )
        with (self.logs / "flwr-cli.log").open("a") as log:
            log.write(f"$ flwr {' '.join(args)}  (exit {result.returncode})\n{result.stdout}{result.stderr}\n")
        return result

    def flwr_json(self, *args: str) -> dict:
        result = self.flwr(*args, "--format", "json")
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError:
            return {"success": False, "output": result.stdout + result.stderr}

    def save_run_log(self, run_id: int) -> None:
        result = self.flwr("log", str(run_id), CONNECTION, "--show", timeout=60)
        (self.logs / "serverapp.log").write_text(result.stdout + result.stderr)

    def check_alive(self) -> None:
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        assert not dead, f"processes exited early: {dead}"

    def stop(self) -> None:
        for process in reversed(self.processes.values()):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            try:  # the leader's orphans, or a leader that ignored SIGTERM
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=20)
        deadline = time.monotonic() + 20
        while (leftovers := _own_leftovers(self.root)) and time.monotonic() < deadline:
            for pid in leftovers:  # anything that left the process groups; SIGKILL lands asynchronously
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)

    def report(self) -> str:
        return "\n".join(f"----- {log.name} (tail) -----\n{_tail(log)}" for log in sorted(self.logs.glob("*.log")))


@contextmanager
def _logs_on_failure(deployment: Deployment):
    try:
        yield
    except BaseException:
        print(deployment.report())  # pytest shows captured output of a failed test
        raise


@pytest.fixture
def deployment(tmp_path):
    """A SuperLink on free ports and three SuperNodes, node i with partition-id=i of 3."""
    deployment = Deployment(tmp_path)
    try:
        with _logs_on_failure(deployment):
            fleet, control, _ = deployment.start_listening(
                "superlink",
                lambda ports: [
                    str(BIN / "flower-superlink"),
                    "--insecure",
                    "--disable-runtime-dependency-installation",
                    "--fleet-api-address",
                    f"127.0.0.1:{ports[0]}",
                    "--control-api-address",
                    f"127.0.0.1:{ports[1]}",
                    "--serverappio-api-address",
                    f"127.0.0.1:{ports[2]}",
                    "--database",
                    str(tmp_path / "superlink" / "state.db"),
                ],
                n_ports=3,
            )
            (tmp_path / "cli" / "flwr" / "config.toml").write_text(
                f'[superlink]\ndefault = "{CONNECTION}"\n\n'
                f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{control}"\ninsecure = true\n'
            )
            for node in range(N_NODES):
                deployment.start_listening(
                    f"supernode-{node}",
                    lambda ports, node=node: [
                        str(BIN / "flower-supernode"),
                        "--insecure",
                        "--superlink",
                        f"127.0.0.1:{fleet}",
                        "--clientappio-api-address",
                        f"127.0.0.1:{ports[0]}",
                        "--node-config",
                        f"partition-id={node} num-partitions={N_NODES}",
                    ],
                    n_ports=1,
                )
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while True:  # the server sizes the round by the nodes it sees at start: wait for all three
                deployment.check_alive()
                nodes = deployment.flwr_json("supernode", "ls", CONNECTION).get("nodes", [])
                if sum(node.get("status") == "online" for node in nodes) == N_NODES:
                    break
                assert time.monotonic() < deadline, f"SuperNodes not online after {STARTUP_TIMEOUT} s: {nodes}"
                time.sleep(2)
        yield deployment
    finally:
        deployment.stop()
        assert not _own_leftovers(tmp_path), "processes of the deployment survived the teardown"


def test_the_flower_app_config_is_the_settings_defaults_and_the_fab_holds_only_package_sources():
    """`flwr run --run-config` can only override keys of [tool.flwr.app.config] (the SuperLink
    rejects others), so every setting must be there, with its default."""
    from flwr.cli.build import build_fab_from_disk

    from federated.task import FederatedSettings

    app = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["config"] == FederatedSettings().to_run_config()
    assert FederatedSettings.from_run_config(app["config"]) == FederatedSettings()
    fab = build_fab_from_disk(ROOT)
    names = zipfile.ZipFile(io.BytesIO(fab)).namelist()
    assert "federated/server_app.py" in names and "federated/client_app.py" in names
    packages = {"lightpersml", "federated", "models", "data_contracts", "splits", "training", "nodes", "edge"}
    assert {name.split("/")[0] for name in names} <= packages | {"pyproject.toml", ".info"}
    assert len(fab) < 1_000_000


def test_a_run_config_is_read_over_the_apps_settings_and_a_bad_key_is_named():
    from federated.task import FederatedSettings

    base = FederatedSettings(num_server_rounds=5, aggregation="krum")
    cfg = FederatedSettings.from_run_config({"noise-multiplier": 1, "split": "deploy"}, base)
    assert cfg == FederatedSettings(num_server_rounds=5, aggregation="krum", noise_multiplier=1.0, split="deploy")
    assert isinstance(cfg.noise_multiplier, float) and cfg.private
    with pytest.raises(ValueError, match="unknown federated setting 'private_lr'"):
        FederatedSettings.from_run_config({"private_lr": 0.1})
    with pytest.raises(ValueError, match="'num-server-rounds' must be int, not '3'"):
        FederatedSettings.from_run_config({"num-server-rounds": "3"})
    with pytest.raises(ValueError, match="'lr' must be float, not True"):
        FederatedSettings.from_run_config({"lr": True})


@pytest.mark.slow
def test_three_supernodes_train_a_round_that_beats_the_initial_model_on_central_validation(
    deployment, cj_slice, tmp_path
):
    output = tmp_path / "federated.pt"
    run_config = tmp_path / "run_config.toml"  # a file, so paths need no shell quoting
    run_config.write_text(
        "\n".join(
            f"{key} = {json.dumps(value)}"
            for key, value in {
                "data": str(cj_slice),
                "num-server-rounds": 1,
                "local-weeks": 2,
                "aggregation": "fedavg",
                "model-path": str(output),
            }.items()
        )
        + "\n"
    )
    with _logs_on_failure(deployment):
        started = deployment.flwr_json("run", str(ROOT), CONNECTION, "--run-config", str(run_config))
        assert started.get("success"), started
        run_id = int(started["run-id"])

        deadline = time.monotonic() + RUN_TIMEOUT
        try:
            while True:
                deployment.check_alive()
                runs = deployment.flwr_json("ls", CONNECTION, "--run-id", str(run_id)).get("runs", [])
                status = runs[0]["status"] if runs else "unknown"
                if status.startswith("finished"):
                    break
                assert time.monotonic() < deadline, f"run {run_id} still {status} after {RUN_TIMEOUT} s"
                time.sleep(5)
        finally:  # the ServerApp's output reaches the SuperLink's run log, not its stdout
            deployment.save_run_log(run_id)
        assert status == "finished:completed", runs

        saved = torch.load(output, weights_only=True)
        assert saved["config"]["item_buckets"] == 8192  # the edge tier's size
        summary = FederatedSummary.from_dict(json.loads(output.with_suffix(".json").read_text()))
        initial, trained = summary.rounds  # round 0: the random initial model
        assert (initial.round, trained.round, summary.rounds_trained) == (0, 1, 1)
        assert trained.nodes == N_NODES  # every SuperNode trained
        assert trained.validation_ndcg_at_10 > initial.validation_ndcg_at_10 + 0.05
        assert summary.settings.local_weeks == 2 and summary.settings.data == str(cj_slice)
