"""Lay out a tier's edge bundle: the one builder behind evaluation, batch export and deployment.

Every tier — baselines included — is served from such a folder by `edge.engine.Engine`, so the
metrics, latency and memory logged for a tier come from what a node would run. `lay_out` writes
every file of `edge.bundle` except the manifest; `sign` then signs the folder.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from data_contracts import schema
from edge import bundle
from models.baskets import BasketHistory
from models.candidates import CandidateGenerator
from models.catalog import Catalog
from models.npz import write_arrays
from models.scorers import RANKER

CO_PURCHASE_ITEMS = 5  # "often bought with" items kept per item
CO_PURCHASE_MIN_BASKETS = 2  # a pair seen in fewer baskets is noise
ITEM_COLUMNS = (schema.ITEM_ID, schema.TITLE, schema.CATEGORY, schema.DEPARTMENT, schema.BRAND)
SMALL_COUNTS = ("last_1", "last_3", "last_10")  # candidate counts in the newest 1 / 3 / 10 baskets: 0–10


@dataclass
class ServingData:
    """What every tier of one fit shares: the fitted candidate generator, ids and stock, the
    shoppers' baskets, the item table (catalog order) and the co-purchase table."""

    generator: CandidateGenerator
    catalog: Catalog
    history: BasketHistory
    items: pd.DataFrame
    co_purchase: np.ndarray  # (n_items, CO_PURCHASE_ITEMS) int32, -1 pads
    origin: str  # day 0 of the history's days (ISO time)
    trained_until: str  # the fit's cutoff (ISO time)
    exclude_seen: bool  # never recommend what the shopper bought (data where nobody repeats)
    data_hash: str  # the validated data it was fitted on

    @classmethod
    def of(
        cls,
        generator: CandidateGenerator,
        catalog: Catalog,
        history: BasketHistory,
        items: pd.DataFrame,
        origin,
        trained_until,
        exclude_seen: bool,
        data_hash: str,
    ) -> ServingData:
        table = items[[c for c in ITEM_COLUMNS if c in items.columns]].reset_index(drop=True)
        if not np.array_equal(table[schema.ITEM_ID].astype(str).to_numpy(), catalog.item_ids.astype(str)):
            raise ValueError("item table and catalog disagree on the item order")
        return cls(
            generator,
            catalog,
            history,
            table,
            co_purchase_table(history),
            str(origin),
            str(trained_until),
            bool(exclude_seen),
            str(data_hash),
        )


@dataclass
class TierScorer:
    """How one tier scores candidates: `scorer` is models.scorers' spec; a ranker tier brings its
    ONNX file (and a boosted one optionally LightGBM's own file, the cloud reference)."""

    tier: str
    scorer: dict
    onnx_file: Path | None = None
    lightgbm_file: Path | None = None
    ranker_config: dict | None = None


def co_purchase_table(
    history: BasketHistory, n: int = CO_PURCHASE_ITEMS, min_baskets: int = CO_PURCHASE_MIN_BASKETS
) -> np.ndarray:
    """(n_items, n) int32: per item the items most often in the same basket, scored by
    baskets together / sqrt(baskets with the other item) so staples do not top every list; -1 pads."""
    lines = history.line_baskets()
    baskets = sp.csr_matrix(
        (np.ones(len(lines), np.float32), (lines, history.items)), shape=(history.n_baskets, history.n_items)
    )
    together = (baskets.T @ baskets).tocsr()
    together.setdiag(0)
    together.data[together.data < min_baskets] = 0
    together.eliminate_zeros()
    weight = 1 / np.sqrt(np.maximum(history.item_basket_counts(), 1))
    out = np.full((history.n_items, n), -1, np.int32)
    for item in np.flatnonzero(np.diff(together.indptr)):
        lo, hi = together.indptr[item], together.indptr[item + 1]
        others = together.indices[lo:hi]
        score = together.data[lo:hi] * weight[others]
        best = others[np.argsort(-score, kind="stable")[:n]]
        out[item, : len(best)] = best
    return out


def lay_out(data: ServingData, tier: TierScorer, folder: Path) -> Path:
    """Write the bundle files of `tier` into `folder` (everything but the manifest and signature)."""
    folder = Path(folder)
    if tier.scorer["kind"] == RANKER and tier.onnx_file is None:
        raise ValueError(f"tier {tier.tier}: a ranker bundle needs its ONNX file")
    folder.mkdir(parents=True, exist_ok=True)
    write_arrays(folder / bundle.CANDIDATES, {k: _compact(k, v) for k, v in data.generator.state(serving=True).items()})
    catalog = data.catalog.state()
    catalog["in_stock_data"] = catalog["in_stock_data"].astype(np.uint8)  # flags
    write_arrays(folder / bundle.CATALOG, {k: _compact(k, v) for k, v in catalog.items()})
    history = BasketHistory(
        data.history.n_users,
        data.history.n_items,
        data.history.user_ptr,
        data.history.basket_ptr,
        data.history.items.astype(np.int32),
        data.history.basket_day,
    )
    history.save(folder / bundle.HISTORIES)
    write_arrays(
        folder / bundle.ITEMS,
        {
            c: data.items[c].astype("string").fillna("").str.encode("utf-8").to_numpy().astype(np.bytes_)
            for c in data.items.columns
        },
    )
    write_arrays(folder / bundle.CO_PURCHASE, {"items": data.co_purchase})
    if tier.onnx_file is not None:
        shutil.copyfile(tier.onnx_file, folder / bundle.MODEL)
    if tier.lightgbm_file is not None:
        shutil.copyfile(tier.lightgbm_file, folder / bundle.LIGHTGBM_MODEL)
    serving = {
        "tier": tier.tier,
        "scorer": tier.scorer,
        "generator": data.generator.params,
        "ranker": tier.ranker_config,
        "exclude_seen": data.exclude_seen,
        "origin": data.origin,
        "trained_until": data.trained_until,
        "data_hash": data.data_hash,
    }
    (folder / bundle.SERVING).write_text(json.dumps(serving, indent=2, default=str))
    return folder


def _compact(name: str, array: np.ndarray) -> np.ndarray:
    """Smaller dtypes for the node's memory: float64 → float32 (days since day 0 keep ~1e-4-day
    precision) and uint8 for small counts."""
    if name in SMALL_COUNTS:
        return array.astype(np.uint8)
    return array.astype(np.float32) if array.dtype == np.float64 else array


def sign(folder: Path, key, info: dict) -> dict:
    """Sign a laid-out folder with Ed25519 `key`; the manifest carries its tier, trained_until and
    data_hash (from serving.json) and `info` (registry version, metrics, …). Returns the manifest."""
    serving = json.loads((Path(folder) / bundle.SERVING).read_text())
    about = {name: serving.get(name) for name in ("tier", "trained_until", "data_hash")}
    return bundle.sign_bundle(folder, key, {**about, **info})
