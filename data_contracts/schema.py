"""The data contract: table names, column names and what each column must hold.

Column names are constants so code never spells a string twice (as in Microsoft Recommenders).
"""

from __future__ import annotations

from dataclasses import dataclass

USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
EVENT_TYPE = "event_type"
QUANTITY = "quantity"
VALUE = "value"
BASKET_ID = "basket_id"
STORE_ID = "store_id"
CATEGORY = "category"
DEPARTMENT = "department"
BRAND = "brand"
PRICE = "price"
TITLE = "title"
REGION = "region"
IN_STOCK = "in_stock"
VALID_FROM = "valid_from"

EVENT_TYPES = ("view", "add_to_cart", "purchase")
DEFAULT_EVENT_TYPE = "purchase"
# What shop systems commonly call the contract's types (lower case). Anything else, e.g. `rating`,
# needs a mapping (`--event-type rating=purchase`); training learns from purchases only.
EVENT_TYPE_ALIASES = {
    "order": "purchase",
    "buy": "purchase",
    "sale": "purchase",
    "transaction": "purchase",
    "checkout": "purchase",
    "click": "view",
    "pageview": "view",
    "page_view": "view",
    "detail": "view",
    "product_view": "view",
    "cart": "add_to_cart",
    "addtocart": "add_to_cart",
    "add-to-cart": "add_to_cart",
    "add to cart": "add_to_cart",
}


# Column kinds: "id" (string after ingestion), "timestamp", "int", "float", "bool", "str".
@dataclass(frozen=True)
class TableSpec:
    name: str
    required: dict[str, str]
    optional: dict[str, str]
    primary_key: tuple[str, ...] = ()

    @property
    def columns(self) -> dict[str, str]:
        return {**self.required, **self.optional}


EVENTS = TableSpec(
    name="events",
    required={USER_ID: "id", ITEM_ID: "id", TIMESTAMP: "timestamp"},
    optional={EVENT_TYPE: "str", QUANTITY: "int", VALUE: "float", BASKET_ID: "id", STORE_ID: "id"},
)
ITEMS = TableSpec(
    name="items",
    required={ITEM_ID: "id"},
    optional={CATEGORY: "str", DEPARTMENT: "str", BRAND: "str", PRICE: "float", TITLE: "str"},
    primary_key=(ITEM_ID,),
)
STORES = TableSpec(name="stores", required={STORE_ID: "id"}, optional={REGION: "str"}, primary_key=(STORE_ID,))
AVAILABILITY = TableSpec(
    name="availability",
    required={STORE_ID: "id", ITEM_ID: "id"},
    optional={IN_STOCK: "bool", VALID_FROM: "timestamp"},
)
USERS = TableSpec(name="users", required={USER_ID: "id"}, optional={}, primary_key=(USER_ID,))

TABLES = {spec.name: spec for spec in (EVENTS, ITEMS, STORES, AVAILABILITY, USERS)}
REQUIRED_TABLES = ("events", "items")
