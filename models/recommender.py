"""`Recommender`: a fitted tier plus ids, popularity and store stock — what answers top-k requests.

Used for evaluation, batch export (`lightpersml recommend`) and latency measurement, so the
numbers logged for a tier are the numbers its saved artifact reproduces.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.baselines import TIERS, _csr_from_state, _csr_state
from models.catalog import Catalog
from models.ranking import top_k
from models.ranking_tier import RankingTier


class Recommender:
    """Top-k for users (and optionally a store) from one fitted tier.

    exclude_seen: never recommend what the user already bought (data where nobody repeats).
    Known users get the tier's scores; items the tier scores 0 are ordered by popularity (the
    store's when a store is given). Unknown users get popularity alone.
    """

    def __init__(self, tier, catalog: Catalog, seen: sp.csr_matrix, exclude_seen: bool, meta: dict | None = None):
        self.tier, self.catalog, self.seen, self.exclude_seen = tier, catalog, seen, exclude_seen
        self.meta = meta or {}
        self.user_index = {u: i for i, u in enumerate(catalog.user_ids)}
        self.store_index = {s: i for i, s in enumerate(catalog.store_ids)}

    def _popularity(self, store: int | None) -> np.ndarray:
        if store is None:
            return self.catalog.popularity.astype(np.float32)
        return self.catalog.store_popularity[store].toarray().ravel().astype(np.float32)

    def recommend_indices(self, users: np.ndarray, k: int = 10, store: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(len(users), k) item indices and scores; users are indices, -1 for an unknown user."""
        users = np.asarray(users)
        known = users >= 0
        popularity = self._popularity(store)
        scores = np.zeros((len(users), len(popularity)), dtype=np.float32)
        if known.any():
            scores[known] = self.tier.score(users[known])
        # Fill the items a tier leaves at 0 by popularity, strictly below the row's smallest real score.
        positive = np.where(scores > 0, scores, np.inf).min(axis=1, keepdims=True)
        floor = np.where(np.isfinite(positive), positive * 0.5, 1.0)
        top = popularity.max() if popularity.max() > 0 else 1.0
        scores = np.where(scores > 0, scores, popularity / top * floor)
        if self.exclude_seen and known.any():
            seen = self.seen[users[known]].toarray() > 0
            scores[known] = np.where(seen, -np.inf, scores[known])
        if store is not None:
            stocked = self.catalog.in_stock[store].toarray().ravel() > 0
            scores[:, ~stocked] = -np.inf
        return top_k(scores, k)

    @property
    def batch_rows(self) -> int:
        """Users scored at once: each dense (rows, n_items) float32 copy stays near 64 MB."""
        return max(1, 2**24 // len(self.catalog.item_ids))

    def recommend(self, user_ids, k: int = 10, store_id: str | None = None) -> pd.DataFrame:
        """Columns user_id, item_id, rank (1-based), score; one row per recommended item.

        Raises KeyError for a store_id the catalog does not know.
        """
        store = None
        if store_id is not None:
            if store_id not in self.store_index:
                raise KeyError(f"unknown store_id {store_id!r}; known stores: {len(self.store_index)}")
            store = self.store_index[store_id]
        user_ids = [str(u) for u in user_ids]
        users = np.array([self.user_index.get(u, -1) for u in user_ids], dtype=np.int64)
        frames, chunk = [], self.batch_rows
        for start in range(0, len(users), chunk):
            idx, scores = self.recommend_indices(users[start:start + chunk], k, store)
            rows, ranks = np.nonzero(idx >= 0)
            frames.append(pd.DataFrame({
                "user_id": np.asarray(user_ids[start:start + chunk], dtype=object)[rows],
                "item_id": self.catalog.item_ids[idx[rows, ranks]],
                "rank": ranks + 1,
                "score": scores[rows, ranks],
            }))
        columns = ["user_id", "item_id", "rank", "score"]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    def save(self, folder: str | Path) -> Path:
        """Write `state.npz` (tier + catalog arrays), the tier's own files (a ranker model) and `meta.json`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {f"tier.{k}": v for k, v in self.tier.state().items()}
        arrays |= {f"catalog.{k}": v for k, v in self.catalog.state().items()}
        if self.exclude_seen:
            arrays |= {f"seen.{k}": v for k, v in _csr_state("m", self.seen).items()}
        np.savez_compressed(folder / "state.npz", **arrays)
        if hasattr(self.tier, "save_files"):
            self.tier.save_files(folder)
        meta = {**self.meta, "tier": self.tier.name, "kind": getattr(self.tier, "kind", "baseline"),
                "params": self.tier.params, "exclude_seen": self.exclude_seen}
        (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Recommender":
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        with np.load(folder / "state.npz") as npz:
            arrays = dict(npz)
        part = lambda prefix: {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(prefix + ".")}
        if meta.get("kind") == RankingTier.kind:
            tier = RankingTier.load(meta["params"], part("tier"), folder)
        else:
            tier_cls = TIERS[meta["tier"]]
            tier = (tier_cls(**meta["params"]) if meta["params"] else tier_cls()).load_state(part("tier"))
        seen = _csr_from_state("m", part("seen")) if meta["exclude_seen"] else None
        return cls(tier, Catalog.from_state(part("catalog")), seen, meta["exclude_seen"], meta)
