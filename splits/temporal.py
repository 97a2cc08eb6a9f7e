"""Temporal split and features, computed with polars and cached by the data's content hash.

Split (DESIGN.md): the test cutoff is `test_weeks` before the newest event; test = each user's first
basket after it, for users with a basket before it. Validation repeats that construction with a
cutoff `validation_weeks` earlier, on data before the test cutoff. Nothing after a cutoff is used
for that split's history or features. The `deploy` split has no targets: its history is all the
data, for refitting the models a shop deploys.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import scipy.sparse as sp

from data_contracts import schema
from data_contracts.dataset import Dataset
from data_contracts.errors import DataContractError
from data_contracts.learnability import HoldoutOrder, Protocol, ProtocolKind, protocol_kind
from models.baskets import BasketHistory
from models.catalog import Catalog

log = logging.getLogger(__name__)

BASKET_KEY = "basket_key"
FEATURES_VERSION = 6  # bump when what is cached changes, so old caches are not read
DAY = "day"  # days since the first event, float
FEATURE_TABLES = ("item_features", "store_popularity")


@dataclass(frozen=True)
class TargetRequest:
    """What a node is asked when a target basket starts: the shopper's store (None: unknown) and
    the basket's start time (Unix seconds)."""

    store_id: str | None
    at: float


@dataclass
class Split:
    """One evaluation split. Users in `targets` all have history before `cutoff`.

    targets: user index → item indices of their first basket in [cutoff, end).
    requests: user index → the request a node sees when that basket starts (its store and time).
    features: the repeat, item and store-popularity tables (polars) computed before the cutoff.
    """

    name: str
    cutoff: pd.Timestamp
    end: pd.Timestamp
    cutoff_day: float  # the cutoff in the history's day units (days since the first event)
    history: BasketHistory
    catalog: Catalog
    targets: dict[int, set[int]]
    features: dict[str, pl.DataFrame]
    requests: dict[int, TargetRequest] = field(default_factory=dict)
    protocol: str = "temporal"  # or "holdout" (splits.holdout): how the targets were chosen
    holdout_order: str = "time"  # the holdout protocol's: each user's newest lines, or "random" ones

    @property
    def origin(self) -> pd.Timestamp:
        """Day 0 of the history's day units (the first event)."""
        return self.cutoff - pd.Timedelta(days=self.cutoff_day)

    def target_days(self) -> dict[int, float]:
        """user → when their target basket starts, in the history's day units (a node's request time)."""
        origin = _unix(self.origin)
        return {user: (self.requests[user].at - origin) / 86400.0 for user in self.targets if user in self.requests}

    def seen_items(self) -> dict[int, set[int]]:
        """Items each target user bought before the cutoff (splits repeat from explore)."""
        counts = self.history.user_item_counts()
        return {u: set(counts.indices[counts.indptr[u] : counts.indptr[u + 1]].tolist()) for u in self.targets}


def purchase_lines(dataset: Dataset) -> pl.DataFrame:
    """Purchase events as (user_id, item_id, store_id, basket_key, day, timestamp), one row per
    basket and item. Baskets are `basket_id` when given, else one per user and calendar day.
    """
    events = pl.from_pandas(dataset.events)
    if schema.EVENT_TYPE in events.columns:  # validation refuses data without any purchase
        events = events.filter(pl.col(schema.EVENT_TYPE) == "purchase")
    day_key = pl.col(schema.USER_ID) + "@" + pl.col(schema.TIMESTAMP).dt.date().cast(pl.String)
    if schema.BASKET_ID in events.columns:  # shops often number orders per user: keep users apart
        key = pl.coalesce(pl.col(schema.USER_ID) + "#" + pl.col(schema.BASKET_ID), day_key)
    else:
        key = day_key
    store = pl.col(schema.STORE_ID) if schema.STORE_ID in events.columns else pl.lit(None, dtype=pl.String)
    origin = events[schema.TIMESTAMP].min()
    lines = events.select(
        pl.col(schema.USER_ID),
        pl.col(schema.ITEM_ID),
        store.alias(schema.STORE_ID),
        key.alias(BASKET_KEY),
        pl.col(schema.TIMESTAMP),
    )
    # A basket's time is its first line's time, so all its items share one timestamp.
    lines = lines.with_columns(pl.col(schema.TIMESTAMP).min().over(BASKET_KEY))
    lines = lines.unique(subset=[BASKET_KEY, schema.ITEM_ID], keep="first", maintain_order=True)
    return lines.with_columns(((pl.col(schema.TIMESTAMP) - origin).dt.total_seconds() / 86400.0).alias(DAY))


def cutoffs(
    lines: pl.DataFrame, test_weeks: int, validation_weeks: int
) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """(cutoff, end) per split name; `end` is exclusive except for the test split (newest event)."""
    newest = pd.Timestamp(lines[schema.TIMESTAMP].max())
    test_cutoff = newest - pd.Timedelta(weeks=test_weeks)
    validation_cutoff = test_cutoff - pd.Timedelta(weeks=validation_weeks)
    after_newest = newest + pd.Timedelta(seconds=1)
    return {
        "validation": (validation_cutoff, test_cutoff),
        "test": (test_cutoff, after_newest),
        "deploy": (after_newest, after_newest),
    }


def _basket_history(before: pl.DataFrame, user_index: pl.DataFrame, item_index: pl.DataFrame) -> BasketHistory:
    lines = (
        before.join(user_index, on=schema.USER_ID).join(item_index, on=schema.ITEM_ID).sort(["u", DAY, BASKET_KEY, "i"])
    )
    baskets = lines.group_by(["u", DAY, BASKET_KEY], maintain_order=True).agg(pl.len().alias("n"))
    user_ptr = np.zeros(len(user_index) + 1, dtype=np.int64)
    np.add.at(user_ptr, baskets["u"].to_numpy() + 1, 1)
    return BasketHistory(
        n_users=len(user_index),
        n_items=len(item_index),
        user_ptr=np.cumsum(user_ptr),
        basket_ptr=np.concatenate([[0], np.cumsum(baskets["n"].to_numpy())]).astype(np.int64),
        items=lines["i"].to_numpy().astype(np.int64),
        basket_day=baskets[DAY].to_numpy(),
    )


def compute_features(before: pl.DataFrame, items: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Catalog tables from the lines before a cutoff. (The per-user repurchase statistics the
    rankers use are computed by models.candidates at every cutoff, for training and serving alike.)

    item_features: item table columns + popularity (baskets with the item) and buyers (users).
    store_popularity: per (store, item) basket count and rank within the store (1 = best).
    """
    item_counts = before.group_by(schema.ITEM_ID).agg(
        pl.len().alias("popularity"), pl.col(schema.USER_ID).n_unique().alias("buyers")
    )
    item_features = items.join(item_counts, on=schema.ITEM_ID, how="left").with_columns(
        pl.col("popularity").fill_null(0), pl.col("buyers").fill_null(0)
    )
    store_popularity = (
        before.filter(pl.col(schema.STORE_ID).is_not_null())
        .group_by([schema.STORE_ID, schema.ITEM_ID])
        .agg(pl.len().alias("baskets"))
        .with_columns(pl.col("baskets").rank("ordinal", descending=True).over(schema.STORE_ID).alias("rank"))
        .sort([schema.STORE_ID, "rank"])
    )
    return {"item_features": item_features, "store_popularity": store_popularity}


def _item_groups(dataset: Dataset, item_index: pl.DataFrame) -> np.ndarray | None:
    """(n_items,) index of each item's category (else department), -1 when missing; None without either."""
    column = next((c for c in (schema.CATEGORY, schema.DEPARTMENT) if c in dataset.items.columns), None)
    if column is None:
        return None
    items = pl.from_pandas(dataset.items[[schema.ITEM_ID, column]])
    groups = items.with_columns(pl.col(column).rank("dense").cast(pl.Int64).sub(1).fill_null(-1).alias("g"))
    return item_index.join(groups, on=schema.ITEM_ID, how="left").sort("i")["g"].fill_null(-1).to_numpy()


def _catalog(
    before: pl.DataFrame,
    user_ids: np.ndarray,
    item_index: pl.DataFrame,
    features: dict,
    dataset: Dataset,
    cutoff: pd.Timestamp,
) -> Catalog:
    n_items = len(item_index)
    popularity = (
        item_index.join(features["item_features"].select(schema.ITEM_ID, "popularity"), on=schema.ITEM_ID, how="left")
        .sort("i")["popularity"]
        .fill_null(0)
        .to_numpy()
        .astype(np.float32)
    )
    store_ids = set(before[schema.STORE_ID].drop_nulls().unique().to_list())
    for table in (dataset.stores, dataset.availability):
        if table is not None:
            store_ids |= set(table[schema.STORE_ID].dropna().astype(str))
    store_ids = np.array(sorted(store_ids), dtype=str)
    store_index = pl.DataFrame({schema.STORE_ID: store_ids, "s": np.arange(len(store_ids), dtype=np.int64)})

    def store_matrix(frame: pl.DataFrame, value: str) -> sp.csr_matrix:
        frame = frame.join(store_index, on=schema.STORE_ID).join(item_index, on=schema.ITEM_ID)
        return sp.csr_matrix(
            (frame[value].to_numpy().astype(np.float32), (frame["s"].to_numpy(), frame["i"].to_numpy())),
            shape=(len(store_ids), n_items),
        )

    store_popularity = store_matrix(features["store_popularity"], "baskets")
    sold = (store_popularity > 0).astype(np.float32)
    if dataset.availability is not None and len(dataset.availability):
        # Per (store, item) the newest row known before the cutoff (null valid_from: always valid):
        # the evaluation asks each shopper at their basket's store, so stock known later would leak
        # what was bought there. A store without any such row stocks what it has sold.
        availability = pl.from_pandas(dataset.availability)
        if schema.VALID_FROM not in availability.columns:
            availability = availability.with_columns(pl.lit(None, dtype=pl.Datetime).alias(schema.VALID_FROM))
        known = pl.col(schema.VALID_FROM).is_null() | (
            pl.col(schema.VALID_FROM) < _as_column_time(cutoff, availability)
        )
        availability = availability.filter(known)
        if schema.IN_STOCK not in availability.columns:
            availability = availability.with_columns(pl.lit(True).alias(schema.IN_STOCK))
        newest = (
            availability.sort(schema.VALID_FROM, nulls_last=False)
            .unique([schema.STORE_ID, schema.ITEM_ID], keep="last")
            .filter(pl.col(schema.IN_STOCK).fill_null(True))
        )
        in_stock = store_matrix(newest.with_columns(pl.lit(1).alias("one")), "one")
        listed = np.isin(store_ids, availability[schema.STORE_ID].unique().to_numpy())
        in_stock = sp.vstack([in_stock[s] if listed[s] else sold[s] for s in range(len(store_ids))]).tocsr()
    else:
        in_stock = sold
    return Catalog(
        item_ids=item_index.sort("i")[schema.ITEM_ID].to_numpy().astype(str),
        user_ids=user_ids,
        popularity=popularity,
        store_ids=store_ids,
        in_stock=sp.csr_matrix(in_stock),
        store_popularity=store_popularity,
        item_groups=_item_groups(dataset, item_index),
    )


def build_split(lines: pl.DataFrame, dataset: Dataset, name: str, cutoff: pd.Timestamp, end: pd.Timestamp) -> Split:
    """History, catalog, features and targets of one split (see module docstring)."""
    before = lines.filter(pl.col(schema.TIMESTAMP) < cutoff)
    after = lines.filter((pl.col(schema.TIMESTAMP) >= cutoff) & (pl.col(schema.TIMESTAMP) < end))
    first = after.filter(pl.col(schema.TIMESTAMP) == pl.col(schema.TIMESTAMP).min().over(schema.USER_ID)).filter(
        pl.col(BASKET_KEY) == pl.col(BASKET_KEY).min().over(schema.USER_ID)
    )
    return split_of(lines, dataset, name, before, first, cutoff, end)


def split_of(
    lines: pl.DataFrame,
    dataset: Dataset,
    name: str,
    before: pl.DataFrame,
    held: pl.DataFrame,
    cutoff: pd.Timestamp,
    end: pd.Timestamp,
) -> Split:
    """The split whose history is the lines `before` (features and stock as at `cutoff`) and whose
    targets are the lines `held` of users with history; a user's request is at their first held
    line's time and store. Day units count from the first of all `lines`."""
    items = pl.from_pandas(dataset.items)
    item_index = items.select(schema.ITEM_ID).with_row_index("i").with_columns(pl.col("i").cast(pl.Int64))
    user_ids = np.array(sorted(before[schema.USER_ID].unique().to_list()), dtype=str)
    cutoff_day = float((cutoff - pd.Timestamp(lines[schema.TIMESTAMP].min())).total_seconds() / 86400.0)
    features = compute_features(before, items)
    user_index = pl.DataFrame({schema.USER_ID: user_ids, "u": np.arange(len(user_ids), dtype=np.int64)})
    history = _basket_history(before, user_index, item_index)
    held = held.join(user_index, on=schema.USER_ID).join(item_index, on=schema.ITEM_ID)
    targets = {u: set(i) for u, i in held.group_by("u").agg(pl.col("i")).iter_rows()}
    context = (
        held.sort(schema.TIMESTAMP).group_by("u").agg(pl.col(schema.STORE_ID).first(), pl.col(schema.TIMESTAMP).min())
    )
    requests = {u: TargetRequest(store, _unix(at)) for u, store, at in context.iter_rows()}
    catalog = _catalog(before, user_ids, item_index, features, dataset, cutoff)
    return Split(
        name=name,
        cutoff=cutoff,
        end=end,
        cutoff_day=cutoff_day,
        history=history,
        catalog=catalog,
        targets=targets,
        features=features,
        requests=requests,
    )


def _as_column_time(moment: pd.Timestamp, frame: pl.DataFrame):
    """`moment` as a literal comparable with frame's valid_from column (naive or with its time zone)."""
    dtype = frame.schema[schema.VALID_FROM]
    zone = getattr(dtype, "time_zone", None)
    moment = pd.Timestamp(moment)
    if zone is None:
        moment = moment.tz_convert("UTC").tz_localize(None) if moment.tzinfo is not None else moment
    else:
        moment = (moment.tz_localize("UTC") if moment.tzinfo is None else moment).tz_convert(zone)
    return pl.lit(moment.to_pydatetime(), dtype=dtype if isinstance(dtype, pl.Datetime) else pl.Datetime)


def _unix(moment) -> float:
    """Unix seconds of a naive (UTC) or aware timestamp."""
    moment = pd.Timestamp(moment)
    return (moment.tz_localize("UTC") if moment.tzinfo is None else moment).timestamp()


def _save_split(split: Split, folder: Path) -> None:
    tmp = folder.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for table, frame in split.features.items():
        frame.write_parquet(tmp / f"{table}.parquet")
    h = split.history
    np.savez(
        tmp / "history.npz",
        user_ptr=h.user_ptr,
        basket_ptr=h.basket_ptr,
        items=h.items,
        basket_day=h.basket_day,
        shape=np.array([h.n_users, h.n_items]),
        **{f"catalog.{k}": v for k, v in split.catalog.state().items()},
        target_users=np.array(list(split.targets), dtype=np.int64),
        target_ptr=np.cumsum([0] + [len(v) for v in split.targets.values()]),
        target_items=np.array([i for v in split.targets.values() for i in sorted(v)], dtype=np.int64),
        target_store=np.array([split.requests[u].store_id or "" for u in split.targets], dtype=str),
        target_at=np.array([split.requests[u].at for u in split.targets], dtype=np.float64),
    )
    (tmp / "split.json").write_text(
        json.dumps(
            {
                "name": split.name,
                "cutoff": str(split.cutoff),
                "end": str(split.end),
                "cutoff_day": split.cutoff_day,
                "protocol": split.protocol,
                "holdout_order": split.holdout_order,
            }
        )
    )
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # a half-written cache is never mistaken for a complete one


def _load_split(folder: Path) -> Split:
    meta = json.loads((folder / "split.json").read_text())
    with np.load(folder / "history.npz") as npz:
        a = dict(npz)
    n_users, n_items = a["shape"]
    history = BasketHistory(int(n_users), int(n_items), a["user_ptr"], a["basket_ptr"], a["items"], a["basket_day"])
    catalog = Catalog.from_state({k.split(".", 1)[1]: v for k, v in a.items() if k.startswith("catalog.")})
    ptr = a["target_ptr"]
    targets = {int(u): set(a["target_items"][ptr[j] : ptr[j + 1]].tolist()) for j, u in enumerate(a["target_users"])}
    requests = {
        int(u): TargetRequest(str(store) or None, float(at))
        for u, store, at in zip(a["target_users"], a["target_store"], a["target_at"])
    }
    features = {t: pl.read_parquet(folder / f"{t}.parquet") for t in FEATURE_TABLES}
    return Split(
        meta["name"],
        pd.Timestamp(meta["cutoff"]),
        pd.Timestamp(meta["end"]),
        meta["cutoff_day"],
        history,
        catalog,
        targets,
        features,
        requests,
        meta.get("protocol", "temporal"),
        meta.get("holdout_order", "time"),
    )


def build_splits(
    dataset: Dataset | None,
    data_hash: str,
    cache_dir: Path,
    test_weeks: int = 4,
    validation_weeks: int = 4,
    kind: ProtocolKind = "auto",
    holdout_order: HoldoutOrder = "time",
) -> tuple[dict[str, Split], bool]:
    """The validation, test and deploy splits of the protocol `kind` means for `dataset`
    (`data_contracts.learnability.protocol_kind`: the temporal one of this module, or
    `splits.holdout` where nobody buys an item twice, holding out in `holdout_order`), read from
    `cache_dir` when present (dataset None: only from there).

    Returns (splits, cache_hit).
    """
    names = ("validation", "test", "deploy")
    folders = {
        "holdout": Path(cache_dir) / f"{data_hash}-holdout-{holdout_order}-f{FEATURES_VERSION}",
        "temporal": Path(cache_dir) / f"{data_hash}-t{test_weeks}-v{validation_weeks}-f{FEATURES_VERSION}",
    }
    cached = [k for k, f in folders.items() if all((f / n / "split.json").exists() for n in names)]
    if dataset is None or kind == "auto" and cached:  # the data's hash decided its protocol when cached
        if not cached:
            raise FileNotFoundError(f"no cached splits of data {data_hash} in {cache_dir}")
        return {n: _load_split(folders[cached[0]] / n) for n in names}, True
    kind = protocol_kind(dataset.events, Protocol(test_weeks, validation_weeks, kind=kind))
    folder = folders[kind]
    if kind in cached:
        return {n: _load_split(folder / n) for n in names}, True
    if kind == "holdout":
        from splits.holdout import holdout_splits  # it builds on this module

        splits = holdout_splits(dataset, order=holdout_order)
        for name, split in splits.items():
            _save_split(split, folder / name)
        return splits, False
    lines = purchase_lines(dataset)
    splits = {}
    for name, (cutoff, end) in cutoffs(lines, test_weeks, validation_weeks).items():
        splits[name] = build_split(lines, dataset, name, cutoff, end)
        if not splits[name].targets and name != "deploy":
            first, last = lines[schema.TIMESTAMP].min(), lines[schema.TIMESTAMP].max()
            raise DataContractError(
                f"{dataset.name}: the {name} split is empty: no user has a purchase both before {cutoff} and in "
                f"[{cutoff}, {end}). The purchases span {first} to {last}; the protocol needs about "
                f"{test_weeks + validation_weeks} weeks plus history (settings: test_weeks={test_weeks}, "
                f"validation_weeks={validation_weeks})."
            )
        _save_split(splits[name], folder / name)
    return splits, False
