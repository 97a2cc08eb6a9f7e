"""Whether the evaluation protocol can learn from and measure a dataset, checked before training.

Training learns from purchases only (views and cart additions steer an edge node's session
slots, not the models). The protocol (DESIGN.md) cuts the purchases at a test cutoff `test_weeks`
before the newest one and at a validation cutoff `validation_weeks` earlier; each split's test
shoppers are those with a purchase both before its cutoff and in its window. Fewer than
`min_test_users` of them make every metric, gate and tuning decision noise, so the run is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from data_contracts import schema
from data_contracts.conform import Finding

REPEAT_SHARE_MIN = 0.01  # below this share of (user, item) pairs bought in 2+ baskets, nobody re-buys
MIN_HOLDOUT_LINES = 5  # a user with fewer purchase lines is history only in the holdout protocol
ProtocolKind = Literal["auto", "temporal", "holdout"]
HoldoutOrder = Literal["time", "random"]


@dataclass(frozen=True)
class Protocol:
    """kind: "temporal" (a global cutoff: grocery), "holdout" (each user's newest tenth: data where
    nobody buys an item twice, `splits.holdout`), or "auto": holdout when the data's repeat share
    is below REPEAT_SHARE_MIN."""

    test_weeks: int = 4
    validation_weeks: int = 4
    min_test_users: int = 50
    kind: ProtocolKind = "auto"
    holdout_order: HoldoutOrder = "time"  # the holdout's: each user's newest lines, or random ones


def repeat_share(purchases: pd.DataFrame) -> float | None:
    """Share of (user, item) pairs bought in more than one basket (`basket_id`, else the calendar
    day, as `splits.temporal.purchase_lines` groups them), among users with two baskets or more;
    ~0 for ratings-like data, None when nobody has two baskets (nothing to tell from)."""
    stamps = purchases[schema.TIMESTAMP]
    day = (stamps.dt.tz_localize(None) if stamps.dt.tz is not None else stamps).dt.floor("D")
    basket = -1 - pd.factorize(day)[0]  # codes, not strings: 1.5M lines in well under a second
    if schema.BASKET_ID in purchases.columns:
        given = pd.factorize(purchases[schema.BASKET_ID])[0]
        basket = np.where(given >= 0, given, basket)
    lines = pd.DataFrame(
        {"u": pd.factorize(purchases[schema.USER_ID])[0], "i": pd.factorize(purchases[schema.ITEM_ID])[0], "b": basket}
    ).drop_duplicates()
    lines = lines[lines.groupby("u")["b"].transform("nunique") > 1]
    if lines.empty:
        return None
    return float((lines.groupby(["u", "i"], sort=False).size() > 1).mean())


def protocol_kind(events: pd.DataFrame, protocol: Protocol) -> Literal["temporal", "holdout"]:
    """The protocol `protocol` means for these events (resolving "auto": holdout when shoppers
    with several baskets (almost) never buy an item again)."""
    if protocol.kind != "auto":
        return protocol.kind
    share = repeat_share(_purchases(events))
    return "holdout" if share is not None and share < REPEAT_SHARE_MIN else "temporal"


def _purchases(events: pd.DataFrame) -> pd.DataFrame:
    if schema.EVENT_TYPE in events.columns:
        return events[events[schema.EVENT_TYPE] == "purchase"]
    return events


def learnability_findings(events: pd.DataFrame, protocol: Protocol) -> list[Finding]:
    """Blocking findings when `events` (validated) cannot be split and measured by `protocol`."""
    purchases = events
    if schema.EVENT_TYPE in events.columns:
        purchases = events[events[schema.EVENT_TYPE] == "purchase"]
        if purchases.empty:
            found = ", ".join(f"{t} ({n:,})" for t, n in events[schema.EVENT_TYPE].value_counts().items())
            return [
                _refusal(
                    "purchases_present",
                    f"no purchase events (types found: {found or 'none'}); training learns from purchases. "
                    "If one of these types means a purchase, map it: --event-type TYPE=purchase",
                )
            ]
    if purchases.empty:
        return []  # the suites already report an empty table
    if protocol_kind(purchases, protocol) == "holdout":
        return _holdout_findings(purchases, protocol)
    stamps, users = purchases[schema.TIMESTAMP], purchases[schema.USER_ID]
    first, newest = stamps.min(), stamps.max()
    test_cutoff = newest - pd.Timedelta(weeks=protocol.test_weeks)
    validation_cutoff = test_cutoff - pd.Timedelta(weeks=protocol.validation_weeks)
    span = f"the purchases span {first:%Y-%m-%d} to {newest:%Y-%m-%d} ({(newest - first).days} days)"
    needed = protocol.test_weeks + protocol.validation_weeks
    if first >= validation_cutoff:
        return [
            _refusal(
                "span_covers_protocol",
                f"{span}; the protocol needs {needed} weeks of test and validation "
                f"windows plus history before them (test_weeks={protocol.test_weeks}, "
                f"validation_weeks={protocol.validation_weeks})",
            )
        ]
    findings = []
    for name, cutoff, window_end in (("validation", validation_cutoff, test_cutoff), ("test", test_cutoff, None)):
        before = set(users[stamps < cutoff])
        inside = stamps >= cutoff if window_end is None else (stamps >= cutoff) & (stamps < window_end)
        both = len(before & set(users[inside]))
        if both < protocol.min_test_users:
            findings.append(
                _refusal(
                    f"enough_{name}_shoppers",
                    f"the {name} split has {both:,} shopper{'' if both == 1 else 's'} with a purchase both before {cutoff:%Y-%m-%d} and in the "
                    f"window after it; at least {protocol.min_test_users} are needed for metrics that mean anything "
                    f"({span})",
                )
            )
    return findings


def _holdout_findings(purchases: pd.DataFrame, protocol: Protocol) -> list[Finding]:
    """The holdout protocol tests every user with at least MIN_HOLDOUT_LINES purchase lines."""
    lines = purchases.drop_duplicates([schema.USER_ID, schema.ITEM_ID]).groupby(schema.USER_ID).size()
    testable = int((lines >= MIN_HOLDOUT_LINES).sum())
    if testable >= protocol.min_test_users:
        return []
    return [
        _refusal(
            "enough_holdout_shoppers",
            f"nobody repeats a purchase here, so each shopper's newest tenth of purchases is their test; "
            f"{testable:,} shopper{'' if testable == 1 else 's'} bought at least {MIN_HOLDOUT_LINES} distinct "
            f"items, and at least {protocol.min_test_users} are needed for metrics that mean anything",
        )
    ]


def _refusal(check: str, detail: str) -> Finding:
    return Finding(table="events", column=None, check=check, blocking=True, unexpected_count=None, detail=detail)
