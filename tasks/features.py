"""Prefect tasks over `splits.temporal` (the logic lives there)."""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import task

from data_contracts.dataset import Dataset
from data_contracts.learnability import Protocol
from splits.temporal import Split, build_splits

log = logging.getLogger(__name__)


@task(name="features and split", retries=1, task_run_name="features and split")
def features_task(dataset: Dataset, data_hash: str, cache_dir: Path, protocol: Protocol) -> dict[str, Split]:
    splits, hit = build_splits(
        dataset,
        data_hash,
        cache_dir,
        protocol.test_weeks,
        protocol.validation_weeks,
        protocol.kind,
        protocol.holdout_order,
    )
    for split in splits.values():
        log.info(
            "%s split (%s protocol%s): cutoff %s, %d users with history, %d target baskets, %d baskets before cutoff%s",
            split.name,
            split.protocol,
            f", {split.holdout_order} order" if split.protocol == "holdout" else "",
            split.cutoff,
            split.history.n_users,
            len(split.targets),
            split.history.n_baskets,
            " (from cache)" if hit else "",
        )
    return splits
