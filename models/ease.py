"""EASE (Steck, WWW 2019): an item-item model in closed form, for shops where a shopper rarely buys
the same item twice (ratings, apparel, home goods), and a source of items new to a shopper on
grocery data.

With X the (users × items) 0/1 matrix of who bought what, P = (XᵀX + λI)⁻¹ and
B = I − P · diag(1 / diag P) with diag B = 0; a shopper who bought items S scores item j with
Σ_{i ∈ S} B[i, j]. The inverse is dense in the number of items, so only the `max_items` items
with the most buyers take part (every item on a catalogue up to that size; the rest of a larger
one gets no score). A node keeps each item's `keep` largest weights by magnitude, as rows of a
sparse matrix: negative weights matter (keeping the 200 largest positive ones of MovieLens-100k's
1,682 items lost 6% NDCG@10, the 200 largest by magnitude 1%).
"""

from __future__ import annotations

import numpy as np

from models.rows import Rows, row_positions

MAX_ITEMS = 8_000  # a dense 8,000² float64 inverse: 0.5 GB and about a minute on 2 cores
KEEP = 200  # weights kept per item


class EASE:
    """fit(bought: Rows (n_users, n_items), any positive value = bought) → `weights`: Rows
    (n_items, n_items) float32, row i = what buying i adds to each other item's score."""

    name = "ease"

    def __init__(self, l2: float = 300.0, keep: int = KEEP, max_items: int = MAX_ITEMS):
        self.params = dict(l2=float(l2), keep=int(keep), max_items=int(max_items))

    def fit(self, bought: Rows) -> EASE:
        n_items, keep = bought.shape[1], self.params["keep"]
        buyers = np.bincount(bought.indices, minlength=n_items)
        modelled = np.sort(np.argsort(-buyers, kind="stable")[: self.params["max_items"]])
        modelled = modelled[buyers[modelled] > 0]
        column = np.full(n_items, -1, np.int64)
        column[modelled] = np.arange(len(modelled))
        inside = column[bought.indices] >= 0
        x = Rows.from_entries(
            bought.row_ids()[inside],
            column[bought.indices[inside]],
            np.ones(int(inside.sum()), np.float32),
            (bought.shape[0], len(modelled)),
        ).to_scipy()
        x.data[:] = 1.0  # bought at all, however often
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.params["l2"]
        inverse = np.linalg.inv(gram)
        weights = -inverse / np.diag(inverse)
        np.fill_diagonal(weights, 0.0)
        top = min(keep, len(modelled))
        kept = np.argpartition(-np.abs(weights), top - 1, axis=1)[:, :top] if top else np.zeros((0, 0), np.int64)
        rows = np.repeat(modelled, kept.shape[1])
        values = np.take_along_axis(weights, kept, axis=1).ravel()
        nonzero = values != 0
        self.weights = Rows.from_entries(
            rows[nonzero], modelled[kept.ravel()][nonzero], values[nonzero].astype(np.float32), (n_items, n_items)
        )
        return self

    def scores(self, items: np.ndarray) -> np.ndarray:
        """(n_items,) float64 score of every item for a shopper who bought `items` (distinct indices)."""
        lines = row_positions(self.weights.indptr, np.asarray(items, np.int64))
        return np.bincount(self.weights.indices[lines], self.weights.data[lines], minlength=self.weights.shape[1])

    def score(self, bought: Rows) -> np.ndarray:
        """(n_users, n_items) scores of every user of `bought` (a batch, for evaluation)."""
        return (bought.to_scipy().astype(bool).astype(np.float32) @ self.weights.to_scipy()).toarray()

    def state(self) -> dict[str, np.ndarray]:
        w = self.weights
        return {"ease.indptr": w.indptr, "ease.indices": w.indices, "ease.data": w.data}

    def load_state(self, state: dict) -> EASE:
        n = len(state["ease.indptr"]) - 1
        self.weights = Rows(state["ease.indptr"], state["ease.indices"], state["ease.data"], (n, n))
        return self

    def param_count(self) -> int:
        return int(self.weights.nnz)
