"""Mutation testing of the metrics and the differential-privacy code: how many small changes to
the code (mutants) the fast unit tests notice.

Run: .venv/bin/python -m benchmarks.mutation [--max-minutes 60] [--workers 1] [--keep]
     (writes benchmarks/results/mutation.{json,md}; run on purpose, not in CI: ~10 minutes on 2 cores)

Needs mutmut 3 (`.venv/bin/pip install "mutmut==3.*"`; not a project dependency): without it the
script says so and exits 2.

The working checkout is never mutated: the project's files (`git ls-files --cached --others
--exclude-standard`, their working-tree versions) are copied to a temporary folder and mutmut runs
there, mutating only SOURCES and running only TESTS (the fast unit tests that import them; no
integration tests). `--max-minutes` bounds the whole mutmut run: when it is reached, mutmut is
stopped and the mutants not yet tried are reported as "not checked". Surviving mutants are listed
with a one-line diff; those in EQUIVALENT (cannot change behaviour) are marked as such.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._measure import write_results  # noqa: E402

SOURCES = ("models/metrics.py", "models/private_training.py", "federated/privacy.py")
# The unit tests that import SOURCES (grep "models.metrics|private_training|federated.privacy" tests/code);
# tests/code/test_baselines.py imports none of them, so it cannot kill a mutant and is left out.
TESTS = ("tests/code/test_metrics.py", "tests/code/test_private_training.py", "tests/code/test_aggregation.py")
# The importable packages (pyproject [tool.setuptools] packages): copied whole into mutmut's
# mutants/ folder so that the tests import nothing from the working checkout.
PACKAGES = ("lightpersml", "models", "tasks", "data_contracts", "edge", "flows")

# Surviving mutants that cannot change behaviour: (file, original line, mutated line) → why.
# Lines are compared stripped, as the survivors' "removed"/"added" in the results.
_PER_METRIC = 'per_metric: dict[str, list[float]] = {name: [] for name in METRIC_NAMES if name != "%s"}'
_NOISE = "return {name: value %s torch.normal(0.0, noise_multiplier * clip_norm, value.shape, generator=generator)"
_SAMPLE = "chosen = torch.nonzero(torch.rand(n_shoppers, generator=generator) %s sample_rate).squeeze(1)"
_EPSILON = "return self.accountant.get_epsilon(self.delta) if %s else 0.0"
_NOT_COVERAGE = (
    "no per-user metric is named coverage_at_10, so its list would stay empty, average to 0.0 "
    "and be overwritten by the real coverage two lines below"
)
EQUIVALENT: dict[tuple[str, str, str], str] = {
    ("models/metrics.py", _PER_METRIC % "coverage_at_10", _PER_METRIC % "XXcoverage_at_10XX"): _NOT_COVERAGE,
    ("models/metrics.py", _PER_METRIC % "coverage_at_10", _PER_METRIC % "COVERAGE_AT_10"): _NOT_COVERAGE,
    (
        "models/private_training.py",
        "per_list = -(torch.where(mask, log_p, 0.0) * labels).sum(1) / positives.clamp(min=1)",
        "per_list = -(torch.where(mask, log_p, 1.0) * labels).sum(1) / positives.clamp(min=1)",
    ): "padded slots have label 0 (shopper_lists pads with zeros), so what stands in for their "
    "log-probability is multiplied by 0",
    (
        "models/private_training.py",
        'return {name: torch.einsum("s,s...->...", scale, g) for name, g in grads.items()}, norms',
        'return {name: torch.einsum("S,S...->...", scale, g) for name, g in grads.items()}, norms',
    ): "einsum subscripts are just labels: S names the same shopper axis as s",
    (
        "models/private_training.py",
        _NOISE % "+",
        _NOISE % "-",
    ): "N(0, σ²C²) is symmetric: summed − noise has the same distribution as summed + noise (same "
    "privacy, same statistics); only the particular draw differs",
    (
        "models/private_training.py",
        _SAMPLE % "<",
        _SAMPLE % "<=",
    ): "torch.rand is uniform on [0, 1) in steps of 2⁻²⁴: u ≤ q differs from u < q only when u == q "
    "exactly (probability 2⁻²⁴ per shopper and step; never at q = 1)",
    (
        "federated/privacy.py",
        _EPSILON % "self.accountant.history",
        _EPSILON % "(self.accountant.history) or True",
    ): "Opacus' get_epsilon returns 0 for an empty history: the same ε = 0 (the int 0, equal to 0.0)",
}

STATUS = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no_tests",
    33: "no_tests",
    34: "skipped",
    35: "suspicious",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    37: "caught_by_type_check",
    -11: "segfault",
    -9: "segfault",
    None: "not_checked",
}
COUNTED = ("killed", "survived", "timeout", "no_tests", "suspicious", "segfault", "not_checked")


def copy_project(target: Path) -> int:
    """Copy every tracked or new (not ignored) file of the checkout, as it is in the working tree."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    copied = 0
    for name in filter(None, listed):
        source = ROOT / name
        if not source.is_file() or name.startswith("mutants/"):
            continue  # deleted in the working tree, or a mutmut folder someone left in the checkout
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)
        copied += 1
    return copied


def write_config(target: Path) -> None:
    """mutmut reads [mutmut] from setup.cfg when pyproject.toml has no [tool.mutmut]."""

    def lines(values):
        return "".join(f"\n    {v}" for v in values)

    (target / "setup.cfg").write_text(
        "[mutmut]\n"
        f"source_paths ={lines(PACKAGES)}\n"
        f"only_mutate ={lines(SOURCES)}\n"
        f"pytest_add_cli_args_test_selection ={lines(TESTS)}\n"
        f"pytest_add_cli_args ={lines(['-p', 'no:cacheprovider'])}\n"
        "use_git_change_detection = false\n"
        # CPU-seconds limit per mutant = (its tests' time + 1 s) × 2 × this (mutmut's default 15
        # lets a mutant that loops forever in the 8-second ledger test run for ~5 minutes)
        "timeout_multiplier = 5\n"
        "use_setproctitle = false\n"
    )


def run_mutmut(folder: Path, workers: int, max_minutes: float, log: Path) -> tuple[int | None, float]:
    """`mutmut run` in `folder`, one thread per worker; stopped (with its children) after max_minutes."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("MUTANT_UNDER_TEST", None)
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(workers)],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=max_minutes * 60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            code = None
    return code, time.perf_counter() - start


def function_lines(source: str) -> dict[str, int]:
    """Qualified function name (Class.method or function) → line of its `def` (1-based)."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = node.lineno
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found[f"{node.name}.{item.name}"] = item.lineno
    return found


def function_of(mutant: str) -> str:
    """models.metrics.x_user_metrics__mutmut_3 → user_metrics;
    federated.privacy.xǁPrivacyLedgerǁrecord__mutmut_1 → PrivacyLedger.record."""
    mangled = mutant.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]
    if mangled.startswith("xǁ"):
        return ".".join(mangled[2:].split("ǁ"))
    return mangled[2:] if mangled.startswith("x_") else mangled


def one_line(diff: str, def_line: int | None) -> dict:
    """The changed lines of mutmut's function diff, and the file line of the first one."""
    removed, added, line, old = [], [], None, 0
    for text in diff.splitlines():
        if text.startswith(("---", "+++")):
            continue
        hunk = re.match(r"@@ -(\d+)", text)
        if hunk:
            old = int(hunk.group(1))
        elif text.startswith("-"):
            removed.append(text[1:].strip())
            line = line or old
            old += 1
        elif text.startswith("+"):
            added.append(text[1:].strip())
            line = line or old  # a pure insertion: the line it goes before
        else:
            old += 1
    file_line = def_line + line - 1 if def_line and line else None
    return {"line": file_line, "removed": " / ".join(removed), "added": " / ".join(added)}


def collect(folder: Path) -> dict[str, dict]:
    """Per source file: counts by status and the survivors with their diffs (from mutmut's meta files)."""
    per_file = {}
    for source in SOURCES:
        meta_path = folder / "mutants" / f"{source}.meta"
        codes = json.loads(meta_path.read_text())["exit_code_by_key"] if meta_path.exists() else {}
        counts = dict.fromkeys(COUNTED, 0)
        survivors = []
        defs = function_lines((folder / source).read_text())
        for mutant, code in sorted(codes.items(), key=lambda kv: natural_key(kv[0])):
            status = STATUS.get(code, "suspicious")
            counts[status if status in counts else "suspicious"] += 1
            if status != "survived":
                continue
            shown = subprocess.run(
                [sys.executable, "-m", "mutmut", "show", mutant], cwd=folder, text=True, capture_output=True
            ).stdout
            diff = shown.split("\n", 1)[1] if shown.startswith("#") else shown
            change = one_line(diff, defs.get(function_of(mutant)))
            reason = EQUIVALENT.get((source, change["removed"], change["added"]))
            survivors.append(
                {
                    "mutant": mutant,
                    "function": function_of(mutant),
                    **change,
                    "equivalent": reason is not None,
                    "why_equivalent": reason,
                    "diff": diff.strip(),
                }
            )
        survivors.sort(key=lambda s: (s["line"] or 0, natural_key(s["mutant"])))
        per_file[source] = {"total": len(codes), **counts, "survivors": survivors}
    return per_file


def natural_key(mutant: str) -> tuple:
    name, _, number = mutant.rpartition("__mutmut_")
    return (name, int(number) if number.isdigit() else 0)


def score(caught: int, checked: int) -> float | str:
    """Mutation score: % of the checked mutants that a test caught (killed or timed out)."""
    return round(100 * caught / checked, 1) if checked else "n/a"


def markdown_survivors(per_file: dict[str, dict]) -> str:
    lines = ["", "## Surviving mutants", ""]
    rows = [(source, s) for source, data in per_file.items() for s in data["survivors"]]
    if not rows:
        return "\n".join(lines + ["None.", ""])
    lines += ["| file:line | original | mutant | equivalent? |", "|---|---|---|---|"]
    for source, s in rows:
        why = f"yes: {s['why_equivalent']}" if s["equivalent"] else "**no** (a missing test)"
        cell = lambda text: f"`{text}`".replace("|", "\\|") if text else "(deleted)"  # noqa: E731
        lines.append(f"| {source}:{s['line']} | {cell(s['removed'])} | {cell(s['added'])} | {why} |")
    return "\n".join(lines + [""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-minutes", type=float, default=60.0, help="stop mutmut after this long (default 60)")
    parser.add_argument("--workers", type=int, default=1, help="mutmut --max-children (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (and mutmut's log)")
    args = parser.parse_args()
    try:
        version = importlib.metadata.version("mutmut")
    except importlib.metadata.PackageNotFoundError:
        print("mutmut is not installed: .venv/bin/pip install mutmut   (version 3.x)", file=sys.stderr)
        return 2
    if not version.startswith("3."):
        print(f"mutmut {version} found, this benchmark needs 3.x: .venv/bin/pip install 'mutmut==3.*'", file=sys.stderr)
        return 2

    folder = Path(tempfile.mkdtemp(prefix="lightpersml-mutation-"))
    try:
        copied = copy_project(folder)
        write_config(folder)
        log = folder / "mutmut.log"
        print(
            f"mutmut {version} in {folder} ({copied} files copied), at most {args.max_minutes:g} minutes …", flush=True
        )
        code, seconds = run_mutmut(folder, args.workers, args.max_minutes, log)
        if code not in (0, None):
            print(log.read_text()[-4000:], file=sys.stderr)
            print(f"mutmut run failed (exit {code}); log above", file=sys.stderr)
            return 1
        per_file = collect(folder)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    table = [
        {
            "file": source,
            "mutants": d["total"],
            "killed": d["killed"],
            "survived": d["survived"],
            "timeout": d["timeout"],
            "no tests": d["no_tests"],
            "not checked": d["not_checked"],
            "score %": score(d["killed"] + d["timeout"], d["total"] - d["not_checked"]),
            "equivalent survivors": sum(s["equivalent"] for s in d["survivors"]),
        }
        for source, d in per_file.items()
    ]
    totals = {key: sum(row[key] for row in table) for key in table[0] if key not in ("file", "score %")}
    table.append(
        {
            "file": "all",
            **totals,
            "score %": score(totals["killed"] + totals["timeout"], totals["mutants"] - totals["not checked"]),
        }
    )
    table = [{k: row[k] for k in table[0]} for row in table]
    payload = {
        "tool": f"mutmut {version}",
        "command": ".venv/bin/python -m benchmarks.mutation "
        f"--max-minutes {args.max_minutes:g} --workers {args.workers}",
        "sources": list(SOURCES),
        "tests": list(TESTS),
        "workers": args.workers,
        "runtime_seconds": round(seconds, 1),
        "stopped_at_max_minutes": code is None,
        "files": per_file,
        "table": table,
    }
    path = write_results("mutation", payload, table)
    note = (
        f"\nmutmut {version}, {args.workers} worker(s), {seconds / 60:.1f} minutes"
        + (" (stopped at --max-minutes: some mutants not checked)" if code is None else "")
        + f"; tests: {', '.join(TESTS)}.\n"
    )
    path.write_text(path.read_text() + note + markdown_survivors(per_file))
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
