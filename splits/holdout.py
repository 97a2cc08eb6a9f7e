"""Per-user holdout: the protocol for data where shoppers rarely buy the same item twice (ratings,
apparel, home goods), where a global cutoff leaves too few test users with too few items.

Test: each user with at least `MIN_HOLDOUT_LINES` purchase lines holds out their newest `share` of them
(at least one); by time, or at random (`order="random"`, the split RecBole and the EASE literature
use on MovieLens). The history is every other line, of every user, so features and stock are those
at the end of the data. Validation repeats the construction on the test split's history; deploy is
all the data. A user's request is at their first held-out line's time and store.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import polars as pl

from data_contracts import schema
from data_contracts.dataset import Dataset
from data_contracts.learnability import MIN_HOLDOUT_LINES
from splits.temporal import Split, purchase_lines, split_of

HOLDOUT_SHARE = 0.1
Order = Literal["time", "random"]


def held_out(lines: pl.DataFrame, share: float, order: Order, seed: int) -> np.ndarray:
    """(len(lines),) True for the lines each user holds out: their newest round(share × n) of n
    lines (at least 1 when n ≥ MIN_HOLDOUT_LINES), or that many at random with `seed`."""
    users = pd.factorize(lines[schema.USER_ID].to_numpy())[0]
    n = len(users)
    then = np.random.default_rng(seed).random(n) if order == "random" else lines[schema.TIMESTAMP].to_numpy()
    ordered = np.lexsort((np.arange(n), then, users))  # by user, then time (or a random key), then line
    per_user = np.bincount(users)
    start = np.r_[0, np.cumsum(per_user)[:-1]]
    position = np.empty(n, np.int64)
    position[ordered] = np.arange(n) - np.repeat(start, per_user)
    keep = np.where(per_user >= MIN_HOLDOUT_LINES, np.maximum(np.rint(share * per_user), 1), 0).astype(np.int64)
    return position >= (per_user - keep)[users]


def holdout_splits(
    dataset: Dataset, share: float = HOLDOUT_SHARE, order: Order = "time", seed: int = 0
) -> dict[str, Split]:
    """The validation, test and deploy splits of `dataset` (see module docstring)."""
    lines = purchase_lines(dataset)
    end = pd.Timestamp(lines[schema.TIMESTAMP].max()) + pd.Timedelta(seconds=1)
    test = held_out(lines, share, order, seed)
    history = lines.filter(~pl.Series(test))
    validation = held_out(history, share, order, seed + 1)
    splits = {
        "validation": split_of(
            lines,
            dataset,
            "validation",
            history.filter(~pl.Series(validation)),
            history.filter(pl.Series(validation)),
            end,
            end,
        ),
        "test": split_of(lines, dataset, "test", history, lines.filter(pl.Series(test)), end, end),
        "deploy": split_of(lines, dataset, "deploy", lines, lines.clear(), end, end),
    }
    for split in splits.values():
        split.protocol = "holdout"
    return splits
