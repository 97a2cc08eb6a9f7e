"""`Catalog`: the ids and store data every tier of one fit shares (no pandas: the edge node loads it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.baselines import _csr_from_state, _csr_state
from models.rows import Rows


@dataclass
class Catalog:
    """Ids and store data shared by all tiers of one fit.

    item_ids: (n_items,) str; user_ids: (n_users,) str; popularity: (n_items,) basket counts.
    store_ids: (n_stores,) str; in_stock: (n_stores, n_items) 1 where the item is available;
    store_popularity: (n_stores, n_items) basket counts at that store.
    item_groups: (n_items,) int64 category index of each item, -1 when unknown (None: no categories).
    """

    item_ids: np.ndarray
    user_ids: np.ndarray
    popularity: np.ndarray
    store_ids: np.ndarray
    in_stock: Rows  # a SciPy CSR matrix when built by the splits; `Rows` once loaded from state
    store_popularity: Rows
    item_groups: np.ndarray | None = None

    def state(self) -> dict[str, np.ndarray]:
        groups = {} if self.item_groups is None else {"item_groups": self.item_groups}
        return {
            "item_ids": self.item_ids.astype(str),
            "user_ids": self.user_ids.astype(str),
            "popularity": self.popularity,
            "store_ids": self.store_ids.astype(str),
            **groups,
            **_csr_state("in_stock", _sorted_rows(self.in_stock)),
            **_csr_state("store_popularity", _sorted_rows(self.store_popularity)),
        }

    @classmethod
    def from_state(cls, state: dict) -> Catalog:
        return cls(
            state["item_ids"],
            state["user_ids"],
            state["popularity"],
            state["store_ids"],
            _csr_from_state("in_stock", state),
            _csr_from_state("store_popularity", state),
            state.get("item_groups"),
        )


def _sorted_rows(matrix) -> Rows:
    """`matrix` (Rows or SciPy CSR) as Rows with sorted columns, so a node can use it as stored."""
    return matrix.sorted() if isinstance(matrix, Rows) else Rows.from_scipy(matrix)
