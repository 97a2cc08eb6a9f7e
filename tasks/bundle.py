"""Bundle: the signed edge bundle of the registry version behind alias `edge` (format: edge.bundle).

The training pipeline logs everything a node needs with each registered version (`deploy/`: the
candidate state, catalog and ONNX ranker, plus the shoppers' baskets and the item table written
by `write_serving_data`); this step adds the co-purchase table, lays the files out and signs them.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from prefect import task
from prefect.cache_policies import NO_CACHE

from data_contracts import schema
from edge import bundle
from models.baskets import BasketHistory
from models.ranking_tier import ONNX_FILE
from tasks.features import Split

log = logging.getLogger(__name__)

CO_PURCHASE_ITEMS = 5  # "often bought with" items kept per item
CO_PURCHASE_MIN_BASKETS = 2  # a pair seen in fewer baskets is noise
ITEM_COLUMNS = (schema.ITEM_ID, schema.TITLE, schema.CATEGORY, schema.DEPARTMENT, schema.BRAND)
DEPLOY_HISTORIES, DEPLOY_ITEMS = "histories.npz", "items.parquet"


def write_serving_data(split: Split, items: pd.DataFrame, folder: Path) -> Path:
    """The shoppers' baskets and the item table (in the catalog's item order) beside a deploy fit."""
    folder.mkdir(parents=True, exist_ok=True)
    split.history.save(folder / DEPLOY_HISTORIES)
    table = items[[c for c in ITEM_COLUMNS if c in items.columns]].reset_index(drop=True)
    if not np.array_equal(table[schema.ITEM_ID].astype(str).to_numpy(), split.catalog.item_ids.astype(str)):
        raise ValueError("item table and catalog disagree on the item order")
    table.astype({c: "string" for c in table.columns}).to_parquet(folder / DEPLOY_ITEMS, index=False)
    return folder


def co_purchase_table(history: BasketHistory, n: int = CO_PURCHASE_ITEMS,
                      min_baskets: int = CO_PURCHASE_MIN_BASKETS) -> np.ndarray:
    """(n_items, n) int32: per item the items most often in the same basket, scored by
    baskets together / sqrt(baskets with the other item) so staples do not top every list; -1 pads."""
    lines = history.line_baskets()
    baskets = sp.csr_matrix((np.ones(len(lines), np.float32), (lines, history.items)),
                            shape=(history.n_baskets, history.n_items))
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
        out[item, :len(best)] = best
    return out


def write_bundle(serving_dir: Path, folder: Path, key, info: dict) -> dict:
    """Lay out and sign a bundle from a deploy folder (a saved ranking Recommender + serving data)."""
    serving_dir, folder = Path(serving_dir), Path(folder)
    meta = json.loads((serving_dir / "meta.json").read_text())
    if meta.get("kind") != "ranking" or meta["params"].get("runtime") != "onnx":
        raise ValueError(f"{serving_dir}: not an ONNX ranking tier (kind {meta.get('kind')!r}); only those run on a node")
    folder.mkdir(parents=True, exist_ok=True)
    with np.load(serving_dir / "state.npz") as npz:
        arrays = {k: _compact(k, v) for k, v in npz.items()}
    np.savez(folder / bundle.CANDIDATES, **{k[5:]: v for k, v in arrays.items() if k.startswith("tier.")})
    np.savez(folder / bundle.CATALOG, **{k[8:]: v for k, v in arrays.items() if k.startswith("catalog.")})
    shutil.copyfile(serving_dir / ONNX_FILE, folder / bundle.MODEL)
    history = BasketHistory.load(serving_dir / DEPLOY_HISTORIES)
    history.items = history.items.astype(np.int32)
    history.save(folder / bundle.HISTORIES)
    items = pd.read_parquet(serving_dir / DEPLOY_ITEMS)
    np.savez(folder / bundle.ITEMS, **{c: items[c].fillna("").str.encode("utf-8").to_numpy().astype(np.bytes_)
                                       for c in items.columns})
    if (serving_dir / bundle.TORCH_MODEL).exists():  # the teacher's: lets a benchmark serve the cloud reference
        shutil.copyfile(serving_dir / bundle.TORCH_MODEL, folder / bundle.TORCH_MODEL)
    np.savez(folder / bundle.CO_PURCHASE, items=co_purchase_table(history))
    params = meta["params"]
    serving = {"tier": params["tier"], "generator": params["generator"], "ranker": params.get("ranker"),
               "exclude_seen": meta["exclude_seen"], "origin": meta["origin"], "trained_until": meta["trained_until"]}
    (folder / bundle.SERVING).write_text(json.dumps(serving, indent=2, default=str))
    return bundle.sign_bundle(folder, key, {"tier": params["tier"], "trained_until": meta["trained_until"],
                                            "data_hash": meta.get("data_hash"), **info})


SMALL_COUNTS = ("tier.last_1", "tier.last_3", "tier.last_10", "catalog.in_stock_data")  # values 0–10


def _compact(name: str, array: np.ndarray) -> np.ndarray:
    """Smaller dtypes for the node's memory: float64 → float32 (days since day 0 keep ~1e-4-day
    precision) and uint8 for small counts and stock flags."""
    if name in SMALL_COUNTS:
        return array.astype(np.uint8)
    return array.astype(np.float32) if array.dtype == np.float64 else array


def registry_bundle(folder: Path, key_path: Path, name: str, alias: str = "edge", version: str | None = None) -> dict:
    """Build and sign the bundle of the version of registered model `name` behind `alias` (or of
    `version`); returns its manifest."""
    import mlflow

    from tasks.register import version_metrics

    client = mlflow.MlflowClient()
    try:
        if version is not None:
            version = client.get_model_version(name, str(version))
        else:
            version = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        wanted = f"version {version}" if version is not None else f"a version with alias {alias!r} (promote one first)"
        raise LookupError(f"{name} has no {wanted}") from None
    serving = version.tags.get("serving_artifacts")
    if not serving:
        raise LookupError(f"version {version.version} has no serving artifacts (tag serving_artifacts)")
    metrics = version_metrics(version)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(serving, dst_path=tmp)
        key = bundle.load_private_key(key_path)
        manifest = write_bundle(Path(local), folder, key, {
            "registered_model": name, "model_version": str(version.version),
            "aliases": list(version.aliases),
            "run_id": version.run_id, "metrics": metrics})
    log.info("bundle of %s version %s (%s) in %s", name, version.version, manifest["tier"], folder)
    return manifest


@task(name="build bundle", cache_policy=NO_CACHE, task_run_name="build bundle of {name}@{alias}")
def bundle_task(folder: Path, key_path: Path, name: str, alias: str = "edge") -> dict:
    return registry_bundle(folder, key_path, name, alias)
