"""The contract's basket rules recomputed with pandas, independently of tasks.features, as the
reference the feature and partition tests compare with: purchases only; a basket is
user + basket_id; its time is its first line's; an item counts once per basket."""

from __future__ import annotations

import pandas as pd

from data_contracts import schema


def purchase_baskets(events: pd.DataFrame) -> pd.DataFrame:
    """One row per (basket, item) of the purchases in `events` (which have basket ids):
    user_id, item_id, store_id, basket, time."""
    if schema.EVENT_TYPE in events:
        events = events[events[schema.EVENT_TYPE] == "purchase"]
    rows = pd.DataFrame(
        {
            "user_id": events[schema.USER_ID],
            "item_id": events[schema.ITEM_ID],
            "store_id": events[schema.STORE_ID],
            "basket": events[schema.USER_ID] + "#" + events[schema.BASKET_ID].astype(str),
            "time": events[schema.TIMESTAMP],
        }
    )
    rows["time"] = rows.groupby("basket")["time"].transform("min")
    return rows.drop_duplicates(["basket", "item_id"])
