"""Broken input: each kind gets a clear error (table, column, count, example) or a quarantine
with the right counts. Built from a small real slice written as CSV, then broken on purpose."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from data_contracts import schema
from data_contracts.errors import DataContractError, DataValidationError
from data_contracts.folder import load_folder
from data_contracts.validation import validate_dataset


@pytest.fixture
def good_folder(cj_slice, tmp_path) -> Path:
    """300 real events (no outliers) and their items, as CSV files."""
    events = pd.read_parquet(cj_slice / "events.parquet")
    events = events[events[schema.QUANTITY] <= 100].head(300)
    items = pd.read_parquet(cj_slice / "items.parquet")
    items = items[items[schema.ITEM_ID].isin(events[schema.ITEM_ID])]
    folder = tmp_path / "shop"
    folder.mkdir()
    events.to_csv(folder / "events.csv", index=False)
    items.to_csv(folder / "items.csv", index=False)
    return folder


def edit_events(folder: Path, change) -> None:
    events = pd.read_csv(folder / "events.csv", dtype=str)
    change(events)
    events.to_csv(folder / "events.csv", index=False)


def run_validation(folder: Path, tmp_path: Path):
    return validate_dataset(load_folder(folder), tmp_path / "report")


def blocking_error(folder: Path, tmp_path: Path) -> str:
    with pytest.raises(DataValidationError) as caught:
        run_validation(folder, tmp_path)
    assert Path(caught.value.report_path).exists()
    return str(caught.value)


def test_good_data_passes(good_folder, tmp_path):
    clean, report = run_validation(good_folder, tmp_path)
    assert report.passed and len(clean.events) == 300 and report.quarantined["events"] == 0
    assert Path(report.report_json).exists()
    page = Path(report.data_docs)
    assert (
        page.name == "report.html" and "PASSED" in page.read_text() and not (tmp_path / "report" / "gx" / "gx").exists()
    )
    gx_pages = [link for link in page.read_text().split('"') if link.startswith("gx/") and link.endswith(".html")]
    assert gx_pages and all((page.parent / link).exists() for link in gx_pages)


def test_missing_column(good_folder, tmp_path):
    edit_events(good_folder, lambda e: e.drop(columns=[schema.TIMESTAMP], inplace=True))
    message = blocking_error(good_folder, tmp_path)
    assert "table events" in message and "column timestamp" in message and "missing" in message


def quarantined(folder: Path, tmp_path: Path, table: str = "events") -> tuple[int, set[str]]:
    """Rows quarantined from `table` in a passing run, and their reasons."""
    clean, report = run_validation(folder, tmp_path)
    assert report.passed
    rows = pd.read_parquet(Path(report.quarantine_dir) / f"{table}.parquet")
    return report.quarantined[table], set(rows["reason"])


def test_a_few_values_of_the_wrong_type_are_quarantined_and_many_refuse_the_run(good_folder, tmp_path):
    edit_events(good_folder, lambda e: e.__setitem__(schema.QUANTITY, e[schema.QUANTITY].where(e.index != 7, "two")))
    assert quarantined(good_folder, tmp_path) == (1, {"values_parse_as_int:quantity;"})
    edit_events(good_folder, lambda e: e.__setitem__(schema.QUANTITY, e[schema.QUANTITY].where(e.index >= 10, "two")))
    message = blocking_error(good_folder, tmp_path)
    assert "column quantity" in message and "values_parse_as_int" in message and "10 row(s)" in message
    assert "3.33% of 300 rows, over the limit of 1%" in message
    assert "'two'" in message and "'line': 2" in message  # row 0 is line 2 (header is line 1)


def test_a_few_null_ids_are_quarantined_and_a_null_column_refuses_the_run(good_folder, tmp_path):
    edit_events(good_folder, lambda e: e.__setitem__(schema.USER_ID, e[schema.USER_ID].where(~e.index.isin([3, 4]))))
    count, reasons = quarantined(good_folder, tmp_path)
    assert count == 2 and any("not_be_null" in r for r in reasons)
    edit_events(good_folder, lambda e: e.__setitem__(schema.USER_ID, None))
    message = blocking_error(good_folder, tmp_path)
    assert "column user_id" in message and "not_be_null" in message and "100.00% of 300 rows" in message


def test_unparseable_timestamps_over_the_limit_refuse_the_run(good_folder, tmp_path):
    edit_events(
        good_folder, lambda e: e.__setitem__(schema.TIMESTAMP, e[schema.TIMESTAMP].where(e.index >= 4, "not-a-date"))
    )
    message = blocking_error(good_folder, tmp_path)
    assert "column timestamp" in message and "4 row(s)" in message and "not-a-date" in message and "1.33%" in message


def test_a_void_line_is_quarantined(good_folder, tmp_path):
    edit_events(good_folder, lambda e: e.__setitem__(schema.QUANTITY, e[schema.QUANTITY].where(e.index != 0, "0")))
    count, reasons = quarantined(good_folder, tmp_path)
    assert count == 1 and any("between" in r for r in reasons)


def test_unknown_item_ids_over_the_limit_refuse_the_run(good_folder, tmp_path):
    edit_events(
        good_folder, lambda e: e.__setitem__(schema.ITEM_ID, e[schema.ITEM_ID].where(e.index >= 4, "NO-SUCH-ITEM"))
    )
    message = blocking_error(good_folder, tmp_path)
    assert (
        "column item_id" in message
        and "item_id_in_items_table" in message
        and "4 row(s)" in message
        and "NO-SUCH-ITEM" in message
    )
    assert "over the limit of 1%" in message


def test_empty_file(good_folder, tmp_path):
    (good_folder / "events.csv").write_text("")
    with pytest.raises(DataContractError, match=r"events\.csv: the file is empty"):
        load_folder(good_folder)


def test_header_only_table(good_folder, tmp_path):
    (good_folder / "events.csv").write_text("user_id,item_id,timestamp\n")
    message = blocking_error(good_folder, tmp_path)
    assert "table events" in message and "no rows" in message


def test_duplicate_rows_are_quarantined(good_folder, tmp_path):
    edit_events(good_folder, lambda e: None)
    events = pd.read_csv(good_folder / "events.csv", dtype=str)
    pd.concat([events, events.iloc[[1, 2, 2]]]).to_csv(good_folder / "events.csv", index=False)
    clean, report = run_validation(good_folder, tmp_path)
    assert report.passed and report.quarantined["events"] == 3 and len(clean.events) == 300
    quarantined = pd.read_parquet(Path(report.quarantine_dir) / "events.parquet")
    assert len(quarantined) == 3 and quarantined["reason"].str.contains("unique").all()
    gx_page = next((tmp_path / "report" / "gx").rglob("lightpersml-events.html")).read_text()
    status = re.sub(r"<[^>]+>", " ", gx_page.split("Status:", 1)[1])  # a quarantine-only check fails no passed run
    assert status.split()[0] == "Succeeded"


def test_negative_values_and_outliers_are_quarantined(good_folder, tmp_path):
    edit_events(
        good_folder,
        lambda e: (
            e.__setitem__(schema.VALUE, e[schema.VALUE].where(e.index != 5, "-3.5")),
            e.__setitem__(schema.QUANTITY, e[schema.QUANTITY].where(e.index != 6, "5000")),
        ),
    )
    clean, report = run_validation(good_folder, tmp_path)
    assert report.quarantined["events"] == 2 and len(clean.events) == 298
    checks = {f.check for f in report.findings}
    assert any("outlier" in c for c in checks)


def test_wrong_delimiter(good_folder, tmp_path):
    events = pd.read_csv(good_folder / "events.csv", dtype=str)
    events.to_csv(good_folder / "events.csv", index=False, sep=";")
    with pytest.raises(DataContractError, match=r"events\.csv: the header .* separated by ';'"):
        load_folder(good_folder)


def test_wrong_encoding(good_folder, tmp_path):
    items = pd.read_csv(good_folder / "items.csv", dtype=str)
    items.loc[3, schema.TITLE] = "CRÈME FRAÎCHE"
    items.to_csv(good_folder / "items.csv", index=False, encoding="latin-1")
    with pytest.raises(DataContractError, match=r"items\.csv: not valid UTF-8 .* at line 5"):
        load_folder(good_folder)


def test_missing_required_table(good_folder):
    (good_folder / "items.csv").unlink()
    with pytest.raises(DataContractError, match="no items.parquet or items.csv"):
        load_folder(good_folder)


def test_events_of_a_quarantined_item_follow_it(good_folder, tmp_path):
    items = pd.read_csv(good_folder / "items.csv", dtype=str)
    events = pd.read_csv(good_folder / "events.csv", dtype=str)
    item = events[schema.ITEM_ID].value_counts().index[0]
    n_events = int((events[schema.ITEM_ID] == item).sum())
    items.loc[items[schema.ITEM_ID] == item, schema.PRICE] = "-1"
    items.to_csv(good_folder / "items.csv", index=False)
    clean, report = run_validation(good_folder, tmp_path)
    assert report.quarantined == {"items": 1, "events": n_events}
    assert item not in set(clean.events[schema.ITEM_ID])
    assert {f.check for f in report.findings} >= {"item_quarantined"}
