"""`BasketHistory`: every user's baskets as integer arrays, the input of every tier."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.npz import read_arrays, write_arrays


@dataclass
class BasketHistory:
    """Baskets sorted by user, then time. Users and items are integer indices.

    user_ptr: (n_users + 1,) — user u's baskets are basket rows user_ptr[u]:user_ptr[u+1].
    basket_ptr: (n_baskets + 1,) — basket b's items are items[basket_ptr[b]:basket_ptr[b+1]].
    items: (n_lines,) item index per basket line (unique within a basket).
    basket_day: (n_baskets,) basket time in days (float) since an arbitrary origin.
    """

    n_users: int
    n_items: int
    user_ptr: np.ndarray
    basket_ptr: np.ndarray
    items: np.ndarray
    basket_day: np.ndarray

    @property
    def n_baskets(self) -> int:
        return len(self.basket_day)

    def basket_users(self) -> np.ndarray:
        """(n_baskets,) the user index of each basket."""
        return np.repeat(np.arange(self.n_users), np.diff(self.user_ptr))

    def line_baskets(self) -> np.ndarray:
        """(n_lines,) the basket row of each line."""
        return np.repeat(np.arange(self.n_baskets), np.diff(self.basket_ptr))

    def user_item_counts(self):
        """(n_users, n_items) number of baskets of the user containing the item (SciPy CSR:
        training and evaluation only, never on a node)."""
        import scipy.sparse as sp

        users = self.basket_users()[self.line_baskets()]
        ones = np.ones(len(self.items), dtype=np.float32)
        return sp.csr_matrix((ones, (users, self.items)), shape=(self.n_users, self.n_items))

    def item_basket_counts(self) -> np.ndarray:
        """(n_items,) number of baskets containing the item."""
        return np.bincount(self.items, minlength=self.n_items).astype(np.float64)

    def repeat_share(self) -> float:
        """Share of (user, item) pairs bought in more than one basket; ~0 for ratings-like data."""
        counts = self.user_item_counts()
        return float((counts.data > 1).mean()) if counts.nnz else 0.0

    def save(self, path) -> None:
        """Uncompressed, so a node memory-maps it (`models.npz.read_arrays`)."""
        write_arrays(
            path,
            {
                "shape": np.array([self.n_users, self.n_items]),
                "user_ptr": self.user_ptr,
                "basket_ptr": self.basket_ptr,
                "items": self.items,
                "basket_day": self.basket_day,
            },
        )

    @classmethod
    def load(cls, path) -> BasketHistory:
        a = read_arrays(path)
        n_users, n_items = (int(x) for x in a["shape"])
        return cls(n_users, n_items, a["user_ptr"], a["basket_ptr"], a["items"], a["basket_day"])

    def baskets_of(self, user: int) -> tuple[list[np.ndarray], np.ndarray]:
        """User `user`'s baskets (item arrays, oldest first) and their days."""
        rows = range(self.user_ptr[user], self.user_ptr[user + 1])
        return [self.items[self.basket_ptr[b] : self.basket_ptr[b + 1]] for b in rows], self.basket_day[list(rows)]

    def newest_baskets(self, user: int, k: int) -> tuple[np.ndarray, ...]:
        """User `user`'s newest `k` baskets (item arrays, oldest first)."""
        start = max(self.user_ptr[user], self.user_ptr[user + 1] - k)
        return tuple(
            self.items[self.basket_ptr[b] : self.basket_ptr[b + 1]] for b in range(start, self.user_ptr[user + 1])
        )

    def lines_of(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """User `user`'s basket lines (items, oldest basket first) and the number of items per basket."""
        ptr = self.basket_ptr[self.user_ptr[user] : self.user_ptr[user + 1] + 1]
        return self.items[ptr[0] : ptr[-1]], np.diff(ptr)

    @classmethod
    def single_user(cls, baskets: list[np.ndarray], days: np.ndarray, n_items: int) -> BasketHistory:
        """A one-user history from baskets in time order (items unique within a basket)."""
        sizes = [len(b) for b in baskets]
        items = np.concatenate(baskets).astype(np.int64) if baskets else np.zeros(0, np.int64)
        return cls(
            1,
            n_items,
            np.array([0, len(baskets)], np.int64),
            np.r_[0, np.cumsum(sizes)].astype(np.int64),
            items,
            np.asarray(days, dtype=np.float64),
        )

    def before(self, day: float) -> BasketHistory:
        """The same users and items, keeping only baskets strictly before `day`."""
        return self.keep_lines(np.repeat(self.basket_day < day, np.diff(self.basket_ptr)))

    def keep_lines(self, keep: np.ndarray) -> BasketHistory:
        """The same users and items with only the lines where `keep` ((n_lines,) bool); baskets
        left empty are dropped."""
        per_basket = np.bincount(self.line_baskets()[keep], minlength=self.n_baskets)
        kept = per_basket > 0
        per_user = np.bincount(self.basket_users()[kept], minlength=self.n_users)
        return BasketHistory(
            n_users=self.n_users,
            n_items=self.n_items,
            user_ptr=np.r_[0, np.cumsum(per_user)].astype(np.int64),
            basket_ptr=np.r_[0, np.cumsum(per_basket[kept])].astype(np.int64),
            items=self.items[keep],
            basket_day=self.basket_day[kept],
        )

    def first_baskets(self, start: float, end: float) -> dict[int, set[int]]:
        """user → items of their first basket in [start, end), for users with a basket before `start`."""
        return {user: items for user, (_, items) in self.first_baskets_with_days(start, end).items()}

    def first_baskets_with_days(self, start: float, end: float) -> dict[int, tuple[float, set[int]]]:
        """user → (day, items) of their first basket in [start, end), for users with a basket before `start`."""
        users = self.basket_users()
        first_day = self.basket_day[np.minimum(self.user_ptr[:-1], max(self.n_baskets - 1, 0))]
        targets: dict[int, tuple[float, set[int]]] = {}
        for b in np.flatnonzero((self.basket_day >= start) & (self.basket_day < end)):
            user = int(users[b])
            if user not in targets and first_day[user] < start:
                items = set(self.items[self.basket_ptr[b] : self.basket_ptr[b + 1]].tolist())
                targets[user] = (float(self.basket_day[b]), items)
        return targets
