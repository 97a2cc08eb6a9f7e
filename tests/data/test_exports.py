"""Real-world-shaped exports through `lightpersml validate`'s checks (the contract, thresholds and
the run's protocol): each gets what its user would expect — accepted, accepted with a named
quarantine count, or refused with one message naming table, column, count and share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from data_contracts import schema
from data_contracts.errors import DataContractError, DataValidationError
from data_contracts.folder import load_folder
from data_contracts.validation import validate_dataset
from lightpersml import config


@pytest.fixture(scope="module")
def export(cj_slice) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A shop's export: the slice's last 14 weeks of lines (quantity ≥ 1, known items) as text."""
    events = pd.read_parquet(cj_slice / "events.parquet")
    events = events[
        (events[schema.TIMESTAMP] >= events[schema.TIMESTAMP].max() - pd.Timedelta(weeks=14))
        & events[schema.QUANTITY].between(1, 100)
    ]
    events = events[
        [
            schema.USER_ID,
            schema.ITEM_ID,
            schema.TIMESTAMP,
            schema.QUANTITY,
            schema.VALUE,
            schema.BASKET_ID,
            schema.STORE_ID,
        ]
    ].reset_index(drop=True)
    events[schema.TIMESTAMP] = events[schema.TIMESTAMP].dt.strftime("%Y-%m-%dT%H:%M:%S")
    items = pd.read_parquet(cj_slice / "items.parquet")
    items = items[items[schema.ITEM_ID].isin(events[schema.ITEM_ID])][
        [schema.ITEM_ID, schema.CATEGORY, schema.TITLE, schema.PRICE]
    ]
    return events.astype("string"), items.reset_index(drop=True).astype("string")


@dataclass(frozen=True)
class Case:
    change: Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame] | None] | None = None
    text: Callable[[str], bytes] | None = None  # rewrites events.csv as a whole
    quarantined: int | None = None  # accepted, with this many events quarantined
    refused: tuple[str, ...] = ()  # refused; the message holds each of these
    event_types: tuple[tuple[str, str], ...] = ()


def _rows(events: pd.DataFrame, share: float) -> pd.Index:
    return events.index[:: max(int(1 / share), 1)]


def _set(column: str, value, share: float | None = None, where: Callable | None = None):
    def change(events, items):
        rows = events.index if share is None else _rows(events, share)
        events.loc[rows, column] = value

    return change


def _items(column: str, value):
    def change(events, items):
        items[column] = value

    return change


def _headers_repeated(text: str) -> bytes:
    lines = text.splitlines()
    return "\n".join(lines[:1000] + lines[:1] + lines[1000:2000] + lines[:1] + lines[2000:]).encode() + b"\n"


def _one_day(events, items):
    day = events[schema.TIMESTAMP].str[:10].max()
    return events[events[schema.TIMESTAMP].str.startswith(day)].copy(), items


def _one_shopper(events, items):
    return events[events[schema.USER_ID] == events[schema.USER_ID].iloc[0]].copy(), items


def _one_off_few_shoppers(events, items):
    """Each of 30 shoppers' first purchase of each item only: nobody repeats, too few to test."""
    few = events[events[schema.USER_ID].isin(events[schema.USER_ID].unique()[:30])]
    return few.drop_duplicates([schema.USER_ID, schema.ITEM_ID]).copy(), items


def _typed(*types: str):
    def change(events, items):
        events[schema.EVENT_TYPE] = [types[j % len(types)] for j in range(len(events))]

    return change


def _offsets(events, items):
    stamps = pd.to_datetime(events[schema.TIMESTAMP])
    half = events.index % 2 == 0
    events.loc[half, schema.TIMESTAMP] = (stamps[half] + pd.Timedelta(hours=1)).dt.strftime("%Y-%m-%dT%H:%M:%S+01:00")
    events.loc[~half, schema.TIMESTAMP] = stamps[~half].dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _excel_dates(events, items):
    stamps = pd.to_datetime(events[schema.TIMESTAMP])
    events[schema.TIMESTAMP] = stamps.dt.strftime("%m/%d/%Y %H:%M")


def _excel_serials(events, items):
    stamps = pd.to_datetime(events[schema.TIMESTAMP])
    events[schema.TIMESTAMP] = ((stamps - pd.Timestamp("1899-12-30")) / pd.Timedelta(days=1)).round(6).astype(str)


def _epoch_ms(events, items):
    events[schema.TIMESTAMP] = (pd.to_datetime(events[schema.TIMESTAMP]).astype("int64") // 10**6).astype(str)


def _leading_zeros(events, items):
    events[schema.ITEM_ID] = "000" + events[schema.ITEM_ID]
    items[schema.ITEM_ID] = "000" + items[schema.ITEM_ID]


def _thousands(events, items):
    rows = _rows(events, 0.1)
    events.loc[rows, schema.VALUE] = "1,234.50"


def _quoted_commas(events, items):
    items[schema.TITLE] = items[schema.TITLE] + ', 2% "low fat"'


def _padded_ids(events, items):
    events[schema.USER_ID] = " " + events[schema.USER_ID] + " "


def _duplicated(events, items):
    return pd.concat([events, events.iloc[:40]], ignore_index=True), items


def _unknown_items(share: float):
    def change(events, items):
        events.loc[_rows(events, share), schema.ITEM_ID] = "NOT-IN-CATALOGUE"

    return change


CASES = {
    "clean export": Case(quarantined=0),
    "Windows line endings": Case(text=lambda t: t.replace("\n", "\r\n").encode(), quarantined=0),
    "UTF-8 byte order mark": Case(text=lambda t: b"\xef\xbb\xbf" + t.encode(), quarantined=0),
    "titles with quoted commas and quotes": Case(change=_quoted_commas, quarantined=0),
    "header row repeated where files were concatenated": Case(text=_headers_repeated, quarantined=2),
    "mixed UTC offsets": Case(change=_offsets, quarantined=0),
    "ids with leading zeros": Case(change=_leading_zeros, quarantined=0),
    "ids padded with spaces": Case(change=_padded_ids, quarantined=0),
    "values with thousands separators": Case(change=_thousands, quarantined=0),
    "Excel date text (m/d/Y H:M)": Case(change=_excel_dates, quarantined=0),
    "Excel serial dates": Case(change=_excel_serials, quarantined=0),
    "epoch milliseconds": Case(change=_epoch_ms, quarantined=0),
    "quantities written 2.0": Case(
        change=lambda e, i: e.__setitem__(schema.QUANTITY, e[schema.QUANTITY] + ".0"), quarantined=0
    ),
    "0.5% void lines (quantity 0)": Case(change=_set(schema.QUANTITY, "0", 0.005), quarantined="voids"),
    "5% void lines": Case(
        change=_set(schema.QUANTITY, "0", 0.05),
        refused=("table events", "column quantity", "over the limit of 1%", "5.00%"),
    ),
    "0.3% lines of items not in the catalogue": Case(change=_unknown_items(0.003), quarantined="unknown"),
    "10% lines of items not in the catalogue": Case(
        change=_unknown_items(0.1), refused=("column item_id", "item_id_in_items_table", "10.00%")
    ),
    "a typo'd year 2099": Case(change=_set(schema.TIMESTAMP, "2099-01-01T10:00:00", 0.0001), quarantined="one"),
    "a few 1970-01-01 placeholders": Case(
        change=_set(schema.TIMESTAMP, "1970-01-01T00:00:00", 0.0005), quarantined="placeholders"
    ),
    "duplicated lines": Case(change=_duplicated, quarantined=40),
    "shop's own type names (order, click)": Case(change=_typed("order", "order", "click"), quarantined=0),
    "ratings without a mapping": Case(
        change=_typed("rating"), refused=("column event_type", "--event-type", "rating", "100.00%")
    ),
    "ratings mapped to purchases": Case(change=_typed("rating"), event_types=(("rating", "purchase"),), quarantined=0),
    "views only": Case(change=_typed("view"), refused=("no purchase events", "view (", "--event-type")),
    "one day of data": Case(change=_one_day, refused=("the protocol needs 8 weeks",)),
    "one shopper": Case(
        change=_one_shopper, refused=("the validation split has 1 shopper with a purchase", "at least 50")
    ),
    "one-off purchases of 30 shoppers": Case(
        change=_one_off_few_shoppers, refused=("nobody repeats a purchase here", "30 shoppers", "at least 50")
    ),
    "no timestamp column": Case(
        change=lambda e, i: (e.drop(columns=[schema.TIMESTAMP]), i),
        refused=("table events", "column timestamp", "missing"),
    ),
    "every price negative": Case(change=_items(schema.PRICE, "-1"), refused=("table items", "remove all")),
    "a quantity of 1e30": Case(change=_set(schema.QUANTITY, "1e30", 0.0001), quarantined="one"),
    "5% quantities of 1e30 (shown as written)": Case(
        change=_set(schema.QUANTITY, "1e30", 0.05), refused=("values_parse_as_int", "'quantity': '1e30'", "5.00%")
    ),
    "a whole column of text for quantity": Case(
        change=_set(schema.QUANTITY, "two"), refused=("column quantity", "values_parse_as_int", "100.00%")
    ),
}


def write(folder: Path, events: pd.DataFrame, items: pd.DataFrame, text: Callable[[str], bytes] | None) -> None:
    folder.mkdir()
    csv = events.to_csv(index=False)
    (folder / "events.csv").write_bytes(text(csv) if text else csv.encode())
    items.to_csv(folder / "items.csv", index=False)


def expected_quarantine(case: Case, events: pd.DataFrame) -> int:
    if isinstance(case.quarantined, int):
        return case.quarantined
    shares = {"voids": 0.005, "unknown": 0.003, "one": 0.0001, "placeholders": 0.0005}
    return len(_rows(events, shares[case.quarantined]))


@pytest.mark.parametrize("name", list(CASES))
def test_an_export_gets_the_outcome_its_user_expects(name, export, tmp_path):
    case = CASES[name]
    events, items = export[0].copy(), export[1].copy()
    if case.change:
        events, items = case.change(events, items) or (events, items)
    write(tmp_path / "shop", events, items, case.text)
    settings = config.ValidationSettings(event_types=case.event_types)
    protocol = config.protocol(config.PROFILES["quick"])
    if case.refused:
        with pytest.raises(DataValidationError) as refused:
            validate_dataset(load_folder(tmp_path / "shop"), tmp_path / "report", **vars(settings), protocol=protocol)
        message = str(refused.value)
        assert message.startswith("Data validation failed") and "Nothing was trained" in message
        for words in case.refused:
            assert words in message, message
        return
    clean, report = validate_dataset(
        load_folder(tmp_path / "shop"), tmp_path / "report", **vars(settings), protocol=protocol
    )
    assert report.passed and report.quarantined["events"] == expected_quarantine(case, events), report.summary()
    read = len(events) + (2 if case.text is _headers_repeated else 0)
    assert len(clean.events) == read - report.quarantined["events"]
    assert (
        set(clean.events[schema.EVENT_TYPE]) <= {"purchase", "view", "add_to_cart"}
        if schema.EVENT_TYPE in clean.events
        else True
    )
    stamps = clean.events[schema.TIMESTAMP]
    assert stamps.min() > pd.Timestamp("2016-01-01") and stamps.max() < pd.Timestamp("2019-01-01")


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("semicolons", lambda t: t.replace(",", ";").encode(), "separated by ';'"),
        ("Latin-1", lambda t: t.replace("2017", "2017", 1).encode() + "café".encode("latin-1"), "not valid UTF-8"),
    ],
)
def test_unreadable_files_are_refused_naming_the_file(name, text, words, export, tmp_path):
    write(tmp_path / "shop", export[0], export[1], text)
    with pytest.raises(DataContractError, match=words):
        load_folder(tmp_path / "shop")
