"""What an edge node computes: top-k for a shopper in a store, from one verified bundle.

A request scores only the shopper's candidates (their own items and their TIFU-KNN neighbours'
items, `models.candidates`) with the bundle's scorer (`models.scorers`: an ONNX ranker, or a
baseline's statistic such as "buy again" counts), drops what the store does not stock,
offers up to `SESSION_SLOTS` items often bought with what the shopper is looking at now, and fills
the rest from a short popularity list of the store. Nothing touches the whole catalog per request.

Request time: every answer is for (shopper, store, time). Timing features (days since the shopper
last bought a candidate, against their usual interval for it) are computed at the node's clock or
the request's `at`, never frozen at the bundle's cutoff; ranked candidates are reused only within
the hour they were computed in.

Real time: events newer than the bundle's data change the shopper's state at once. A purchase
adds to their baskets and is folded into their statistics (`models.user_rows`: counts, recency,
gaps and category rows move for the basket's items only; their TIFU-KNN vector is re-weighted
over their own lines; neighbours are searched again as their history grows), so the next answer
follows it without rebuilding anything from all their baskets; views and cart additions steer the
co-purchase slots, and cart items are not recommended again until the next purchase. A new
shopper is personalised from their first purchase on.

Shoppers' live state is a bounded LRU cache (`max_shoppers`), not a store: with a `source` (the
node's event log) a shopper missing from it is rebuilt from their own logged events newer than
the bundle's data when next asked for, so loading a bundle costs the same whatever the log holds
and a flood of made-up shoppers cannot grow memory past the cap.

Scores: ranked candidates in [1, 2], co-purchase items in (0.5, 1), popularity fill in [0, 0.5].
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import numpy as np
from cachetools import LRUCache

from data_contracts.schema import EVENT_TYPES
from edge import bundle
from models.baskets import BasketHistory
from models.candidates import CandidateGenerator
from models.catalog import Catalog
from models.npz import read_arrays
from models.rows import Rows, row_positions
from models.scorers import RANKER, load_scorer
from models.user_rows import NEWEST, UserRows

SESSION_SLOTS = 2  # at most this many "often bought with …" items per answer
FILL_DEPTH = 300  # popularity list kept per store for filling answers
RECENT_ITEMS = 20  # views and cart additions remembered per shopper
MAX_SHOPPERS = 20_000  # shoppers whose live state and ranked candidates are kept in memory


@dataclass
class Event:
    user_id: str
    item_id: str
    event_type: str
    timestamp: datetime
    store_id: str | None = None
    basket_id: str | None = None
    seq: int = 0  # its position in the node's event log (0: not logged)
    value: float | None = None  # what a purchase was worth (the shop's currency), when the client says


@dataclass
class Recommendation:
    item_id: str
    score: float
    reason: str


@dataclass
class Answer:
    items: list[Recommendation]
    known_user: bool  # the shopper is in the bundle's histories
    known_store: bool  # False: the store is not in the bundle; global popularity, no stock filter
    personalised: bool  # the shopper has any purchase history (bundle or live)


@dataclass(slots=True)
class Shopper:
    """A shopper's events since the bundle's data ends, and their ranked candidates for `version`."""

    baskets: dict = field(default_factory=dict)  # basket key → [day, set of item indices]
    cart: set = field(default_factory=set)  # added to cart since the last purchase
    recent: list = field(default_factory=list)  # viewed / carted item indices, newest last (≤ RECENT_ITEMS)
    version: int = 0  # events applied so far
    last_seq: int = 0  # the newest logged event applied (events up to it are in this state)
    ranked: Scored | None = None  # ranked candidates at `ranked_key`
    ranked_key: tuple[int, int] = (-1, -1)  # (events applied, hour of the request) they were ranked at
    folds: Folds | None = None  # their statistics with the purchases folded in so far (None: the fit's)
    unfolded: set = field(default_factory=set)  # keys of baskets changed since `folds`


@dataclass(frozen=True, slots=True)
class Folds:
    """A shopper's statistics (`rows`) with the live baskets in `baskets` (key → (day, items)
    folded) folded in; `newest`: the key of the newest of them."""

    rows: UserRows
    baskets: dict
    newest: str | None


def _utc_naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment


class IdIndex:
    """id → position in `ids` by binary search: a few MB for a 100k-item catalog, not a dict's 10+."""

    def __init__(self, ids: np.ndarray):
        self.order = np.argsort(ids, kind="stable")
        self.sorted = np.asarray(ids)[self.order]
        self.sorted = self.sorted.astype(str)  # fixed-width unicode: ids of at most `width` characters
        self.width = self.sorted.dtype.itemsize // 4

    def get(self, key: str) -> int | None:
        # A key wider than the table would make numpy copy the whole table at the key's width.
        if len(key) > self.width:
            return None
        position = int(np.searchsorted(self.sorted, key))
        if position < len(self.sorted) and self.sorted[position] == key:
            return int(self.order[position])
        return None

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None


@dataclass
class Scored:
    """A shopper's ranked candidates (cached until their next event). items: (n,) best first;
    scores: (n,) in [1, 2]; count: (n,) baskets with the item; every: (n,) days between purchases
    (NaN when bought fewer than twice); bought: the items the shopper ever bought."""

    items: np.ndarray
    scores: np.ndarray
    count: np.ndarray
    every: np.ndarray
    bought: np.ndarray

    @classmethod
    def empty(cls) -> Scored:
        nothing = np.zeros(0, np.float32)
        return cls(np.zeros(0, np.int32), nothing, nothing, nothing, np.zeros(0, np.int32))


ShopperSource = Callable[[str, float], list[Event]]  # (user_id, since Unix seconds) → their events, oldest first


class Engine:
    """One loaded bundle. Thread-safe: events may be applied while requests are answered."""

    def __init__(
        self,
        folder: Path,
        manifest: dict,
        runtime: str = "onnx",
        source: ShopperSource | None = None,
        max_shoppers: int = MAX_SHOPPERS,
        personal_reasons: bool = True,
        discovery_slots: int = 0,
    ):
        """runtime: "onnx" (ONNX Runtime, every node) or "native" (a boosted ranker bundle's optional
        LightGBM file: the cloud reference; needs LightGBM installed).
        source: where a shopper's logged events come from when they are not in memory (None: events
        reach the engine only through `apply`). personal_reasons: False words every reason without
        the shopper's own purchases or cart (for nodes any caller can ask). discovery_slots: of
        each answer's ranked items, this many (when there are) are items the shopper never bought:
        the shop's price for discovery, on data where "buy again" would fill every slot."""
        folder = Path(folder)
        self.folder, self.manifest = folder, manifest
        self.serving = json.loads((folder / bundle.SERVING).read_text())
        # Memory-mapped (models.npz): a request reads a few rows, and only those pages are resident.
        self.catalog = Catalog.from_state(read_arrays(folder / bundle.CATALOG))
        self.generator = CandidateGenerator(**self.serving["generator"]).load_state(
            read_arrays(folder / bundle.CANDIDATES)
        )
        self.history = BasketHistory.load(folder / bundle.HISTORIES)
        self.co_purchase = read_arrays(folder / bundle.CO_PURCHASE)["items"]
        items = read_arrays(folder / bundle.ITEMS)
        self.titles = items["title"] if "title" in items else items["item_id"].astype(np.bytes_)  # utf-8
        try:
            self.scorer = load_scorer(self.serving.get("scorer", {"kind": RANKER}), folder, runtime)
        except (FileNotFoundError, ValueError) as error:
            raise bundle.BundleError(str(error)) from None
        self.origin = _utc_naive(datetime.fromisoformat(self.serving["origin"]))
        self.cutoff_day = float(self.generator.cutoff_day)
        self.cutoff_at = (self.origin.replace(tzinfo=UTC) + timedelta(days=self.cutoff_day)).timestamp()
        self.exclude_seen = bool(self.serving["exclude_seen"])
        self.personal_reasons = personal_reasons
        self.discovery_slots = int(discovery_slots)
        self.user_index = {str(u): i for i, u in enumerate(self.catalog.user_ids)}
        self.item_index = IdIndex(self.catalog.item_ids)
        self.store_index = {str(s): i for i, s in enumerate(self.catalog.store_ids)}
        self.catalog.in_stock = self.catalog.in_stock.sorted()
        self.global_fill = np.argsort(-self.catalog.popularity, kind="stable")[:FILL_DEPTH].copy()
        self._store_fill: dict[int, np.ndarray] = {}
        self.source = source
        self._shoppers: LRUCache[str, Shopper] = LRUCache(max_shoppers)
        self.unusable: set[int] = set()  # seqs of logged events of an unknown type (never applied)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, folder: Path, public_key, runtime: str = "onnx", **options) -> Engine:
        """Verify the bundle, load it and warm its ONNX Runtime session; raises BundleError.
        `options`: source, max_shoppers, personal_reasons, discovery_slots (see `__init__`)."""
        manifest = bundle.verify_bundle(folder, public_key)
        engine = cls(folder, manifest, runtime, **options)
        engine.warm()
        return engine

    @property
    def version(self) -> str:
        return str(self.manifest.get("model_version", "?"))

    def warm(self, users: int = 3) -> None:
        """Score a few shoppers so the first real request does not pay for session start-up."""
        self.generator.tifu.similarity_index()  # what a shopper's real-time neighbours are drawn from
        source, self.source = self.source, None  # warming must not read (or count) anyone's events
        for user_id in self.catalog.user_ids[:users]:
            self.recommend(str(user_id), None, 10)
        self.source = source
        with self._lock:
            self._shoppers.clear()

    # ---- events --------------------------------------------------------------------------
    def day(self, moment: datetime) -> float:
        """Days since the bundle's day 0 (the history's time unit)."""
        return (_utc_naive(moment) - self.origin).total_seconds() / 86400.0

    def apply(self, events: list[Event]) -> int:
        """Apply acknowledged events to the shoppers' state; returns how many changed it. Events
        older than the bundle's data are already in it and change nothing; with a `source`, a
        shopper not in memory is left to be read from it when next asked for."""
        applied = 0
        with self._lock:
            for event in events:
                shopper = self._shoppers.get(event.user_id)
                if shopper is None:
                    if self.source is not None:
                        continue
                    shopper = self._shoppers[event.user_id] = Shopper()
                applied += self._apply_one(shopper, event)
        return applied

    def _apply_one(self, shopper: Shopper, event: Event) -> bool:
        """Fold one event into `shopper` (caller holds the lock); False when it changes nothing."""
        if event.seq and event.seq <= shopper.last_seq:
            return False  # already read from the log
        shopper.last_seq = max(shopper.last_seq, event.seq)
        if event.event_type not in EVENT_TYPES:  # only a hand-edited log holds one
            if event.seq and len(self.unusable) < 100_000:
                self.unusable.add(event.seq)
            return False
        item = self.item_index.get(event.item_id)
        day = self.day(event.timestamp)
        if item is None or day < self.cutoff_day:
            return False
        if event.event_type == "purchase":
            key = event.basket_id or f"day:{int(day)}"
            basket = shopper.baskets.setdefault(key, [day, set()])
            basket[0] = max(basket[0], day)
            basket[1].add(item)
            shopper.unfolded.add(key)
            shopper.cart.clear()
        else:
            shopper.recent = [*shopper.recent[1 - RECENT_ITEMS :], item]
            if event.event_type == "add_to_cart":
                shopper.cart.add(item)
        shopper.version += 1
        return True

    def _shopper(self, user_id: str) -> Shopper:
        """The shopper's live state (caller holds the lock), read from the source when not in memory."""
        shopper = self._shoppers.get(user_id)
        if shopper is None:
            shopper = Shopper()
            for event in self.source(user_id, self.cutoff_at) if self.source is not None else ():
                self._apply_one(shopper, event)
            self._shoppers[user_id] = shopper
        return shopper

    # ---- answers -------------------------------------------------------------------------
    def recommend(
        self,
        user_id: str,
        store_id: str | None,
        k: int = 10,
        exclude: tuple[str, ...] = (),
        recent: tuple[str, ...] = (),
        at: float | None = None,
    ) -> Answer:
        """Top-`k` for `user_id` in `store_id` (None or unknown: global popularity, no stock filter)
        at time `at` (Unix seconds; None: now). Timing features (days since the shopper last bought
        an item, against their usual interval) are computed at that time, and a shopper's ranked
        candidates are reused within the same hour only, so an item rises as it comes due."""
        store = self.store_index.get(store_id) if store_id is not None else None
        known_store = store is not None
        now_day = max(
            self.cutoff_day, ((time.time() if at is None else at) - self.cutoff_at) / 86400.0 + self.cutoff_day
        )
        user = self.user_index.get(user_id, -1)
        with self._lock:
            shopper = self._shopper(user_id)
            key = (shopper.version, int(now_day * 24))
            cart, session_items = set(shopper.cart), list(shopper.recent)
            ranked = shopper.ranked if shopper.ranked_key == key else None
            folds, changes = shopper.folds, None
            if ranked is None and shopper.unfolded:
                changes = {k: (shopper.baskets[k][0], frozenset(shopper.baskets[k][1])) for k in shopper.unfolded}
        if ranked is None:
            if changes:
                folds = self._fold(user, folds, changes)
            if folds is None and changes:  # a basket dated before one already folded in
                with self._lock:
                    live = {k: (day, frozenset(items)) for k, (day, items) in shopper.baskets.items()}
                folds = self._refit(user, live)
            rows = folds.rows if folds is not None else self.generator.user_rows(user) if user >= 0 else None
            ranked = self._rank(rows, now_day)
            with self._lock:
                if shopper.version == key[0]:
                    shopper.ranked, shopper.ranked_key = ranked, key
                    if changes:
                        shopper.folds, shopper.unfolded = folds, set()
        items = ranked.items
        blocked = {i for i in map(self.item_index.get, exclude) if i is not None} | cart
        if self.exclude_seen:
            blocked |= set(ranked.bought.tolist())
        usable = np.flatnonzero(self._allowed(store, items, blocked))
        ranked_items = set(items[self._slots(usable, ranked, k)].tolist())
        session = [i for i in map(self.item_index.get, recent) if i is not None] + session_items
        extra = [
            (item, source)
            for item, source in self._co_purchased(session, blocked | ranked_items)
            if self._allowed(store, np.array([item]), blocked)[0]
        ][:SESSION_SLOTS]
        chosen = [
            Recommendation(
                str(self.catalog.item_ids[items[j]]),
                float(ranked.scores[j]),
                self._reason(int(items[j]), float(ranked.count[j]), float(ranked.every[j]), ranked.bought),
            )
            for j in self._slots(usable, ranked, k - len(extra))
        ]
        chosen += [
            Recommendation(
                str(self.catalog.item_ids[item]),
                0.99 - 0.01 * position,
                f"often bought with {self.title(source)}" if self.personal_reasons else "often bought together",
            )
            for position, (item, source) in enumerate(extra)
        ]
        if len(chosen) < k:
            fill, fill_reason = self._fill(store)
            taken = blocked | ranked_items | {item for item, _ in extra}
            top = max(float(self.catalog.popularity[fill[0]]), 1.0) if len(fill) else 1.0
            more = islice((item for item in fill if item not in taken), k - len(chosen))
            chosen += [
                Recommendation(
                    str(self.catalog.item_ids[item]), 0.5 * float(self.catalog.popularity[item]) / top, fill_reason
                )
                for item in more
            ]
        return Answer(chosen, user_id in self.user_index, known_store, bool(len(items)))

    def _slots(self, usable: np.ndarray, ranked: Scored, k: int) -> np.ndarray:
        """The best `k` of the `usable` positions of `ranked.items`, `discovery_slots` of them (when
        there are) items the shopper never bought; best first."""
        reserved = min(self.discovery_slots, k)
        if not reserved:
            return usable[:k]
        new = usable[~np.isin(ranked.items[usable], ranked.bought)][:reserved]
        known = usable[~np.isin(usable, new)][: k - len(new)]
        return np.sort(np.r_[known, new])

    def _reason(self, item: int, count: float, every: float, bought: np.ndarray) -> str:
        """Why a ranked candidate is there, in words: how often the shopper buys it, or for an item
        new to them, which of their items EASE found it through (`models.ease`)."""
        if not self.personal_reasons:
            return "recommended for you"
        source = self._because(item, bought) if count == 0 and self.generator.ease is not None else None
        if source is not None:
            return f"people who bought {self.title(source)} bought this"
        return _repeat_reason(count, every)

    def _because(self, item: int, bought: np.ndarray) -> int | None:
        """The item of `bought` whose EASE weight adds most to `item`'s score (None: none adds)."""
        weights = self.generator.ease.weights
        bought = np.asarray(bought, np.int64)
        lines = row_positions(weights.indptr, bought)
        sources = np.repeat(bought, np.diff(weights.indptr)[bought])
        hit = np.flatnonzero(weights.indices[lines] == item)
        if not len(hit):
            return None
        best = hit[np.argmax(weights.data[lines[hit]])]
        return int(sources[best]) if weights.data[lines[best]] > 0 else None

    def title(self, item: int) -> str:
        return self.titles[item].decode() or str(self.catalog.item_ids[item])

    def _allowed(self, store: int | None, items: np.ndarray, blocked: set[int]) -> np.ndarray:
        """(len(items),) True where the item is in stock at `store` (any, if None) and not blocked."""
        ok = np.ones(len(items), bool) if not blocked else ~np.isin(items, list(blocked))
        if store is not None and len(items):
            stock = self.catalog.in_stock
            row = stock.indices[stock.indptr[store] : stock.indptr[store + 1]]
            position = np.minimum(np.searchsorted(row, items), max(len(row) - 1, 0))
            ok &= (row[position] == items) if len(row) else False
        return ok

    def _fold(self, user: int, folds: Folds | None, changes: dict) -> Folds | None:
        """The shopper's statistics with the `changes` (basket key → (day, items)) to their live
        baskets folded in: a basket newer than all before it, or more items in the newest one, move
        only what they touch. None for anything else (a basket dated before one already folded in:
        the caller refits the shopper, `_refit`). user: their row in the fit (-1: new)."""
        if folds is None:
            start = (
                self.generator.user_rows(user, self.history.newest_baskets(user, NEWEST))
                if user >= 0
                else UserRows.empty()
            )
            folds = Folds(start, {}, None)
        rows, folded, newest, groups = folds.rows, dict(folds.baskets), folds.newest, self.generator.item_groups
        for key, (day, items) in sorted(changes.items(), key=lambda change: change[1][0]):
            basket = np.fromiter(items, np.int32, len(items))
            if key == newest and day >= rows.last_basket:
                rows = rows.extend_newest(basket, day, groups)
            elif key not in folded and not day < rows.last_basket:
                rows, newest = rows.add_basket(basket, day, groups), key
            else:
                return None
            folded[key] = (day, items)
        lines, sizes = self._lines(user, folded)
        return Folds(rows.reweigh(lines, sizes, self.generator.tifu, user), folded, newest)

    def _refit(self, user: int, live: dict) -> Folds:
        """The shopper's statistics fitted on all their baskets (bundle and `live`)."""
        baskets, days = self.history.baskets_of(user) if user >= 0 else ([], np.zeros(0))
        ordered = sorted(live.items(), key=lambda entry: (entry[1][0], sorted(entry[1][1])))
        baskets = list(baskets) + [np.array(sorted(items), np.int64) for _, (_, items) in ordered]
        days = np.r_[days, [day for _, (day, _) in ordered]]
        one = BasketHistory.single_user(baskets, days, self.history.n_items)
        fitted = self.generator.for_history(one, max(self.cutoff_day, days.max()), np.array([user]))
        return Folds(fitted.user_rows(0, tuple(baskets[-NEWEST:])), dict(live), ordered[-1][0] if ordered else None)

    def _lines(self, user: int, folded: dict) -> tuple[np.ndarray, np.ndarray]:
        """Every basket line of the shopper, oldest basket first, and the items per basket."""
        lines, sizes = self.history.lines_of(user) if user >= 0 else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        ordered = [np.array(sorted(items), np.int64) for _, items in sorted(folded.values(), key=lambda b: b[0])]
        return np.concatenate([lines, *ordered]), np.r_[sizes, [len(b) for b in ordered]].astype(np.int64)

    def _rank(self, rows: UserRows | None, now_day: float) -> Scored:
        """The shopper's ranked candidates at `now_day` from their statistics (None: nothing bought)."""
        if rows is None or not len(rows.items) and not len(rows.neighbours):
            return Scored.empty()
        if self.scorer is None:  # popularity alone: no candidates
            found_items, raw = np.zeros(0, np.int64), np.zeros(0, np.float32)
        else:
            found_items, features = self.generator.candidate_rows(rows, now_day)
            raw = self.scorer(features, found_items) if len(found_items) else np.zeros(0, np.float32)
            scored = np.isfinite(raw)
            found_items, raw = found_items[scored], raw[scored]
        order = np.argsort(-raw, kind="stable")
        spread = float(raw.max() - raw.min()) if len(raw) else 0.0
        bought, counts = rows.items, rows.count
        items = found_items[order].astype(np.int32)
        with np.errstate(divide="ignore", invalid="ignore"):
            every = np.where(counts >= 2, (rows.last_day - rows.first_day) / (counts - 1), np.nan)
        count, every_days = np.zeros(len(items), np.float32), np.full(len(items), np.nan, np.float32)
        if len(bought):
            position = np.minimum(np.searchsorted(bought, items), len(bought) - 1)  # rows are sorted
            hit = bought[position] == items
            count[hit], every_days[hit] = counts[position[hit]], every[position[hit]]
        scores = 1 + (raw[order] - (raw.min() if len(raw) else 0)) / (spread or 1.0)
        return Scored(items, scores.astype(np.float32), count, every_days, bought)

    def _co_purchased(self, session: list[int], blocked: set[int]) -> list[tuple[int, int]]:
        """(item, the session item it is often bought with), newest session items first."""
        out, seen = [], set(blocked) | set(session)
        for source in reversed(session):
            for item in self.co_purchase[source]:
                if item >= 0 and item not in seen:
                    seen.add(int(item))
                    out.append((int(item), source))
        return out

    def restock(self, changes: dict[tuple[str, str], bool]) -> int:
        """Serve the availability served now with `changes` ((store id, item id) → in stock) on
        top, swapped in at once (callers serialise restocks); pairs the bundle does not know are
        skipped. Returns the changes applied. Costs O(stock entries + changes)."""
        known: dict[int, dict[int, bool]] = {}
        for (store_id, item_id), in_stock in changes.items():
            store, item = self.store_index.get(store_id), self.item_index.get(item_id)
            if store is not None and item is not None:
                known.setdefault(store, {})[item] = in_stock
        base = self.catalog.in_stock
        rows = []
        for store in range(base.shape[0]):
            row = base.indices[base.indptr[store] : base.indptr[store + 1]]
            if store in known:
                marks = known[store]
                out = np.fromiter((i for i, v in marks.items() if not v), np.int64)
                back = np.fromiter((i for i, v in marks.items() if v), np.int64)
                row = np.union1d(np.setdiff1d(row, out), back).astype(base.indices.dtype)
            rows.append(row)
        indices = np.concatenate(rows) if rows else base.indices[:0]
        indptr = np.r_[0, np.cumsum([len(r) for r in rows])].astype(base.indptr.dtype)
        stock = Rows(indptr, indices, np.ones(len(indices), base.data.dtype), base.shape)
        with self._lock:
            self.catalog.in_stock, self._store_fill = stock, {}
        return sum(map(len, known.values()))

    def _fill(self, store: int | None) -> tuple[np.ndarray, str]:
        """Popular items for filling: the store's best sellers in stock, else the global ones (in
        stock there, for a known store)."""
        if store is None:
            return self.global_fill, "popular with shoppers"
        fill = self._store_fill.get(store)
        if fill is None:
            stock = self.catalog.in_stock
            sales = self.catalog.store_popularity[store]
            order = np.argsort(-sales.data, kind="stable")
            fill = sales.indices[order][:FILL_DEPTH]
            fill = fill[self._allowed(store, fill, set())]
            with self._lock:  # cached only if no restock came in between
                if self.catalog.in_stock is stock:
                    self._store_fill[store] = fill
        if len(fill):
            return fill, "popular in this store"
        return self.global_fill[self._allowed(store, self.global_fill, set())], "popular with shoppers"


def _repeat_reason(count: float, every: float) -> str:
    """Why a candidate is there, in words (count: the shopper's baskets with it; every: days between them)."""
    if count >= 2 and every > 0:
        if every < 1.5:
            return "you buy this almost every trip"
        if every < 14:
            return f"you buy this about every {round(every)} days"
        return f"you buy this about every {round(every / 7)} weeks"
    if count >= 1:
        return "you bought this before"
    return "popular with shoppers like you"
