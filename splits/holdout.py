"""Per-user holdout: the protocol for data where shoppers rarely buy the same item twice (ratings,
apparel, home goods), where a global cutoff leaves too few test users with too few items.

Test: each user with at least `MIN_HOLDOUT_LINES` purchase lines holds out their newest `share` of them
(at least one); by time, or at random (`order="random"`, the split RecBole and the EASE literature
use on MovieLens). The history is every other line, of every user, so features and stock are those
at the end of the data. Validation repeats the construction on the test split's history; deploy is
all the data. A user's request is at their first held-out line's time and store.

The rankers of a holdout split learn from `nested_holdouts` of its history: the same construction
one share further back each round, as the temporal protocol's rankers learn from weekly cutoffs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import polars as pl

from data_contracts import schema
from data_contracts.dataset import Dataset
from data_contracts.learnability import MIN_HOLDOUT_LINES, HoldoutOrder
from models.baskets import BasketHistory
from splits.temporal import Split, purchase_lines, split_of

HOLDOUT_SHARE = 0.1


def held_out(lines: pl.DataFrame, share: float, order: HoldoutOrder, seed: int) -> np.ndarray:
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
    return position >= (per_user - held_out_counts(per_user, share))[users]


def held_out_counts(per_user: np.ndarray, share: float) -> np.ndarray:
    """(n_users,) lines each user holds out: round(share × n) of their n lines, at least 1 when
    n ≥ MIN_HOLDOUT_LINES, none below."""
    return np.where(per_user >= MIN_HOLDOUT_LINES, np.maximum(np.rint(share * per_user), 1), 0).astype(np.int64)


@dataclass
class NestedHoldout:
    """One round of `nested_holdouts`: the history kept, each user's target items, and the items
    the user has in the full history that are in neither (the rounds after this one). A ranker's
    list leaves those out: they are the shopper's own items, which a label of 0 would teach it to
    rank low (on MovieLens-100k a tenth of the known items of each round beyond the first)."""

    history: BasketHistory
    targets: dict[int, set[int]]
    skipped: dict[int, set[int]]


def nested_holdouts(
    history: BasketHistory, rounds: int, share: float = HOLDOUT_SHARE, order: HoldoutOrder = "time", seed: int = 0
) -> list[NestedHoldout]:
    """Round j = 1..rounds, from `history` alone: each user holds out the j-th newest `share` of
    their lines (counted on `history`; `order="random"`: the j-th share in a random order, as the
    test split's holdout of that order) as targets, and the history keeps only the lines before
    them. Users left without history or targets sit a round out.

    By time, lines of one basket share its time, so their order within it is random (by `seed`):
    a ratings session is one basket, and its lines are stored by item index, which would bias the
    targets."""
    line_basket = history.line_baskets()
    line_user = history.basket_users()[line_basket]
    per_user = np.bincount(line_user, minlength=history.n_users)
    shuffle = np.random.default_rng(seed).random(len(line_basket))
    order_key = np.lexsort((shuffle, line_user) if order == "random" else (shuffle, line_basket))
    position = np.empty(len(line_basket), np.int64)
    position[order_key] = np.arange(len(line_basket)) - np.repeat(np.r_[0, np.cumsum(per_user)[:-1]], per_user)
    held = held_out_counts(per_user, share)
    out = []
    for j in range(1, rounds + 1):
        begin = per_user - j * held
        before = position < begin[line_user]
        testable = (begin > 0)[line_user]
        target = ~before & (position < (begin + held)[line_user]) & testable
        if not target.any():
            break
        skipped = ~before & ~target & testable
        out.append(
            NestedHoldout(
                history.keep_lines(before),
                _items_by_user(line_user[target], history.items[target]),
                _items_by_user(line_user[skipped], history.items[skipped]),
            )
        )
    return out


def _items_by_user(users: np.ndarray, items: np.ndarray) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for user, item in zip(users.tolist(), items.tolist()):
        out.setdefault(user, set()).add(item)
    return out


def holdout_splits(
    dataset: Dataset, share: float = HOLDOUT_SHARE, order: HoldoutOrder = "time", seed: int = 0
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
        split.protocol, split.holdout_order = "holdout", order
    return splits
