"""Candidates and their ranking features: what a ranking tier scores for one user at one time.

Candidates per user = the items they bought before (repeat; at most `n_repeat`, best TIFU-KNN
scores first) plus the best `n_explore` items they never bought by TIFU-KNN's neighbour scores.
Features model repurchase explicitly: how often and how recently the user bought the item, time
since the last purchase against the user's own and the item's usual interval, popularity, and
the TIFU-KNN scores. Plain numpy: the same code builds training rows and serves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from models.baselines import TIFUKNN
from models.baskets import BasketHistory
from models.ranking import top_k

FEATURE_NAMES = (
    "log_count",  # log1p(baskets of the user with the item)
    "log_recency_days",  # log1p(days since the user last bought it); 0 when never
    "log_own_gap_days",  # log1p(user's mean days between buys of it); 0 when < 2 buys
    "recency_over_own_gap",  # recency / own gap; 0 when undefined
    "log_item_gap_days",  # log1p(median over users of their gap for the item)
    "recency_over_item_gap",
    "log_user_gap_days",  # log1p(median of the user's item gaps)
    "log_popularity",  # log1p(baskets with the item)
    "log_recent_popularity",  # log1p(baskets with the item in the last `recent_days`)
    "tifu_score",  # TIFU-KNN prediction (own + neighbours), scaled ×100
    "tifu_own",  # the user's own time-decayed vector, ×100
    "log_user_baskets",
    "log_days_since_last_basket",
    "bought_before",  # 1 for repeat candidates
    "basket_share",  # share of the user's baskets with the item
)


@dataclass
class RepeatStats:
    """Per (user, item) purchase statistics before a cutoff, in CSR order of `counts`.

    counts: (n_users, n_items) CSR of baskets with the item; first_day, last_day: aligned with
    counts.data. item_gap: (n_items,) median over users of (last-first)/(count-1), NaN if nobody
    bought twice. user_gap: (n_users,) median of the user's own gaps, NaN likewise.
    """

    counts: sp.csr_matrix
    first_day: np.ndarray
    last_day: np.ndarray
    item_gap: np.ndarray
    user_gap: np.ndarray

    @classmethod
    def from_history(cls, history: BasketHistory) -> "RepeatStats":
        lines_basket = history.line_baskets()
        users = history.basket_users()[lines_basket]
        days = history.basket_day[lines_basket]
        keys = users.astype(np.int64) * history.n_items + history.items
        order = np.lexsort((days, keys))
        keys, days = keys[order], days[order]
        starts = np.flatnonzero(np.r_[True, np.diff(keys) != 0])
        ends = np.r_[starts[1:], len(keys)]
        unique = keys[starts]
        pair_user, pair_item = unique // history.n_items, unique % history.n_items
        count = (ends - starts).astype(np.float32)
        first, last = days[starts], days[ends - 1]
        gap = np.where(count > 1, (last - first) / np.maximum(count - 1, 1), np.nan)
        indptr = np.r_[0, np.cumsum(np.bincount(pair_user, minlength=history.n_users))]
        counts = sp.csr_matrix((count, pair_item, indptr), shape=(history.n_users, history.n_items))
        return cls(counts, first, last, _group_median(gap, pair_item, history.n_items),
                   _group_median(gap, pair_user, history.n_users))


def _group_median(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """(n_groups,) median of the non-NaN values per group; NaN for groups with none."""
    out = np.full(n_groups, np.nan)
    keep = ~np.isnan(values)
    values, groups = values[keep], groups[keep]
    order = np.lexsort((values, groups))
    values, groups = values[order], groups[order]
    starts = np.flatnonzero(np.r_[True, np.diff(groups) != 0]) if len(groups) else np.array([], dtype=int)
    ends = np.r_[starts[1:], len(groups)]
    lower, upper = values[starts + (ends - starts - 1) // 2], values[starts + (ends - starts) // 2]
    out[groups[starts]] = (lower + upper) / 2
    return out


@dataclass
class CandidateSet:
    """Rows grouped by user: rows user_ptr[j]:user_ptr[j+1] belong to users[j].

    items: (n_rows,) item index; features: (n_rows, len(FEATURE_NAMES)) float32.
    """

    users: np.ndarray
    user_ptr: np.ndarray
    items: np.ndarray
    features: np.ndarray


def _safe_log(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.nan_to_num(np.maximum(x, 0), nan=0.0))


def build_candidates(history: BasketHistory, cutoff_day: float, users: np.ndarray, tifu: TIFUKNN,
                     n_repeat: int = 150, n_explore: int = 40, recent_days: float = 28.0,
                     chunk: int = 256) -> CandidateSet:
    """Candidates and features for `users` (indices into `history`) at `cutoff_day`.

    `history` must hold only baskets before the cutoff and `tifu` must be fitted on it.
    """
    stats = RepeatStats.from_history(history)
    popularity = history.item_basket_counts()
    recent_lines = history.basket_day[history.line_baskets()] >= cutoff_day - recent_days
    recent_popularity = np.bincount(history.items[recent_lines], minlength=history.n_items).astype(np.float64)
    n_baskets = np.diff(history.user_ptr)
    last_basket = np.where(n_baskets > 0, history.basket_day[np.maximum(history.user_ptr[1:] - 1, 0)], np.nan)
    counts = stats.counts
    all_items, all_users, all_features, user_ptr = [], [], [], [0]
    for start in range(0, len(users), chunk):
        batch = np.asarray(users[start:start + chunk])
        scores = tifu.score(batch)
        own = tifu.vectors[batch].toarray()
        explore, _ = top_k(np.where(own > 0, -np.inf, scores), n_explore)
        for row, user in enumerate(batch):
            lo, hi = counts.indptr[user], counts.indptr[user + 1]
            bought = counts.indices[lo:hi]
            keep = np.argsort(-scores[row, bought], kind="stable")[:n_repeat]
            new = explore[row][explore[row] >= 0]
            items = np.r_[bought[keep], new]
            n_rep = len(keep)
            count = np.r_[counts.data[lo:hi][keep], np.zeros(len(new))]
            recency = np.r_[cutoff_day - stats.last_day[lo:hi][keep], np.full(len(new), np.nan)]
            own_gap = np.where(count > 1, np.r_[(stats.last_day[lo:hi] - stats.first_day[lo:hi])[keep], np.zeros(len(new))]
                               / np.maximum(count - 1, 1), np.nan)
            item_gap = stats.item_gap[items]
            features = np.column_stack([
                np.log1p(count), _safe_log(recency), _safe_log(own_gap),
                np.nan_to_num(recency / own_gap, nan=0.0, posinf=0.0),
                _safe_log(item_gap), np.nan_to_num(recency / item_gap, nan=0.0, posinf=0.0),
                np.full(len(items), _safe_log(np.array([stats.user_gap[user]]))[0]),
                np.log1p(popularity[items]), np.log1p(recent_popularity[items]),
                scores[row, items] * 100, own[row, items] * 100,
                np.full(len(items), np.log1p(n_baskets[user])),
                np.full(len(items), _safe_log(np.array([cutoff_day - last_basket[user]]))[0]),
                np.r_[np.ones(n_rep), np.zeros(len(new))],
                count / max(n_baskets[user], 1),
            ]).astype(np.float32)
            all_items.append(items)
            all_users.append(user)
            all_features.append(features)
            user_ptr.append(user_ptr[-1] + len(items))
    return CandidateSet(
        users=np.array(all_users, dtype=np.int64), user_ptr=np.array(user_ptr, dtype=np.int64),
        items=np.concatenate(all_items).astype(np.int64) if all_items else np.zeros(0, np.int64),
        features=np.concatenate(all_features) if all_features else np.zeros((0, len(FEATURE_NAMES)), np.float32),
    )


@dataclass
class LabelledCandidates:
    """Candidates of several (cutoff, user) lists stacked for training or scoring.

    group: (n_rows,) list index 0..n_lists-1; labels: (n_rows,) 1 if the item is in the
    list's target basket; basket_sizes: (n_lists,) full target basket size (for NDCG's IDCG);
    users: (n_lists,) user index of each list.
    """

    features: np.ndarray
    items: np.ndarray
    group: np.ndarray
    labels: np.ndarray
    basket_sizes: np.ndarray
    users: np.ndarray

    @classmethod
    def concat(cls, parts: list["LabelledCandidates"]) -> "LabelledCandidates":
        offsets = np.cumsum([0] + [len(p.basket_sizes) for p in parts[:-1]])
        return cls(np.concatenate([p.features for p in parts]), np.concatenate([p.items for p in parts]),
                   np.concatenate([p.group + o for p, o in zip(parts, offsets)]),
                   np.concatenate([p.labels for p in parts]), np.concatenate([p.basket_sizes for p in parts]),
                   np.concatenate([p.users for p in parts]))


def labelled_candidates(history: BasketHistory, cutoff_day: float, targets: dict[int, set[int]],
                        tifu_params: dict, **candidate_options) -> LabelledCandidates:
    """Candidates at `cutoff_day` for the users in `targets`, labelled by their target basket.

    `history` may extend past the cutoff: only baskets before it are used for candidates,
    features and TIFU-KNN.
    """
    before = history.before(cutoff_day)
    users = np.array(sorted(targets), dtype=np.int64)
    candidates = build_candidates(before, cutoff_day, users, TIFUKNN(**tifu_params).fit(before), **candidate_options)
    sizes = np.diff(candidates.user_ptr)
    labels = np.concatenate([np.isin(candidates.items[candidates.user_ptr[j]:candidates.user_ptr[j + 1]], list(targets[u]))
                             for j, u in enumerate(candidates.users)]).astype(np.float32)
    return LabelledCandidates(candidates.features, candidates.items, np.repeat(np.arange(len(users)), sizes),
                              labels, np.array([len(targets[u]) for u in candidates.users]), candidates.users)
