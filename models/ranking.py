"""Top-k selection over dense score rows, with item masks."""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k best items per row, best first.

    scores: (n_rows, n_items), -inf for items that must not be recommended.
    Returns (n_rows, k) int64 indices and float scores; slots with -inf score are -1.
    Ties at the k-th place are broken arbitrarily but deterministically (same scores, same
    result), so evaluation and `recommend` agree; within the k, equal scores are ordered by index.
    """
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    best = np.take_along_axis(part_scores, order, axis=1)
    idx = np.where(np.isfinite(best), idx, -1)
    return idx, best
