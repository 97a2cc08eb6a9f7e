"""Whether the evaluation protocol can learn from and measure a dataset, checked before training.

Training learns from purchases only (views and cart additions steer an edge node's session
slots, not the models). The protocol (DESIGN.md) cuts the purchases at a test cutoff `test_weeks`
before the newest one and at a validation cutoff `validation_weeks` earlier; each split's test
shoppers are those with a purchase both before its cutoff and in its window. Fewer than
`min_test_users` of them make every metric, gate and tuning decision noise, so the run is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from data_contracts import schema
from data_contracts.conform import Finding


@dataclass(frozen=True)
class Protocol:
    test_weeks: int = 4
    validation_weeks: int = 4
    min_test_users: int = 50


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


def _refusal(check: str, detail: str) -> Finding:
    return Finding(table="events", column=None, check=check, blocking=True, unexpected_count=None, detail=detail)
