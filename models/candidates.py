"""Candidates and their ranking features: what a ranking tier scores for one user at one time.

Candidates per user = the items they bought before (repeat; at most `n_repeat`, best TIFU-KNN
scores first) plus the best `n_explore` items they never bought by TIFU-KNN's neighbour scores
(only items a neighbour bought: an item nobody like them bought is left to popularity fill).
Features model repurchase explicitly: how often and how recently the user bought the item (overall
and in their newest 1 / 3 / 10 baskets), time since the last purchase against the user's own and
the item's usual interval, the item's repurchase propensity and popularity, the user's repeat
habits, the same statistics for the item's category (`item_groups`), and the TIFU-KNN scores and
ranks. Plain numpy: the same code builds training rows and serves.

`CandidateGenerator` is fitted once on the baskets before a cutoff (every global, per-user and
per-(user, item) statistic is precomputed there) and then builds candidates for any users, one at
a time as a node asks (≈1 ms for a Complete Journey shopper: their own row, their neighbours'
rows, never a dense users × items product).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from models.baselines import TIFUKNN, _csr_from_state, _csr_state
from models.baskets import BasketHistory
from models.ease import EASE
from models.rows import Rows, row_positions
from models.user_rows import UserRows

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
    "in_last_1",  # 1 if in the user's newest basket
    "share_last_3",  # share of the user's newest 3 baskets with the item
    "share_last_10",
    "item_repeat_share",  # share of the item's buyers who bought it in ≥ 2 baskets
    "item_log_mean_count",  # log(mean baskets per buyer)
    "item_log_buyers",
    "user_repeat_ratio",  # share of the user's basket lines that were bought before by them
    "user_log_basket_size",  # log mean basket size
    "since_last_over_user_interval",  # days since last basket / mean days between baskets
    "tifu_rank",  # log1p(rank of the TIFU score within the user's candidates)
    "tifu_relative",  # TIFU score / the user's best candidate score
    "cat_log_count",  # log1p(user's baskets with the item's category)
    "cat_log_recency",  # log1p(days since the user last bought the category)
    "cat_recency_over_gap",  # category recency / user's mean gap between category buys
    "cat_item_share",  # item count / category count of the user
    "cat_share_last_3",  # share of the newest 3 baskets with the category
    "cat_log_items",  # log1p(distinct items of the category the user bought)
    "cat_recency_over_global_gap",  # category recency / median over users of category gaps
    "ease_score",  # EASE's score of the item for the user (models.ease); 0 without discovery
    "ease_rank",  # log1p(rank of the EASE score within the user's candidates); 0 without discovery
    "ease_relative",  # EASE score / the user's best candidate's (when positive); 0 without discovery
)


@dataclass
class RepeatStats:
    """Per (user, item) purchase statistics before a cutoff, in CSR order of `counts`.

    counts: (n_users, n_items) CSR of baskets with the item; first_day, last_day: aligned with
    counts.data. item_gap: (n_items,) median over users of (last-first)/(count-1), NaN if nobody
    bought twice. user_gap: (n_users,) median of the user's own gaps, NaN likewise.
    last_k: {k: counts in the user's newest k baskets}, aligned with counts.data.
    """

    counts: Rows
    first_day: np.ndarray
    last_day: np.ndarray
    item_gap: np.ndarray
    user_gap: np.ndarray
    last_k: dict | None = None

    @classmethod
    def from_history(cls, history: BasketHistory, last_k: tuple[int, ...] = (1, 3, 10)) -> RepeatStats:
        return cls.from_lines(history, history.items, history.n_items, last_k)

    @classmethod
    def from_lines(
        cls, history: BasketHistory, items: np.ndarray, n_items: int, last_k: tuple[int, ...] = ()
    ) -> RepeatStats:
        """Statistics of (user, `items`) pairs, `items` aligned with history.items (e.g. the
        item's category); several lines of one basket with the same value count once."""
        lines_basket = history.line_baskets()
        basket_user = history.basket_users()
        users = basket_user[lines_basket]
        keep = items >= 0
        lines_basket, users, items = lines_basket[keep], users[keep], items[keep]
        keys = users.astype(np.int64) * n_items + items
        order = np.lexsort((lines_basket, keys))
        keys, lines_basket = keys[order], lines_basket[order]
        new_basket = (np.diff(keys, prepend=-1) != 0) | (np.diff(lines_basket, prepend=-1) != 0)
        keys, lines_basket = keys[new_basket], lines_basket[new_basket]
        days = history.basket_day[lines_basket]
        from_newest = history.user_ptr[basket_user[lines_basket] + 1] - 1 - lines_basket
        starts = np.flatnonzero(np.diff(keys, prepend=-1) != 0)  # keys are ≥ 0
        ends = np.r_[starts[1:], len(keys)][: len(starts)]
        unique = keys[starts]
        pair_user, pair_item = unique // n_items, unique % n_items
        count = (ends - starts).astype(np.float32)
        first, last = days[starts], days[ends - 1]
        gap = np.where(count > 1, (last - first) / np.maximum(count - 1, 1), np.nan)
        indptr = np.r_[0, np.cumsum(np.bincount(pair_user, minlength=history.n_users))]
        counts = Rows(indptr.astype(np.int64), pair_item.astype(np.int32), count, (history.n_users, n_items))
        recent = {
            k: np.add.reduceat((from_newest < k).astype(np.float32), starts) if len(starts) else np.zeros(0, np.float32)
            for k in last_k
        }
        return cls(
            counts,
            first,
            last,
            _group_median(gap, pair_item, n_items),
            _group_median(gap, pair_user, history.n_users),
            recent,
        )


def _aligned(columns: np.ndarray, row_columns: np.ndarray, row_values: np.ndarray) -> np.ndarray:
    """(len(columns),) a sparse row's values at sorted `columns` (0 where the row has none)."""
    if not len(row_columns):
        return np.zeros(len(columns), np.float32)
    at = np.minimum(np.searchsorted(row_columns, columns), len(row_columns) - 1)
    return np.where(row_columns[at] == columns, row_values[at], 0).astype(np.float32)


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


NO_ITEMS = np.zeros(0, np.int64)


def _indices(items) -> np.ndarray:
    return np.fromiter(items, np.int64) if len(items) else NO_ITEMS


def _ranks(scores: np.ndarray) -> np.ndarray:
    """(n,) 0-based place of each score, best first (ties: the earlier row)."""
    rank = np.empty(len(scores))
    rank[np.argsort(-scores, kind="stable")] = np.arange(len(scores))
    return rank


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(a / b, nan=0.0, posinf=0.0, neginf=0.0)


class CandidateGenerator:
    """Fitted once on the baskets before a cutoff; builds candidates + features for any users."""

    def __init__(
        self,
        tifu_params: dict,
        n_repeat: int = 150,
        n_explore: int = 40,
        recent_days: float = 28.0,
        n_discovery: int = 0,
        ease_l2: float = 300.0,
    ):
        """n_discovery: candidates per user from EASE (`models.ease`: items they never bought, best
        first, beside TIFU-KNN's `n_explore`), for shops where shoppers rarely buy an item twice;
        0: no EASE model (grocery: each request would pay for a score over the whole catalogue)."""
        self.params = dict(
            tifu_params=dict(tifu_params),
            n_repeat=int(n_repeat),
            n_explore=int(n_explore),
            recent_days=float(recent_days),
            n_discovery=int(n_discovery),
            ease_l2=float(ease_l2),
        )
        self.tifu = TIFUKNN(**tifu_params)
        self.ease = EASE(l2=ease_l2) if n_discovery else None

    # ---- fitting -------------------------------------------------------------------------
    def fit(
        self, history: BasketHistory, cutoff_day: float, item_groups: np.ndarray | None = None
    ) -> CandidateGenerator:
        """`history` holds only baskets before `cutoff_day`; item_groups: (n_items,) category
        index, -1 unknown (optional)."""
        n_items = history.n_items
        self.tifu.fit(history)
        groups = np.full(n_items, -1, np.int64) if item_groups is None else np.asarray(item_groups, np.int64)
        self.item_groups = groups
        self.cutoff_day = np.array(float(cutoff_day))
        users = self._user_statistics(history)
        self.item_gap, self.cat_gap_global = users.pop("_item_gap"), users.pop("_cat_gap")
        self.__dict__.update(users)
        popularity = history.item_basket_counts()
        recent_lines = history.basket_day[history.line_baskets()] >= cutoff_day - self.params["recent_days"]
        buyers = np.bincount(self.counts.indices, minlength=n_items).astype(np.float64)
        repeat_buyers = np.bincount(self.counts.indices, weights=self.counts.data > 1, minlength=n_items)
        self.popularity = popularity
        self.recent_popularity = np.bincount(history.items[recent_lines], minlength=n_items).astype(np.float64)
        self.item_repeat_share = _ratio(repeat_buyers, buyers)
        self.item_mean_count = _ratio(popularity, buyers)
        self.item_buyers = buyers
        if self.ease is not None:
            self.ease.fit(self.counts)
        return self

    def _user_statistics(self, history: BasketHistory) -> dict:
        """Every per-user array of `history`'s users, plus the item and category
        gaps of these users (`_item_gap`, `_cat_gap`: global statistics when fitting all users)."""
        n_users = history.n_users
        stats = RepeatStats.from_history(history, last_k=(1, 3, 10))
        n_baskets = np.diff(history.user_ptr)
        has = n_baskets > 0
        last_basket = np.where(has, history.basket_day[np.maximum(history.user_ptr[1:] - 1, 0)], np.nan)
        first_basket = np.where(
            has, history.basket_day[np.minimum(history.user_ptr[:-1], max(history.n_baskets - 1, 0))], np.nan
        )
        n_lines = np.bincount(history.basket_users()[history.line_baskets()], minlength=n_users).astype(np.float64)
        pair_user = np.repeat(np.arange(n_users), np.diff(stats.counts.indptr))
        repeats = np.bincount(pair_user, weights=stats.counts.data - 1, minlength=n_users)
        groups = self.item_groups
        n_groups = int(groups.max()) + 1 if len(groups) and groups.max() >= 0 else 1
        cat = RepeatStats.from_lines(history, groups[history.items], n_groups, last_k=(3,))
        item_group_of_pair = groups[stats.counts.indices]
        ok = item_group_of_pair >= 0
        cat_items = Rows.from_entries(
            pair_user[ok], item_group_of_pair[ok], np.ones(int(ok.sum()), np.float32), (n_users, n_groups)
        )
        return dict(
            counts=stats.counts,
            first_day=stats.first_day,
            last_day=stats.last_day,
            last_1=stats.last_k[1],
            last_3=stats.last_k[3],
            last_10=stats.last_k[10],
            user_gap=stats.user_gap,
            n_baskets=n_baskets.astype(np.float64),
            last_basket=last_basket,
            user_interval=_ratio(last_basket - first_basket, n_baskets - 1.0),
            user_repeat_ratio=_ratio(repeats, n_lines),
            user_basket_size=_ratio(n_lines, n_baskets.astype(np.float64)),
            cat_counts=cat.counts,
            cat_first=cat.first_day,
            cat_last=cat.last_day,
            cat_last_3=cat.last_k[3],
            cat_items=cat_items,
            _item_gap=stats.item_gap,
            _cat_gap=cat.item_gap,
        )

    def for_history(self, history: BasketHistory, now_day: float, fitted_users: np.ndarray) -> CandidateGenerator:
        """A generator for the users of `history` (e.g. one shopper's baskets including ones newer
        than the fit) at `now_day`. It keeps this fit's item statistics and draws TIFU-KNN neighbours
        from this fit's users; fitted_users: each row's user index in this fit, or -1 if new."""
        other = copy.copy(self)
        users = self._user_statistics(history)
        del users["_item_gap"], users["_cat_gap"]
        other.__dict__.update(users)
        other.cutoff_day = np.array(float(now_day))
        other.tifu = self.tifu.for_vectors(self.tifu.user_vectors(history), fitted_users)
        return other

    # ---- serving -------------------------------------------------------------------------
    def build(
        self, users: np.ndarray, at: np.ndarray | None = None, withheld: dict[int, set[int]] | None = None
    ) -> CandidateSet:
        """Candidates and features for `users` (indices into the fitted history), in that order,
        each asked at its own time `at` ((len(users),) days; None: the fit's cutoff). Times before
        the cutoff count as the cutoff: the fit knows nothing later than it, so nothing earlier.
        withheld: user → items never to offer them (training lists: their own items outside the
        round, `splits.holdout.NestedHoldout.skipped`).
        One user at a time, as a node asks: training rows and served rows are the same code."""
        users = np.asarray(users, dtype=np.int64)
        cutoff_day = float(self.cutoff_day)
        at = np.full(len(users), cutoff_day) if at is None else np.maximum(np.asarray(at, np.float64), cutoff_day)
        withheld = withheld or {}
        rows = [
            self.candidate_rows(self.user_rows(int(user)), float(day), _indices(withheld.get(int(user), ())))
            for user, day in zip(users, at)
        ]
        return CandidateSet(
            users=users,
            user_ptr=np.r_[0, np.cumsum([len(items) for items, _ in rows])].astype(np.int64),
            items=np.concatenate([items for items, _ in rows]) if rows else np.zeros(0, np.int64),
            features=(
                np.concatenate([features for _, features in rows])
                if rows
                else np.zeros((0, len(FEATURE_NAMES)), np.float32)
            ),
        )

    def user_rows(self, user: int, newest: tuple[np.ndarray, ...] = ()) -> UserRows:
        """User `user`'s fitted rows (views of this fit's arrays; `newest`: their newest baskets'
        items, oldest first, for folding later purchases in)."""
        lo, hi = self.counts.indptr[user], self.counts.indptr[user + 1]
        items = self.counts.indices[lo:hi]
        clo, chi = self.cat_counts.indptr[user], self.cat_counts.indptr[user + 1]
        groups = self.cat_counts.indices[clo:chi]
        return UserRows(
            items=items,
            count=self.counts.data[lo:hi],
            first_day=self.first_day[lo:hi],
            last_day=self.last_day[lo:hi],
            last_1=self.last_1[lo:hi],
            last_3=self.last_3[lo:hi],
            last_10=self.last_10[lo:hi],
            own=_aligned(items, *self.tifu.vectors.row(user)),
            neighbours=self.tifu.neighbors[user],
            neighbours_at=float(self.n_baskets[user]),
            groups=groups,
            cat_count=self.cat_counts.data[clo:chi],
            cat_first=self.cat_first[clo:chi],
            cat_last=self.cat_last[clo:chi],
            cat_last_3=self.cat_last_3[clo:chi],
            cat_items=_aligned(groups, *self.cat_items.row(user)),
            n_baskets=float(self.n_baskets[user]),
            first_basket=float(self.last_basket[user] - self.user_interval[user] * max(self.n_baskets[user] - 1, 0)),
            last_basket=float(self.last_basket[user]),
            user_gap=float(self.user_gap[user]),
            user_interval=float(self.user_interval[user]),
            user_repeat_ratio=float(self.user_repeat_ratio[user]),
            user_basket_size=float(self.user_basket_size[user]),
            newest=tuple(newest),
        )

    def _tifu(self, rows: UserRows, withheld: np.ndarray = NO_ITEMS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """TIFU-KNN's parts of a user's score beyond their own vector: (the neighbours' share of
        the score (mean vector × (1 - alpha)) of the items they bought, the explore items: at most
        `n_explore` items they never bought (nor `withheld`) that neighbours did, best first (ties
        by index), and the neighbours' share of theirs)."""
        tifu, alpha = self.tifu, self.tifu.params["alpha"]
        neighbours = rows.neighbours
        lines = row_positions(tifu.pool.indptr, neighbours[neighbours >= 0])
        mixed = np.bincount(tifu.pool.indices[lines], tifu.pool.data[lines], minlength=tifu.pool.shape[1])
        mixed *= (1 - alpha) / max(len(neighbours), 1)
        bought = rows.items
        mixed_bought = mixed[bought]
        mixed[bought] = 0.0
        mixed[withheld] = 0.0
        others = np.flatnonzero(mixed > 0)  # on a mask: 5x faster than on the floats
        n = self.params["n_explore"]
        if len(others) > n:  # the n best (ties at the n-th place: the lowest indices)
            threshold = np.partition(mixed[others], len(others) - n)[len(others) - n]
            others = np.r_[others[mixed[others] > threshold], others[mixed[others] == threshold]][:n]
        best = others[np.lexsort((others, -mixed[others]))[:n]]
        return mixed_bought, best, mixed[best]

    def _discovery(self, ease: np.ndarray, taken: np.ndarray) -> np.ndarray:
        """At most `n_discovery` items with a positive EASE score (`ease`: (n_items,)) not in
        `taken`, best first (ties: the lowest index)."""
        scores = ease.copy()
        scores[taken] = 0.0
        found = np.flatnonzero(scores > 0)
        return found[np.lexsort((found, -scores[found]))[: self.params["n_discovery"]]]

    def candidate_rows(
        self, rows: UserRows, now_day: float, withheld: np.ndarray = NO_ITEMS
    ) -> tuple[np.ndarray, np.ndarray]:
        """(items (n,), features (n, len(FEATURE_NAMES)) float32) of the user with `rows` at
        `now_day`; `withheld` items (indices) are never candidates."""
        bought = rows.items
        own_of_bought = rows.own
        mixed_bought, new, mixed_new = self._tifu(rows, withheld)
        ease = self.ease.scores(bought) if self.ease is not None else None
        if ease is not None:  # EASE's best items the shopper never bought, beside the neighbours' ones
            discovery = self._discovery(ease, np.r_[bought, new, withheld])
            new, mixed_new = np.r_[new, discovery], np.r_[mixed_new, np.zeros(len(discovery))]
        alpha = self.tifu.params["alpha"]
        keep = np.argsort(-(alpha * own_of_bought + mixed_bought), kind="stable")[: self.params["n_repeat"]]
        items = np.r_[bought[keep], new].astype(np.int64)
        n_rep, n_new = len(keep), len(new)
        zeros = np.zeros(n_new)
        count = np.r_[rows.count[keep], zeros]
        recency = np.r_[now_day - rows.last_day[keep], np.full(n_new, np.nan)]
        own_gap = np.where(
            count > 1,
            np.r_[(rows.last_day - rows.first_day)[keep], zeros] / np.maximum(count - 1, 1),
            np.nan,
        )
        item_gap = self.item_gap[items]
        n = len(items)
        n_b = max(rows.n_baskets, 1)
        own = np.r_[own_of_bought[keep], np.zeros(len(new))]
        tifu = alpha * own + np.r_[mixed_bought[keep], mixed_new]
        rank = _ranks(tifu)
        ease_of = ease[items] if ease is not None else np.zeros(n)
        since_last = now_day - rows.last_basket
        # category
        groups = self.item_groups[items]
        n_groups = self.cat_counts.shape[1]
        c_count, c_last, c_first, c_last3, c_items = (np.zeros(n_groups + 1) for _ in range(5))
        c_last[:] = np.nan
        gi = rows.groups
        c_count[gi], c_last[gi], c_first[gi], c_last3[gi], c_items[gi] = (
            rows.cat_count,
            rows.cat_last,
            rows.cat_first,
            rows.cat_last_3,
            rows.cat_items,
        )
        g = np.where(groups >= 0, groups, n_groups)  # unknown → an always-empty slot
        cat_count = c_count[g]
        cat_recency = now_day - c_last[g]
        cat_gap = _ratio(c_last[g] - c_first[g], cat_count - 1)
        global_gap = np.r_[self.cat_gap_global, np.nan][g]
        columns = {
            "log_count": np.log1p(count),
            "log_recency_days": _safe_log(recency),
            "log_own_gap_days": _safe_log(own_gap),
            "recency_over_own_gap": _ratio(recency, own_gap),
            "log_item_gap_days": _safe_log(item_gap),
            "recency_over_item_gap": _ratio(recency, item_gap),
            "log_user_gap_days": np.full(n, _safe_log(np.array([rows.user_gap]))[0]),
            "log_popularity": np.log1p(self.popularity[items]),
            "log_recent_popularity": np.log1p(self.recent_popularity[items]),
            "tifu_score": tifu * 100,
            "tifu_own": own * 100,
            "log_user_baskets": np.full(n, np.log1p(rows.n_baskets)),
            "log_days_since_last_basket": np.full(n, _safe_log(np.array([since_last]))[0]),
            "bought_before": np.r_[np.ones(n_rep), zeros],
            "basket_share": count / n_b,
            "in_last_1": np.r_[rows.last_1[keep], zeros],
            "share_last_3": np.r_[rows.last_3[keep], zeros] / min(n_b, 3),
            "share_last_10": np.r_[rows.last_10[keep], zeros] / min(n_b, 10),
            "item_repeat_share": self.item_repeat_share[items],
            "item_log_mean_count": np.log(np.maximum(self.item_mean_count[items], 1)),
            "item_log_buyers": np.log1p(self.item_buyers[items]),
            "user_repeat_ratio": np.full(n, rows.user_repeat_ratio),
            "user_log_basket_size": np.full(n, np.log1p(rows.user_basket_size)),
            "since_last_over_user_interval": np.full(
                n, _ratio(np.array([since_last]), np.array([rows.user_interval]))[0]
            ),
            "tifu_rank": np.log1p(rank),
            "tifu_relative": _ratio(tifu, np.full(n, tifu.max() if n else 1.0)),
            "cat_log_count": np.log1p(cat_count),
            "cat_log_recency": _safe_log(cat_recency),
            "cat_recency_over_gap": _ratio(np.nan_to_num(cat_recency), cat_gap),
            "cat_item_share": _ratio(count, cat_count),
            "cat_share_last_3": c_last3[g] / min(n_b, 3),
            "cat_log_items": np.log1p(c_items[g]),
            "cat_recency_over_global_gap": _ratio(np.nan_to_num(cat_recency), global_gap),
            "ease_score": ease_of,
            "ease_rank": np.log1p(_ranks(ease_of)) if ease is not None else np.zeros(n),
            "ease_relative": _ratio(ease_of, np.full(n, ease_of.max() if n and ease_of.max() > 0 else 0.0)),
        }
        features = np.column_stack([columns[name] for name in FEATURE_NAMES]).astype(np.float32)
        return items, np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)

    # ---- persistence ---------------------------------------------------------------------
    _ARRAYS = (
        "cutoff_day",
        "first_day",
        "last_day",
        "last_1",
        "last_3",
        "last_10",
        "item_gap",
        "user_gap",
        "popularity",
        "recent_popularity",
        "n_baskets",
        "last_basket",
        "user_interval",
        "user_repeat_ratio",
        "user_basket_size",
        "item_repeat_share",
        "item_mean_count",
        "item_buyers",
        "item_groups",
        "cat_first",
        "cat_last",
        "cat_last_3",
        "cat_gap_global",
    )
    _MATRICES = ("counts", "cat_counts", "cat_items")

    def state(self, serving: bool = False) -> dict[str, np.ndarray]:
        """Every fitted array; serving=True adds what a node would otherwise derive at load
        (TIFU-KNN's similarity index)."""
        tifu = self.tifu.serving_state() if serving else self.tifu.state()
        out = {f"tifu.{k}": v for k, v in tifu.items()}
        out.update(self.ease.state() if self.ease is not None else {})
        out.update({name: np.asarray(getattr(self, name)) for name in self._ARRAYS})
        for name in self._MATRICES:
            out.update(_csr_state(name, getattr(self, name)))
        return out

    def load_state(self, state: dict) -> CandidateGenerator:
        self.tifu.load_state({k[5:]: v for k, v in state.items() if k.startswith("tifu.")})
        if self.ease is not None:
            self.ease.load_state(state)
        for name in self._ARRAYS:
            setattr(self, name, np.asarray(state[name]))
        for name in self._MATRICES:
            setattr(self, name, _csr_from_state(name, state))
        return self

    def param_count(self) -> int:
        return int(sum(np.asarray(v).size for k, v in self.state().items() if not k.endswith("_shape")))


def build_candidates(
    history: BasketHistory,
    cutoff_day: float,
    users: np.ndarray,
    tifu_params: dict,
    item_groups: np.ndarray | None = None,
    **candidate_options,
) -> CandidateSet:
    """Candidates and features for `users` at `cutoff_day`; `history` holds only baskets before it."""
    return CandidateGenerator(tifu_params, **candidate_options).fit(history, cutoff_day, item_groups).build(users)


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
    def concat(cls, parts: list[LabelledCandidates]) -> LabelledCandidates:
        offsets = np.cumsum([0] + [len(p.basket_sizes) for p in parts[:-1]])
        return cls(
            np.concatenate([p.features for p in parts]),
            np.concatenate([p.items for p in parts]),
            np.concatenate([p.group + o for p, o in zip(parts, offsets)]),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.basket_sizes for p in parts]),
            np.concatenate([p.users for p in parts]),
        )

    def subset(self, lists: np.ndarray) -> LabelledCandidates:
        """Only the lists with index in `lists` (sorted), renumbered 0..len(lists)-1."""
        bounds = np.r_[0, np.cumsum(np.bincount(self.group, minlength=len(self.basket_sizes)))]
        rows = np.concatenate([np.arange(bounds[g], bounds[g + 1]) for g in lists]) if len(lists) else np.zeros(0, int)
        group = np.repeat(np.arange(len(lists)), bounds[np.asarray(lists) + 1] - bounds[lists])
        return LabelledCandidates(
            self.features[rows], self.items[rows], group, self.labels[rows], self.basket_sizes[lists], self.users[lists]
        )


def label(candidates: CandidateSet, targets: dict[int, set[int]]) -> LabelledCandidates:
    """Label built candidates by the users' target baskets (every candidate user must be in targets)."""
    sizes = np.diff(candidates.user_ptr)
    labels = (
        np.concatenate(
            [
                np.isin(candidates.items[candidates.user_ptr[j] : candidates.user_ptr[j + 1]], list(targets[int(u)]))
                for j, u in enumerate(candidates.users)
            ]
        ).astype(np.float32)
        if len(sizes)
        else np.zeros(0, np.float32)
    )
    return LabelledCandidates(
        candidates.features,
        candidates.items,
        np.repeat(np.arange(len(sizes)), sizes),
        labels,
        np.array([len(targets[int(u)]) for u in candidates.users]),
        candidates.users,
    )


def labelled_candidates(
    history: BasketHistory,
    cutoff_day: float,
    targets: dict[int, set[int]],
    tifu_params: dict,
    item_groups: np.ndarray | None = None,
    at: dict[int, float] | None = None,
    withheld: dict[int, set[int]] | None = None,
    **candidate_options,
) -> LabelledCandidates:
    """Candidates for the users in `targets`, labelled by their target basket, with features at
    each target basket's own time `at` (user → day; None: all at `cutoff_day`), as a node asked
    when the basket starts computes them; never the `withheld` items of a user (user → items).

    `history` may extend past the cutoff: only baskets before it are used for candidates,
    features and TIFU-KNN.
    """
    before = history.before(cutoff_day)
    users = np.array(sorted(targets), dtype=np.int64)
    times = None if at is None else np.array([at[int(u)] for u in users], dtype=np.float64)
    generator = CandidateGenerator(tifu_params, **candidate_options).fit(before, cutoff_day, item_groups)
    return label(generator.build(users, times, withheld), targets)
