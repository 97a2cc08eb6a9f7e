"""Replay real shoppers against a node running an experiment, to test the experiment machinery
with real behaviour. Each visit is one real basket after the bundles' data ends: the simulated
shopper asks the node for top-k at the basket's store and time, clicks (a `view`) the shown items
they really bought, then buys the basket (one `purchase` per line, with its value) and otherwise
ignores the answer. The offline counterpart replays the same visits through each arm's bundle for
every shopper (`offline_rates`): what a perfectly randomised experiment should estimate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd

from data_contracts import schema
from data_contracts.dataset import Dataset
from edge import bundle
from edge.engine import Engine, Event
from experiments.attribution import SHOPPER_COLUMNS, Outcomes
from lightpersml import config

log = logging.getLogger(__name__)

CLICK_AFTER_S, BUY_AFTER_S = 1.0, 2.0  # after the answer: a click, then the purchase


@dataclass(frozen=True)
class Visit:
    """One real basket: who, where, when (Unix seconds) and what they bought (item id, value)."""

    user_id: str
    store_id: str
    at: float
    basket_id: str
    lines: tuple[tuple[str, float], ...]


def visits(dataset: Dataset, after: pd.Timestamp) -> list[Visit]:
    """Every purchase basket of `dataset` that starts at or after `after`, oldest first."""
    events = dataset.events
    if schema.EVENT_TYPE in events.columns:
        events = events[events[schema.EVENT_TYPE] == "purchase"]
    events = events[events[schema.TIMESTAMP] >= after]
    basket = events[schema.BASKET_ID] if schema.BASKET_ID in events.columns else None
    if basket is None or basket.isna().any():
        basket = events[schema.USER_ID].astype(str) + "@" + events[schema.TIMESTAMP].dt.strftime("%Y-%m-%d")
    value = events[schema.VALUE] if schema.VALUE in events.columns else pd.Series(0.0, index=events.index)
    store = events[schema.STORE_ID] if schema.STORE_ID in events.columns else pd.Series("", index=events.index)
    frame = pd.DataFrame(
        {
            "user": events[schema.USER_ID].astype(str),
            "store": store.fillna("").astype(str),
            "at": (events[schema.TIMESTAMP] - pd.Timestamp("1970-01-01")) / pd.Timedelta(seconds=1),
            "basket": basket.astype(str),
            "item": events[schema.ITEM_ID].astype(str),
            "value": value.fillna(0.0).astype(float),
        }
    )
    out = []
    for (user, basket_id), lines in frame.groupby(["user", "basket"], sort=False):
        out.append(
            Visit(
                user,
                lines["store"].iloc[0] or "unknown-store",
                float(lines["at"].min()),
                basket_id,
                tuple(lines.groupby("item", sort=False)["value"].sum().items()),
            )
        )
    return sorted(out, key=lambda v: (v.at, v.user_id, v.basket_id))


def visit_events(visit: Visit, shown: list[str]) -> tuple[list[dict], list[Event]]:
    """What the shopper does after the answer `shown`: the JSON events to POST (with ids, so a
    retried POST is not counted twice) and the same as engine events (for the offline replay)."""
    bought = {item for item, _ in visit.lines}
    clicks = [(item, "view", visit.at + CLICK_AFTER_S, None) for item in shown if item in bought]
    buys = [(item, "purchase", visit.at + BUY_AFTER_S, value) for item, value in visit.lines]
    posted, parsed = [], []
    for item, kind, at, value in clicks + buys:
        moment = datetime.fromtimestamp(at, UTC)
        posted.append(
            {
                "user_id": visit.user_id,
                "item_id": item,
                "event_type": kind,
                "timestamp": moment.isoformat(),
                "store_id": visit.store_id,
                "basket_id": visit.basket_id,
                "event_id": f"{visit.basket_id}:{kind}:{item}"[:128],
                **({"value": round(value, 2)} if value is not None else {}),
            }
        )
        parsed.append(Event(visit.user_id, item, kind, moment, visit.store_id, visit.basket_id, value=value))
    return posted, parsed


@dataclass
class Replayed:
    """What the node acknowledged: answers (their exposure ids, per arm) and events (their ids)."""

    answers: dict[str, list[str]] = field(default_factory=lambda: {"control": [], "treatment": []})
    event_ids: list[str] = field(default_factory=list)
    failed_visits: int = 0  # visits the node could not answer or whose events it did not take

    @property
    def exposures(self) -> int:
        return sum(len(ids) for ids in self.answers.values())


def replay(
    url: str,
    headers: dict[str, str],
    planned: Iterable[Visit],
    k: int = 10,
    replayed: Replayed | None = None,
    on_visit: Callable[[int], None] | None = None,
) -> Replayed:
    """Play `planned` visits against the node at `url`; only what the node answered 200 to is
    counted in the result (a visit it fails is counted in `failed_visits` and skipped)."""
    replayed = replayed or Replayed()
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for number, visit in enumerate(planned):
            if on_visit is not None:
                on_visit(number)
            try:
                answer = client.get(
                    "/v1/recommendations",
                    params={
                        "user_id": visit.user_id,
                        "store_id": visit.store_id,
                        "k": k,
                        "at": datetime.fromtimestamp(visit.at, UTC).isoformat(),
                    },
                )
                if answer.status_code != 200:
                    replayed.failed_visits += 1
                    continue
                body = answer.json()
                if body.get("exposure_id"):
                    replayed.answers.setdefault(body["arm"] or "served", []).append(body["exposure_id"])
                posted, _ = visit_events(visit, [item["item_id"] for item in body["items"]])
                taken = client.post("/v1/events", json={"events": posted})
                if taken.status_code == 200:
                    replayed.event_ids.extend(e["event_id"] for e in posted)
                else:
                    replayed.failed_visits += 1
            except httpx.HTTPError:
                replayed.failed_visits += 1
    return replayed


@dataclass(frozen=True)
class OfflineRates:
    """One bundle's answers to every visit, scored as the report scores an arm: per shopper
    [visits, shown items, shown items bought in that basket, their value]."""

    by_shopper: dict[str, list[float]]

    def _total(self, column: int) -> float:
        return sum(row[column] for row in self.by_shopper.values())

    @property
    def purchase_rate(self) -> float:
        shown = self._total(1)
        return self._total(2) / shown if shown else 0.0


def offline_rates(folder: Path, public_key: Path, planned: list[Visit], k: int = 10) -> OfflineRates:
    """Replay `planned` through the bundle in `folder` in-process, as the node would answer them
    (the same events applied after each answer). A shopper's answers depend on their own events
    only, so the visits of some shoppers give exactly what the node answers those shoppers."""
    engine = Engine.load(folder, bundle.load_public_key(public_key))
    by_shopper: dict[str, list[float]] = {}
    for visit in planned:
        answer = engine.recommend(visit.user_id, visit.store_id, k, at=visit.at)
        shown = [r.item_id for r in answer.items]
        values = dict(visit.lines)
        hits = [item for item in shown if item in values]
        row = by_shopper.setdefault(visit.user_id, [0, 0, 0, 0.0])
        row[0], row[1], row[2] = row[0] + 1, row[1] + len(shown), row[2] + len(hits)
        row[3] += sum(values[item] for item in hits)
        engine.apply(visit_events(visit, shown)[1])
    return OfflineRates(by_shopper)


def offline_outcomes(control: OfflineRates, treatment: OfflineRates, arm: Callable[[str], str]) -> Outcomes:
    """What an experiment splitting the shoppers by `arm` (e.g. `Experiment.arm`) would record if
    its attribution were exact: each shopper's offline counts under their arm's bundle (clicks are
    the shown items they bought, as the simulated shopper clicks; no cart additions)."""
    rows = {}
    for user in control.by_shopper:
        side = arm(user)
        visits_, shown, bought, revenue = (control if side == "control" else treatment).by_shopper[user]
        rows[user] = {
            "arm": side,
            "exposures": visits_,
            "impressions": shown,
            "clicked": bought,
            "carted": 0,
            "purchased": bought,
            "revenue": revenue,
        }
    shoppers = pd.DataFrame.from_dict(rows, orient="index")[list(SHOPPER_COLUMNS)]
    return Outcomes(shoppers, {}, 0)


def baseline_bundles(dataset: Dataset, weeks: int, folder: Path, private_key: Path) -> tuple[pd.Timestamp, dict]:
    """P-TopFreq and G-TopFreq bundles fitted on `dataset` before T = `weeks` before its newest
    purchase, signed with `private_key`; returns T and {name: bundle folder}. `dataset` must be
    validated (the pipeline's clean data)."""
    from models.tier_bundle import TierScorer, lay_out, sign
    from splits.temporal import build_splits
    from training.data import generator_settings
    from training.tiers import BASELINE_SCORERS, serving_data

    split = build_splits(dataset, dataset.content_hash(), config.state_dir() / "features", weeks, weeks)[0]["test"]
    shared, _ = serving_data(split, generator_settings({}), dataset.items, False, dataset.content_hash())
    key = bundle.load_private_key(private_key)
    bundles = {}
    for name in ("p_topfreq", "g_topfreq"):
        target = Path(folder) / name
        sign(lay_out(shared, TierScorer(name, BASELINE_SCORERS[name]), target), key, {"model_version": name})
        bundles[name] = target
    return pd.Timestamp(split.cutoff), bundles
