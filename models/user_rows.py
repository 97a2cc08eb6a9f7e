"""`UserRows`: one shopper's statistics, what their candidates and features are built from, and
how a purchase moves them.

A generator fitted at a cutoff holds every user's rows (`CandidateGenerator.user_rows` gives one
user's as views). A node copies a shopper's rows at their first purchase after the bundle and then
folds each purchase in, at a cost bounded by the shopper's own history, never the catalogue's:

- counts, first and last day, the newest-1/3/10-basket counts and the category rows change only
  for the basket's items and categories (`add_basket`, `extend_newest`: O(basket + the items they
  ever bought));
- their TIFU-KNN vector is re-weighted in one pass over their own basket lines (`reweigh`: every
  basket's weight depends on how many came after it, so all of them move);
- their neighbours are searched again only once their history has grown by `NEIGHBOUR_REFRESH`
  since the last search. The search reads every other buyer of every item they bought, the one
  cost that grows with the shop, and one more basket rarely changes who is most similar.

Folding baskets in gives the rows a fit on the shopper's whole history gives (tested), apart from
neighbours between refreshes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

NEWEST = 10  # baskets kept for the newest-1/3/10 counts
NEIGHBOUR_REFRESH = 0.10  # search neighbours again after this share more baskets (at least one)


@dataclass
class UserRows:
    """items: (n,) sorted item indices the user bought; count: (n,) baskets with the item;
    first_day, last_day: (n,) days (since the bundle's day 0) of the first and last of them;
    last_1, last_3, last_10: (n,) baskets with it among the newest 1, 3, 10; own: (n,) the user's
    TIFU-KNN vector at each item; neighbours: (k,) rows of the fit's users most similar to them,
    searched when they had `neighbours_at` baskets. groups: (g,) sorted categories they bought,
    with cat_count, cat_first, cat_last, cat_last_3 (the same per category) and cat_items
    (distinct items of the category they bought). newest: their newest baskets' items (≤ NEWEST,
    oldest first; empty for rows read from a fit). Scalars: n_baskets, first/last basket day,
    user_gap (median days between buys of an item, NaN if no item was bought twice)."""

    items: np.ndarray
    count: np.ndarray
    first_day: np.ndarray
    last_day: np.ndarray
    last_1: np.ndarray
    last_3: np.ndarray
    last_10: np.ndarray
    own: np.ndarray
    neighbours: np.ndarray
    neighbours_at: float
    groups: np.ndarray
    cat_count: np.ndarray
    cat_first: np.ndarray
    cat_last: np.ndarray
    cat_last_3: np.ndarray
    cat_items: np.ndarray
    n_baskets: float
    first_basket: float
    last_basket: float
    user_gap: float
    user_interval: float  # mean days between baskets (0 with fewer than 2)
    user_repeat_ratio: float  # share of their basket lines that repeat an earlier purchase
    user_basket_size: float  # mean lines per basket
    newest: tuple[np.ndarray, ...] = ()

    @classmethod
    def empty(cls) -> UserRows:
        """A shopper the fit never saw."""

        def nothing(dtype=np.float64) -> np.ndarray:
            return np.zeros(0, dtype)

        return cls(
            items=nothing(np.int64),
            count=nothing(),
            first_day=nothing(),
            last_day=nothing(),
            last_1=nothing(),
            last_3=nothing(),
            last_10=nothing(),
            own=nothing(np.float32),
            neighbours=nothing(np.int32),
            neighbours_at=0.0,
            groups=nothing(np.int64),
            cat_count=nothing(),
            cat_first=nothing(),
            cat_last=nothing(),
            cat_last_3=nothing(),
            cat_items=nothing(),
            n_baskets=0.0,
            first_basket=np.nan,
            last_basket=np.nan,
            user_gap=np.nan,
            user_interval=0.0,
            user_repeat_ratio=0.0,
            user_basket_size=0.0,
        )

    def add_basket(self, basket: np.ndarray, day: float, item_groups: np.ndarray) -> UserRows:
        """These rows after a new newest basket (`basket`: its distinct items) at `day` (≥ every
        basket so far). The TIFU-KNN vector is left to `reweigh`."""
        basket = np.unique(np.asarray(basket, np.int32))
        items = np.union1d(self.items, basket).astype(np.int32)
        old, new = np.searchsorted(items, self.items), np.searchsorted(items, basket)
        count, first_day, last_day, own = (
            _spread(a, old, len(items)) for a in (self.count, self.first_day, self.last_day, self.own)
        )
        first_day[new] = np.where(count[new] == 0, day, first_day[new])
        count[new] += 1
        last_day[new] = day
        cats = _groups_of(basket, item_groups)
        groups = np.union1d(self.groups, cats).astype(np.int32)
        g_old, g_new = np.searchsorted(groups, self.groups), np.searchsorted(groups, cats)
        cat_count, cat_first, cat_last = (
            _spread(a, g_old, len(groups)) for a in (self.cat_count, self.cat_first, self.cat_last)
        )
        cat_first[g_new] = np.where(cat_count[g_new] == 0, day, cat_first[g_new])
        cat_count[g_new] += 1
        cat_last[g_new] = day
        rows = replace(
            self,
            items=items,
            count=count,
            first_day=first_day,
            last_day=last_day,
            own=own,
            groups=groups,
            cat_count=cat_count,
            cat_first=cat_first,
            cat_last=cat_last,
            n_baskets=self.n_baskets + 1,
            first_basket=day if self.n_baskets == 0 else self.first_basket,
            last_basket=day,
            newest=(*self.newest, basket)[-NEWEST:],
        )
        return rows._recount(item_groups)

    def extend_newest(self, more: np.ndarray, day: float, item_groups: np.ndarray) -> UserRows:
        """These rows after items `more` joined the newest basket, now at `day` (≥ its day)."""
        newest = self.newest[-1]
        more = np.setdiff1d(np.asarray(more, np.int32), newest)
        merged = np.union1d(newest, more)
        rows = self
        if len(more):  # count the new items as one more basket of theirs, then take that basket back
            rows = self.add_basket(more, self.last_basket, item_groups)
            rows = replace(rows, n_baskets=self.n_baskets, newest=(*self.newest[:-1], merged))
            rows = rows._uncount_categories(_groups_of(newest, item_groups), _groups_of(more, item_groups))
        if day > self.last_basket:  # the basket moved later, and with it what happened in it
            rows = replace(
                rows,
                first_day=rows.first_day.copy(),
                last_day=rows.last_day.copy(),
                cat_first=rows.cat_first.copy(),
                cat_last=rows.cat_last.copy(),
                first_basket=day if rows.n_baskets == 1 else rows.first_basket,
                last_basket=day,
            )
            at, g_at = (
                np.searchsorted(rows.items, merged),
                np.searchsorted(rows.groups, _groups_of(merged, item_groups)),
            )
            rows.last_day[at] = rows.cat_last[g_at] = day
            rows.first_day[at] = np.where(rows.count[at] == 1, day, rows.first_day[at])  # first bought in it
            rows.cat_first[g_at] = np.where(rows.cat_count[g_at] == 1, day, rows.cat_first[g_at])
        return rows._recount(item_groups)

    def _uncount_categories(self, had: np.ndarray, added: np.ndarray) -> UserRows:
        """`add_basket` of items joining a basket counted one more basket for each of their
        categories; the basket already had those in `had`: count them once."""
        twice = np.intersect1d(had, added)
        if not len(twice):
            return self
        cat_count = self.cat_count.copy()
        cat_count[np.searchsorted(self.groups, twice)] -= 1
        return replace(self, cat_count=cat_count)

    def _recount(self, item_groups: np.ndarray) -> UserRows:
        """Everything derived from the counts and the newest baskets."""
        ages = np.repeat(np.arange(len(self.newest))[::-1], [len(b) for b in self.newest])
        lines = np.concatenate(self.newest) if self.newest else np.zeros(0, np.int64)
        at = np.searchsorted(self.items, lines)
        last = {k: np.bincount(at[ages < k], minlength=len(self.items)).astype(np.uint8) for k in (1, 3, 10)}
        recent = self.newest[-3:]  # each basket's distinct categories, all three in one pass
        basket_of = np.repeat(np.arange(len(recent)), [len(b) for b in recent])
        cats = item_groups[np.concatenate(recent)] if recent else np.zeros(0, np.int64)
        known = cats >= 0
        cat_lines = np.unique((basket_of[known].astype(np.int64) << 32) + cats[known]) & 0xFFFFFFFF
        cat_last_3 = np.bincount(np.searchsorted(self.groups, cat_lines), minlength=len(self.groups)).astype(np.uint8)
        bought = item_groups[self.items]
        bought = bought[bought >= 0]
        cat_items = np.bincount(np.searchsorted(self.groups, bought), minlength=len(self.groups)).astype(np.float32)
        n_lines = float(self.count.sum())
        twice = self.count > 1
        gaps = np.sort((self.last_day[twice] - self.first_day[twice]) / (self.count[twice] - 1))
        return replace(
            self,
            last_1=last[1],
            last_3=last[3],
            last_10=last[10],
            cat_last_3=cat_last_3,
            cat_items=cat_items,
            user_gap=float(gaps[(len(gaps) - 1) // 2] + gaps[len(gaps) // 2]) / 2 if len(gaps) else np.nan,
            user_interval=(self.last_basket - self.first_basket) / (self.n_baskets - 1) if self.n_baskets > 1 else 0.0,
            user_repeat_ratio=(n_lines - len(self.items)) / n_lines if n_lines else 0.0,
            user_basket_size=n_lines / self.n_baskets if self.n_baskets else 0.0,
        )

    def reweigh(self, lines: np.ndarray, sizes: np.ndarray, tifu, own_row: int) -> UserRows:
        """The TIFU-KNN vector from every basket (`lines`: their items, oldest basket first; `sizes`:
        items per basket), and neighbours (`tifu`'s pool, never its row `own_row`) searched again
        when the history has grown by NEIGHBOUR_REFRESH since they were."""
        weights = np.repeat(tifu.basket_weights(len(sizes)).astype(np.float32), sizes)  # as the fit rounds them
        own = np.bincount(np.searchsorted(self.items, lines), weights, len(self.items))
        rows = replace(self, own=own.astype(np.float32))
        if self.n_baskets >= self.neighbours_at + max(1.0, NEIGHBOUR_REFRESH * self.neighbours_at):
            neighbours = tifu._nearest_one(self.items, rows.own, own_row)
            rows = replace(rows, neighbours=neighbours, neighbours_at=self.n_baskets)
        return rows


def _spread(values: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    """(n,) float32 zeros with `values` at `positions` (float32: a node keeps thousands of these)."""
    out = np.zeros(n, np.float32)
    out[positions] = values
    return out


def _groups_of(items: np.ndarray, item_groups: np.ndarray) -> np.ndarray:
    """The distinct known categories (sorted) of `items`."""
    groups = item_groups[np.asarray(items, np.int64)]
    return np.unique(groups[groups >= 0])
