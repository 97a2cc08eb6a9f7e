"""TIFU-KNN (Hu et al., SIGIR 2020): the neighbour model behind every tier's candidates, and the
TIFU-KNN baseline's score (`models.scorers`: G-TopFreq and P-TopFreq need no model of their own).

`score(users) -> (len(users), n_items)` for a batch of known users.
"""

from __future__ import annotations

import numpy as np

from models.baskets import BasketHistory
from models.rows import Rows, row_positions


class TIFUKNN:
    """TIFU-KNN: a user vector from time-decayed groups of baskets, mixed with its k nearest users.

    Baskets (oldest first) are cut into groups of `group_size` counted from the newest, so only the
    oldest group may be short. Within a group a basket `d` baskets before the group's newest gets
    weight `within_decay**d / group_len`; a group `g` groups before the newest gets
    `group_decay**g / n_groups`. Prediction = alpha * own vector + (1 - alpha) * mean of the
    `n_neighbors` most cosine-similar users' vectors.
    """

    name = "tifu_knn"

    def __init__(
        self,
        n_neighbors: int = 300,
        group_size: int = 7,
        within_decay: float = 0.9,
        group_decay: float = 0.7,
        alpha: float = 0.7,
    ):
        self.params = dict(
            n_neighbors=n_neighbors,
            group_size=group_size,
            within_decay=within_decay,
            group_decay=group_decay,
            alpha=alpha,
        )

    def user_vectors(self, history: BasketHistory) -> Rows:
        """(n_users, n_items) time-decayed basket averages."""
        basket_user = history.basket_users()
        from_newest = history.user_ptr[basket_user + 1] - 1 - np.arange(history.n_baskets)
        weight = self._weights(from_newest, np.diff(history.user_ptr)[basket_user])
        lines = history.line_baskets()
        return Rows.from_entries(
            basket_user[lines], history.items, weight[lines].astype(np.float32), (history.n_users, history.n_items)
        )

    def basket_weights(self, n_baskets: int) -> np.ndarray:
        """(n_baskets,) the weight of each of one user's baskets (oldest first) in their vector."""
        return self._weights(np.arange(n_baskets)[::-1], np.full(n_baskets, n_baskets))

    def _weights(self, from_newest: np.ndarray, n_baskets_of_user: np.ndarray) -> np.ndarray:
        """Each basket's weight from its position (0: its user's newest) and its user's basket count."""
        m, rb, rg = self.params["group_size"], self.params["within_decay"], self.params["group_decay"]
        group = from_newest // m  # 0 = newest group
        n_groups = (n_baskets_of_user + m - 1) // m
        oldest_len = n_baskets_of_user - (n_groups - 1) * m
        group_len = np.where(group == n_groups - 1, oldest_len, m)
        return rb ** (from_newest % m) / group_len * rg**group / n_groups

    def fit(self, history: BasketHistory) -> TIFUKNN:
        self.vectors = self.user_vectors(history)
        self.pool, self._unit_pool_t = self.vectors, None
        self.neighbors = self._nearest(self.vectors, np.arange(history.n_users))
        return self

    def _nearest(self, vectors: Rows, own_rows: np.ndarray, chunk: int = 512) -> np.ndarray:
        """(len(vectors), k) indices into `self.pool` of the most cosine-similar users, never the
        pool row `own_rows[i]` of the user itself (-1: a user not in the pool)."""
        unit_pool_t, unit = self.similarity_index().to_scipy(), _unit_rows(vectors).to_scipy()  # fitting only
        k = self._neighbour_count()
        neighbors = np.zeros((vectors.shape[0], k), dtype=np.int32)
        for start in range(0, vectors.shape[0], chunk):
            rows = np.arange(start, min(start + chunk, vectors.shape[0]))
            sim = (unit[rows] @ unit_pool_t).toarray()
            own = own_rows[rows]
            sim[np.flatnonzero(own >= 0), own[own >= 0]] = -np.inf  # not your own neighbour
            neighbors[rows] = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        return neighbors

    def _neighbour_count(self) -> int:
        """Neighbours per user: `n_neighbors`, fewer when the pool has fewer other users."""
        return min(self.params["n_neighbors"], max(self.pool.shape[0] - 1, 1))

    def similarity_index(self) -> Rows:
        """(n_items, n_pool) the pool's rows scaled to unit length, transposed: computed once per
        pool, since a serving node asks for one shopper's neighbours at a time."""
        if getattr(self, "_unit_pool_t", None) is None:
            self._unit_pool_t = _unit_rows(self.pool).transpose()
        return self._unit_pool_t

    def for_vectors(self, vectors: Rows, own_rows: np.ndarray) -> TIFUKNN:
        """A TIFU-KNN for new user vectors (e.g. a user's history with newer baskets), whose
        neighbours come from this fit's users; own_rows: each new row's index in this fit, or -1."""
        other = TIFUKNN(**self.params)
        other.vectors, other.pool = vectors, self.pool
        other._unit_pool_t = self.similarity_index()
        own_rows = np.asarray(own_rows)
        if other.vectors.shape[0] == 1:  # a serving node's shopper: no sparse matrix product to set up
            other.neighbors = self._nearest_one(other.vectors.indices, other.vectors.data, int(own_rows[0]))[None]
        else:
            other.neighbors = self._nearest(other.vectors, own_rows)
        return other

    def _nearest_one(self, items: np.ndarray, weights: np.ndarray, own_row: int) -> np.ndarray:
        """`_nearest` for one user vector (its items and weights): (k,) pool rows."""
        unit_pool_t = self.similarity_index()
        weights = np.asarray(weights, np.float64) / max(
            float(np.sqrt(np.square(weights, dtype=np.float64).sum())), 1e-12
        )
        lines = row_positions(unit_pool_t.indptr, items)
        sim = np.bincount(
            unit_pool_t.indices[lines],
            np.repeat(weights, np.diff(unit_pool_t.indptr)[items]) * unit_pool_t.data[lines],
            minlength=self.pool.shape[0],
        )
        if own_row >= 0:
            sim[own_row] = -np.inf
        k = self._neighbour_count()
        return np.argpartition(-sim, k - 1)[:k].astype(np.int32)

    def score(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) dense predictions (evaluation and tuning; a node scores one
        shopper's candidates from their rows instead, `models.candidates`)."""
        import scipy.sparse as sp

        alpha = self.params["alpha"]
        own = self.vectors.to_scipy()[users].toarray()
        k = self.neighbors.shape[1]
        pick = sp.csr_matrix(
            (
                np.full(len(users) * k, 1.0 / k, dtype=np.float32),
                (np.repeat(np.arange(len(users)), k), self.neighbors[users].ravel()),
            ),
            shape=(len(users), self.pool.shape[0]),
        )
        neighbours = (pick @ self.pool.to_scipy()).toarray()
        return alpha * own + (1 - alpha) * neighbours

    def state(self) -> dict[str, np.ndarray]:
        """The fit: user vectors and neighbours. Its similarity index is derived (`serving_state`)."""
        return {**_csr_state("vectors", self.vectors), "neighbors": self.neighbors}

    def serving_state(self) -> dict[str, np.ndarray]:
        """`state` plus the similarity index, so a node maps it from its bundle instead of building
        it in its own memory (~10 MB on Complete Journey)."""
        index = self.similarity_index()
        return {
            **self.state(),
            **_csr_state("similarity", Rows(index.indptr, index.indices, index.data.astype(np.float32), index.shape)),
        }

    def load_state(self, state: dict) -> TIFUKNN:
        self.vectors = _csr_from_state("vectors", state)
        self.pool = self.vectors
        self.neighbors = state["neighbors"]
        self._unit_pool_t = _csr_from_state("similarity", state) if "similarity_data" in state else None
        return self

    def param_count(self) -> int:
        return int(self.vectors.nnz + self.neighbors.size)


def _unit_rows(matrix: Rows) -> Rows:
    norms = np.sqrt(np.bincount(matrix.row_ids(), np.square(matrix.data, dtype=np.float64), matrix.shape[0]))
    return matrix.scale_rows(1 / np.maximum(norms, 1e-12))


def _csr_state(prefix: str, matrix) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_data": matrix.data,
        f"{prefix}_indices": matrix.indices,
        f"{prefix}_indptr": matrix.indptr,
        f"{prefix}_shape": np.array(matrix.shape),
    }


def _csr_from_state(prefix: str, state: dict) -> Rows:
    return Rows(
        np.asarray(state[f"{prefix}_indptr"], np.int64),
        state[f"{prefix}_indices"],
        state[f"{prefix}_data"],
        tuple(int(n) for n in state[f"{prefix}_shape"]),
    )
