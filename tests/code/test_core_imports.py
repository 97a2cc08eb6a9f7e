"""The core is plain Python: every module of its packages loads without Prefect (and, outside the
tracking package and the federated server, without MLflow), so it runs and is tested alone."""

import pkgutil
import subprocess
import sys

CORE = ("models", "data_contracts", "splits", "training", "evaluation", "nodes", "federated", "tracking")
NO_MLFLOW = ("tracking", "federated.server_app", "federated.simulation")


def core_modules() -> list[str]:
    modules = []
    for package in CORE:
        module = __import__(package)
        modules += [package] + [f"{package}.{info.name}" for info in pkgutil.iter_modules(module.__path__)]
    return modules


def loaded_by(modules: list[str]) -> set[str]:
    """What importing `modules` together, in a fresh interpreter, loads of Prefect, MLflow and the pipeline."""
    code = f"import sys, {', '.join(modules)}; print(','.join(m for m in ('prefect', 'mlflow', 'flows', 'tasks') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(filter(None, done.stdout.strip().split(",")))


def test_every_core_module_loads_without_prefect_or_the_pipeline():
    modules = core_modules()
    assert "training.tuning" in modules and "evaluation.served" in modules and "splits.temporal" in modules
    plain = [m for m in modules if not m.startswith(NO_MLFLOW)]
    assert loaded_by(plain) == set()
    assert loaded_by([m for m in modules if m not in plain]) == {"mlflow"}
