"""Deliberately broken versions of the code behind the product's claims, and the test meant to
catch each: every mutation must turn its test red.

Run: .venv/bin/python -m benchmarks.hand_mutations   (~5 minutes on 2 cores; run on purpose, not in CI)
Writes benchmarks/results/hand_mutations.{json,md}.

The working checkout is never changed: the project is copied to a temporary folder (as
benchmarks.mutation does), each mutation is applied there alone, its tests run, and the file is
restored. The unmutated tests must pass first, so a red test means the mutation was caught.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks._measure import write_results
from benchmarks.mutation import copy_project


@dataclass(frozen=True)
class Mutation:
    claim: str
    path: str
    original: str  # must occur exactly once in `path`
    mutated: str
    tests: tuple[str, ...]  # pytest node ids that must fail


MUTATIONS = (
    Mutation(
        "DP: Gaussian noise is added to the clipped sum",
        "models/private_training.py",
        "value + torch.normal(0.0, noise_multiplier * clip_norm,",
        "value + 0 * torch.normal(0.0, noise_multiplier * clip_norm,",
        ("tests/code/test_private_training.py::test_the_released_sum_deviates_from_the_clipped_one_by_sigma_times_c",),
    ),
    Mutation(
        "DP: the noise scale is sigma * C",
        "models/private_training.py",
        "torch.normal(0.0, noise_multiplier * clip_norm,",
        "torch.normal(0.0, noise_multiplier,",
        ("tests/code/test_private_training.py::test_the_released_sum_deviates_from_the_clipped_one_by_sigma_times_c",),
    ),
    Mutation(
        "DP: each shopper's gradient is clipped to C",
        "models/private_training.py",
        "scale = (clip_norm / (norms + 1e-12)).clamp(max=1.0)",
        "scale = (clip_norm / (norms + 1e-12)).clamp(max=1e9)",
        ("tests/code/test_private_training.py::test_no_shopper_contributes_more_than_the_clipping_norm",),
    ),
    Mutation(
        "DP: the ledger composes every node's steps",
        "federated/privacy.py",
        "self.accountant.history += _entries(round_steps)",
        "self.accountant.history += _entries(round_steps[:1])",
        ("tests/code/test_private_training.py::test_ledger_composes_every_node_and_stops_before_passing_the_target",),
    ),
    Mutation(
        "Robust aggregation: FedMedian is a median",
        "federated/server_app.py",
        '"fedmedian": FedMedian',
        '"fedmedian": FedAvg',
        ("tests/code/test_aggregation.py::test_robust_strategies_stay_with_the_honest_nodes",),
    ),
    Mutation(
        "Robust aggregation: Krum is Krum",
        "federated/server_app.py",
        '"krum": Krum',
        '"krum": FedAvg',
        ("tests/code/test_aggregation.py::test_robust_strategies_stay_with_the_honest_nodes",),
    ),
    Mutation(
        "Distillation: the student learns from its teacher",
        "training/data.py",
        "        teacher_scores=teacher_scores,\n        distill_weight=spec.distill_weight,",
        "        teacher_scores=None,\n        distill_weight=spec.distill_weight,",
        ("tests/code/test_training.py::test_a_distilled_student_follows_its_teacher_not_only_the_labels",),
    ),
    Mutation(
        "Training lists: timing features at the target basket's time, not the weekly cutoff",
        "training/data.py",
        'generator_settings["tifu_params"], groups, at, **options',
        'generator_settings["tifu_params"], groups, None, **options',
        ("tests/code/test_training.py::test_training_and_validation_lists_see_their_baskets_own_time",),
    ),
    Mutation(
        "The engine ranks at the request's time, not the bundle's cutoff",
        "edge/engine.py",
        "found_items, features = self.generator.candidate_rows(rows, now_day)",
        "found_items, features = self.generator.candidate_rows(rows, self.cutoff_day)",
        ("tests/edge/test_engine.py::test_answers_follow_the_request_time_and_are_reused_within_its_hour",),
    ),
    Mutation(
        "TIFU-KNN: within-group and group decays are not swapped",
        "models/baselines.py",
        'm, rb, rg = self.params["group_size"], self.params["within_decay"], self.params["group_decay"]',
        'm, rg, rb = self.params["group_size"], self.params["within_decay"], self.params["group_decay"]',
        ("tests/code/test_baselines.py::test_tifu_knn_user_vector_by_hand",),
    ),
    Mutation(
        "Ranking: ties inside the top k go by item index",
        "models/ranking.py",
        "order = np.lexsort((part, -part_scores), axis=1)",
        "order = np.lexsort((-part, -part_scores), axis=1)",
        ("tests/code/test_baselines.py::test_top_k_orders_ties_inside_the_k_by_index",),
    ),
    Mutation(
        "Metrics: the ideal DCG is capped at k",
        "models/metrics.py",
        "for rank in range(min(len(basket), k)))",
        "for rank in range(len(basket)))",
        ("tests/code/test_metrics.py::test_idcg_is_capped_at_k",),
    ),
    Mutation(
        "Training lists: candidates use only baskets before the cutoff",
        "models/candidates.py",
        "before = history.before(cutoff_day)",
        "before = history",
        ("tests/code/test_training.py::test_labelled_candidates_use_only_baskets_before_the_cutoff",),
    ),
    Mutation(
        "Features: store popularity counts baskets before the cutoff",
        "splits/temporal.py",
        '.agg(pl.len().alias("baskets"))\n        .with_columns(pl.col("baskets").rank(',
        '.agg(pl.col(schema.USER_ID).n_unique().alias("baskets"))\n        .with_columns(pl.col("baskets").rank(',
        ("tests/data/test_features.py::test_store_popularity_counts_and_ranks_each_stores_baskets_before_the_cutoff",),
    ),
    Mutation(
        "Partitions: ties in the greedy balance go to the lower node id",
        "splits/partition.py",
        "key=lambda n: (load[n], n))",
        "key=lambda n: (load[n], -n))",
        ("tests/data/test_partition.py::test_the_greedy_rule_by_hand",),
    ),
    Mutation(
        "Federated nodes read the collected events the flow reads",
        "federated/task.py",
        "from nodes.sources import load_dataset",
        "from data_contracts.sources import load_source as load_dataset",
        ("tests/data/test_ingest.py",),
    ),
    Mutation(
        "Edge: an acknowledged event is synced to disk (synchronous=FULL)",
        "edge/events.py",
        'self._db.execute("PRAGMA synchronous=FULL")',
        'self._db.execute("PRAGMA synchronous=OFF")',
        ("tests/edge/test_events_and_keys.py",),
    ),
    Mutation(
        "Edge: group-committed events reach the engine in log order",
        "edge/events.py",
        "        for request in batch:\n            try:\n                if request.error is None",
        "        for request in reversed(batch):\n            try:\n                if request.error is None",
        (
            "tests/edge/test_events_and_keys.py::test_concurrent_appends_share_commits_and_run_their_callbacks_in_log_order",
        ),
    ),
    Mutation(
        "Edge: a failing append in a shared commit fails alone",
        "edge/events.py",
        "            if len(batch) == 1:\n                batch[0].error = error",
        "            if True:\n                batch[0].error = error",
        ("tests/edge/test_events_and_keys.py::test_an_append_that_fails_fails_alone_even_in_a_shared_commit",),
    ),
    Mutation(
        "Folding a purchase in counts it once, as a refit does",
        "models/user_rows.py",
        "        count[new] += 1\n",
        "        count[new] += 2\n",
        ("tests/code/test_user_rows.py",),
    ),
    Mutation(
        "Bundle arrays are stored 64-byte aligned (so a node maps them without copies)",
        "models/npz.py",
        "            if pad:\n",
        "            if False:\n",
        ("tests/code/test_npz.py",),
    ),
)


def run_tests(project: Path, tests: tuple[str, ...]) -> tuple[int, float]:
    """pytest exit code (0 passed, 1 failed) and seconds."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *tests],
        cwd=project,
        capture_output=True,
        text=True,
    )
    return done.returncode, time.perf_counter() - start


def main() -> None:
    rows, passing = [], set()
    with tempfile.TemporaryDirectory(prefix="hand-mutations-") as tmp:
        project = Path(tmp)
        copy_project(project)
        for mutation in MUTATIONS:
            source = project / mutation.path
            text = source.read_text()
            assert text.count(mutation.original) == 1, f"{mutation.path}: {mutation.original!r} not found exactly once"
            if mutation.tests not in passing:  # each set of tests once, unmutated
                clean, _ = run_tests(project, mutation.tests)
                assert clean == 0, f"{mutation.tests} fail without the mutation (exit {clean})"
                passing.add(mutation.tests)
            source.write_text(text.replace(mutation.original, mutation.mutated))
            try:
                code, seconds = run_tests(project, mutation.tests)
            finally:
                source.write_text(text)
            outcome = {0: "SURVIVED", 1: "caught"}.get(code, f"error (pytest exit {code})")
            rows.append({**asdict(mutation), "outcome": outcome, "seconds": round(seconds, 1)})
            print(f"{outcome:>9}  {mutation.claim}", flush=True)
    table = [
        {
            "claim": r["claim"],
            "mutation": f"`{r['path']}`: `{r['original']}` → `{r['mutated']}`",
            "test": ", ".join(f"`{t.split('::')[-1]}`" for t in r["tests"]),
            "outcome": r["outcome"],
        }
        for r in rows
    ]
    print(write_results("hand_mutations", {"mutations": rows}, table))


if __name__ == "__main__":
    main()
