"""Attribution: which of a shopper's clicks, cart additions and purchases an experiment's answers
earned. An answer shows items at positions 1…k (an impression each); an event of the shopper on a
shown item within the experiment's window after the answer is attributed to the latest such
impression (each event to one impression at most, so an item shown twice is not counted twice).
Times are Unix seconds on the node's clock, or the time each request said it was for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_contracts import schema

EVENT_KINDS = {"view": "clicked", "add_to_cart": "carted", "purchase": "purchased"}
SHOPPER_COLUMNS = ("arm", "exposures", "impressions", "clicked", "carted", "purchased", "revenue")


@dataclass(frozen=True)
class Outcomes:
    """Per shopper of an experiment, what they were shown and what it earned.

    shoppers: index user_id; columns arm, exposures, impressions, and clicked / carted / purchased
    (impressions with at least one attributed view / add-to-cart / purchase) and revenue (the
    summed `value` of attributed purchases; events without a value count 0)."""

    shoppers: pd.DataFrame
    attributed_events: dict[str, int]  # events attributed to an impression, per event type
    mixed_shoppers: int  # seen in both arms (e.g. nodes started with different salts): left out


def event_seconds(timestamps: pd.Series) -> np.ndarray:
    """Contract timestamps (naive UTC) as Unix seconds."""
    return (pd.to_datetime(timestamps) - pd.Timestamp("1970-01-01")) / pd.Timedelta(seconds=1)


def attribute(exposures: pd.DataFrame, events: pd.DataFrame, window_s: float) -> Outcomes:
    """exposures: node, seq, arm, user_id, item_ids (list per answer), at. events: the contract's
    columns (user_id, item_id, event_type, timestamp, value), one row per logged event."""
    arms = exposures.groupby("user_id")["arm"].nunique()
    mixed = arms[arms > 1].index
    exposures = exposures[~exposures["user_id"].isin(mixed)]
    impressions = (
        exposures[["node", "seq", "user_id", "arm", "at", "item_ids"]]
        .explode("item_ids")
        .dropna(subset=["item_ids"])
        .rename(columns={"item_ids": schema.ITEM_ID})
    )
    impressions["impression"] = np.arange(len(impressions))
    shown = events[events[schema.USER_ID].isin(impressions[schema.USER_ID].unique())].copy()
    shown = shown[shown[schema.EVENT_TYPE].isin(list(EVENT_KINDS))]
    shown["at"] = event_seconds(shown[schema.TIMESTAMP]).astype(float)
    keys = [schema.USER_ID, schema.ITEM_ID]  # one string dtype on both sides (the contract's is nullable)
    shown[keys], impressions[keys] = shown[keys].astype(str), impressions[keys].astype(str)
    matched = pd.merge_asof(
        shown.sort_values("at"),
        impressions[[schema.USER_ID, schema.ITEM_ID, "at", "impression"]].astype({"at": float}).sort_values("at"),
        on="at",
        by=[schema.USER_ID, schema.ITEM_ID],
        direction="backward",
        tolerance=float(window_s),
    ).dropna(subset=["impression"])
    matched["impression"] = matched["impression"].astype(int)
    per_impression = impressions.set_index("impression")[[schema.USER_ID]]
    for kind, column in EVENT_KINDS.items():
        hit = matched.loc[matched[schema.EVENT_TYPE] == kind, "impression"].unique()
        per_impression[column] = per_impression.index.isin(hit)
    purchases = matched[matched[schema.EVENT_TYPE] == "purchase"]
    value = purchases[schema.VALUE] if schema.VALUE in purchases.columns else pd.Series(0.0, index=purchases.index)
    revenue = value.fillna(0.0).astype(float).groupby(purchases[schema.USER_ID]).sum()
    shoppers = exposures.groupby(schema.USER_ID).agg(arm=("arm", "first"), exposures=("seq", "size"))
    shoppers = shoppers.join(per_impression.groupby(schema.USER_ID).size().rename("impressions"))
    shoppers = shoppers.join(per_impression.groupby(schema.USER_ID)[list(EVENT_KINDS.values())].sum())
    shoppers = shoppers.join(revenue.rename("revenue")).fillna(0)
    counts = {kind: int((matched[schema.EVENT_TYPE] == kind).sum()) for kind in EVENT_KINDS}
    return Outcomes(shoppers[list(SHOPPER_COLUMNS)], counts, len(mixed))
