"""EASE (Steck, WWW 2019): an item-item model in closed form, for shops where a shopper rarely buys
the same item twice (ratings, apparel, home goods), and a source of items new to a shopper on
grocery data.

With X the (users × items) 0/1 matrix of who bought what, P = (XᵀX + λI)⁻¹ and
B = I − P · diag(1 / diag P) with diag B = 0; a shopper who bought items S scores item j with
Σ_{i ∈ S} B[i, j]. The inverse is dense in the number of items (computed from the shoppers'
side when they are fewer: `_weight_blocks`), so only the `max_items` items with the most buyers
take part (every item on a catalogue up to that size; the rest of a larger one gets no score). A node keeps each item's `keep` largest weights by magnitude, as rows of a
sparse matrix: negative weights matter (keeping the 200 largest positive ones of MovieLens-100k's
1,682 items lost 6% NDCG@10, the 200 largest by magnitude 1%).
"""

from __future__ import annotations

import numpy as np

from models.rows import Rows, row_positions

MAX_ITEMS = 8_000  # 8,000² float64 weights: 0.5 GB and 25 s on 2 cores; 3-8 s with fewer shoppers than items
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
        columns, values, top = [], [], min(keep, len(modelled))
        for _, weights in _weight_blocks(x, self.params["l2"]):
            kept = np.argpartition(-np.abs(weights), top - 1, axis=1)[:, :top]
            columns.append(kept)
            values.append(np.take_along_axis(weights, kept, axis=1))
        kept = np.concatenate(columns) if columns else np.zeros((0, 0), np.int64)
        rows = np.repeat(modelled, kept.shape[1])
        values = np.concatenate(values).ravel() if values else np.zeros(0)
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


def _weight_blocks(x, l2: float, block: int = 1024):
    """Yield (row slice, B[rows]) of EASE's dense weights B (diagonal 0) for the 0/1 (users × m)
    matrix `x`, `block` rows at a time (memory: block × m floats beside the inverse).

    B[i, j] = -P[i, j] / P[j, j] with P = (XᵀX + l2·I)⁻¹. With fewer users than items (a small
    shop's catalogue outgrows its shoppers) P comes from the users' side (Woodbury):
    P = (I - Xᵀ (l2·I + XXᵀ)⁻¹ X) / l2, which costs m²·users instead of m³.
    """
    n_users, m = x.shape
    if n_users < m:
        dense = x.toarray().astype(np.float64)
        right = np.linalg.solve(l2 * np.eye(n_users) + dense @ dense.T, dense)  # (users, m)
        diagonal = (1.0 - np.einsum("um,um->m", dense, right)) / l2

        def precision(rows: slice) -> np.ndarray:
            p = -(dense[:, rows].T @ right)
            p[np.arange(p.shape[0]), np.arange(rows.start, rows.stop)] += 1.0
            return p / l2
    else:
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += l2
        inverse = np.linalg.inv(gram)
        diagonal = np.diag(inverse).copy()

        def precision(rows: slice) -> np.ndarray:
            return inverse[rows]

    for start in range(0, m, block):
        rows = slice(start, min(start + block, m))
        weights = -precision(rows) / diagonal
        weights[np.arange(weights.shape[0]), np.arange(rows.start, rows.stop)] = 0.0
        yield rows, weights
