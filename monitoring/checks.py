"""Monitoring: do the events the nodes collected lately still look like the data the served model
was trained on, and does the model still earn clicks and purchases?

The current window is the `window_days` up to the newest collected event; the reference is the
training data's `reference_weeks` before that window. Each check is a number, its threshold
(`MonitoringSettings` in lightpersml.config) and whether it is breached:

- category_shift: Jensen–Shannon distance (base 2: 0 same, 1 disjoint) of purchases over item
  categories (those under `category_min_share` of the reference pooled), reference vs current. A category removed from stock, or a new range, moves it.
- category_drop: the largest relative fall of a category's share of purchases, among categories
  with at least `category_min_share` of the reference's (1: it vanished, as when taken out of stock).
- popularity_shift: the same over items (the reference's best sellers, the rest pooled).
- unknown_item_share / unknown_shopper_share: current events on items, and current shoppers, the
  training data before the window never saw (the served bundle knows nothing about them).
- basket_size_change: relative change of the mean lines per basket; its KS statistic is reported.
- event_volume_ratio: events per day, current / reference.
- score_shift: KS statistic of the served answers' top scores, previous window vs current
  (needs exposures: nodes started with `--log-exposures`, or an experiment running).
- online_hit_rate: shown items bought within the attribution window (experiments.attribution).

The statistics are scipy's (`scipy.spatial.distance.jensenshannon`, `scipy.stats.ks_2samp`).
Evidently 0.7.23, the drift library we meant to use, does not import under pandas 3 (it needs
`pandas.core.dtypes.common.infer_dtype_from_object`, removed in pandas 3), and whylogs' last
release (1.6.4, 2024) pulls the client of a hosted service that has closed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from data_contracts import schema
from experiments.attribution import attribute
from lightpersml.config import MonitoringSettings

TOP_ITEMS = 1000  # items of the popularity check; the rest are pooled


class MonitoringBreach(RuntimeError):
    """A monitoring check is breached: the served model should be retrained."""


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None  # None: not measurable (e.g. no exposures were logged)
    threshold: str  # in words, e.g. "≤ 0.15"
    breached: bool
    detail: str


@dataclass(frozen=True)
class MonitoringReport:
    window_start: pd.Timestamp
    window_end: pd.Timestamp
    reference_start: pd.Timestamp
    current_events: int
    reference_events: int
    checks: list[Check]

    @property
    def breached(self) -> list[Check]:
        return [c for c in self.checks if c.breached]


def _purchases(events: pd.DataFrame) -> pd.DataFrame:
    if schema.EVENT_TYPE in events.columns:
        return events[events[schema.EVENT_TYPE].fillna("purchase") == "purchase"]
    return events


def _distance(reference: pd.Series, current: pd.Series) -> float:
    """Jensen–Shannon distance (base 2) of two samples of labels."""
    labels = sorted(set(reference.dropna()) | set(current.dropna()))
    if not labels or reference.empty or current.empty:
        return 0.0
    p = reference.value_counts().reindex(labels, fill_value=0).to_numpy(float)
    q = current.value_counts().reindex(labels, fill_value=0).to_numpy(float)
    return float(jensenshannon(p / p.sum(), q / q.sum(), base=2))


def _basket_sizes(purchases: pd.DataFrame) -> pd.Series:
    if schema.BASKET_ID in purchases.columns and purchases[schema.BASKET_ID].notna().all():
        keys = [schema.USER_ID, schema.BASKET_ID]
    else:
        purchases = purchases.assign(day=purchases[schema.TIMESTAMP].dt.floor("D"))
        keys = [schema.USER_ID, "day"]
    return purchases.groupby(keys).size()


def _at_most(name: str, value: float, limit: float, detail: str) -> Check:
    return Check(name, value, f"≤ {limit:g}", value > limit, detail)


def monitor(
    training: pd.DataFrame,
    collected: pd.DataFrame,
    items: pd.DataFrame,
    exposures: pd.DataFrame | None,
    settings: MonitoringSettings,
) -> MonitoringReport:
    """training: the training data's events; collected: events collected from the nodes (both in
    the contract's columns); exposures: collected exposures (`nodes.experiments`) or None."""
    if collected.empty:
        raise ValueError("no events were collected from the nodes: nothing to monitor")
    end = collected[schema.TIMESTAMP].max()
    start = end - pd.Timedelta(days=settings.window_days)
    reference_start = start - pd.Timedelta(weeks=settings.reference_weeks)
    current = collected[collected[schema.TIMESTAMP] > start]
    known = training[training[schema.TIMESTAMP] <= start]  # what a model trained before the window saw
    reference = known[known[schema.TIMESTAMP] > reference_start]
    if reference.empty:
        raise ValueError(f"the training data has no events in the {settings.reference_weeks} weeks before {start}")
    bought, bought_before = _purchases(current), _purchases(reference)
    category = items.set_index(schema.ITEM_ID)[schema.CATEGORY] if schema.CATEGORY in items.columns else None
    checks = []

    if category is not None:
        reference_share = bought_before[schema.ITEM_ID].map(category).value_counts(normalize=True)
        current_share = bought[schema.ITEM_ID].map(category).value_counts(normalize=True)
        watched = set(reference_share.index[reference_share >= settings.category_min_share])
        pooled = [  # small categories pooled: their week-to-week noise is not a shift
            s[schema.ITEM_ID].map(category).where(lambda c: c.isin(watched), "(other)") for s in (bought_before, bought)
        ]
        shift = _distance(*pooled)
        checks.append(
            _at_most(
                "category_shift", shift, settings.max_category_shift, f"over {len(watched)} categories and the rest"
            )
        )
        sizable = reference_share[reference_share >= settings.category_min_share]
        fall = 1 - current_share.reindex(sizable.index, fill_value=0) / sizable
        worst = fall.idxmax() if len(fall) else None
        checks.append(
            _at_most(
                "category_drop",
                float(fall.max()) if len(fall) else 0.0,
                settings.max_category_drop,
                f"{worst}: {sizable[worst]:.2%} → {current_share.get(worst, 0):.2%} of purchases" if worst else "",
            )
        )
    top = set(bought_before[schema.ITEM_ID].value_counts().index[:TOP_ITEMS])
    pooled = [s.where(s.isin(top), "(other)") for s in (bought_before[schema.ITEM_ID], bought[schema.ITEM_ID])]
    checks.append(
        _at_most(
            "popularity_shift",
            _distance(*pooled),
            settings.max_popularity_shift,
            f"over the reference's {len(top)} best sellers",
        )
    )
    known_items = set(known[schema.ITEM_ID])
    unknown_items = float((~current[schema.ITEM_ID].isin(known_items)).mean())
    checks.append(_at_most("unknown_item_share", unknown_items, settings.max_unknown_item_share, "of current events"))
    shoppers = current[schema.USER_ID].unique()
    unknown_shoppers = float(np.mean(~pd.Series(shoppers).isin(set(known[schema.USER_ID])))) if len(shoppers) else 0.0
    checks.append(
        _at_most(
            "unknown_shopper_share",
            unknown_shoppers,
            settings.max_unknown_shopper_share,
            f"of {len(shoppers):,} current shoppers",
        )
    )
    sizes, sizes_before = _basket_sizes(bought), _basket_sizes(bought_before)
    change = float(sizes.mean() / sizes_before.mean() - 1) if len(sizes) and len(sizes_before) else 0.0
    ks = stats.ks_2samp(sizes, sizes_before).statistic if len(sizes) and len(sizes_before) else 0.0
    checks.append(
        Check(
            "basket_size_change",
            change,
            f"within ±{settings.max_basket_size_change:g}",
            abs(change) > settings.max_basket_size_change,
            f"mean {sizes_before.mean():.1f} → {sizes.mean():.1f} lines; KS {ks:.3f}",
        )
    )
    per_day = len(current) / settings.window_days
    per_day_before = len(reference) / (settings.reference_weeks * 7)
    ratio = per_day / per_day_before
    low, high = settings.event_volume_range
    checks.append(
        Check(
            "event_volume_ratio",
            ratio,
            f"in [{low:g}, {high:g}]",
            not low <= ratio <= high,
            f"{per_day:,.0f} events/day vs {per_day_before:,.0f}",
        )
    )
    checks += _served_checks(current, exposures, start, settings)
    return MonitoringReport(start, end, reference_start, len(current), len(reference), checks)


def _served_checks(
    current: pd.DataFrame, exposures: pd.DataFrame | None, start: pd.Timestamp, settings: MonitoringSettings
) -> list[Check]:
    """score_shift and online_hit_rate from the nodes' exposures (unmeasured without them)."""
    window = settings.window_days * 86400.0
    begin = (start - pd.Timestamp("1970-01-01")) / pd.Timedelta(seconds=1)
    if exposures is None or exposures.empty or not (exposures["at"] > begin).any():
        missing = "no exposures in the window: start nodes with --log-exposures to measure it"
        return [
            Check("score_shift", None, f"≤ {settings.max_score_shift:g}", False, missing),
            Check("online_hit_rate", None, f"≥ {settings.min_online_hit_rate:g}", False, missing),
        ]
    now = exposures[exposures["at"] > begin]
    before = exposures[(exposures["at"] > begin - window) & (exposures["at"] <= begin)]
    top_now = [s[0] for s in now["scores"] if len(s)]
    top_before = [s[0] for s in before["scores"] if len(s)]
    if top_now and top_before:
        ks = float(stats.ks_2samp(top_now, top_before).statistic)
        score = _at_most("score_shift", ks, settings.max_score_shift, "KS of top scores, previous window vs current")
    else:
        score = Check(
            "score_shift", None, f"≤ {settings.max_score_shift:g}", False, "no answers in the previous window"
        )
    shoppers = attribute(now.assign(arm="served"), current, settings.attribution_hours * 3600).shoppers
    rate = float(shoppers["purchased"].sum() / max(shoppers["impressions"].sum(), 1))
    hit = Check(
        "online_hit_rate",
        rate,
        f"≥ {settings.min_online_hit_rate:g}",
        rate < settings.min_online_hit_rate,
        f"{int(shoppers['purchased'].sum()):,} of {int(shoppers['impressions'].sum()):,} shown items bought "
        f"within {settings.attribution_hours:g} h",
    )
    return [score, hit]


def markdown(report: MonitoringReport) -> str:
    """The report as a short Markdown page (Prefect artifact, MLflow note)."""
    verdict = (
        f"**{len(report.breached)} check(s) breached: retrain** (`lightpersml run`), then deploy once it passes the gates."
        if report.breached
        else "**All checks pass.**"
    )
    lines = [
        f"# Monitoring {report.window_start:%Y-%m-%d %H:%M} – {report.window_end:%Y-%m-%d %H:%M}",
        "",
        verdict,
        "",
        f"{report.current_events:,} collected events against {report.reference_events:,} training events "
        f"from {report.reference_start:%Y-%m-%d}.",
        "",
        "| check | value | threshold | breached | detail |",
        "|---|---|---|---|---|",
        *(
            f"| {c.name} | {'–' if c.value is None else f'{c.value:.4f}'} | {c.threshold} "
            f"| {'**yes**' if c.breached else 'no'} | {c.detail} |"
            for c in report.checks
        ),
    ]
    return "\n".join(lines) + "\n"
