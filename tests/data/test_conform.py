"""Casting raw columns to the contract's types."""

import pandas as pd

from data_contracts import schema
from data_contracts.conform import conform_table


def test_numeric_ids_become_the_same_strings_and_timestamps_become_utc():
    raw = pd.DataFrame(
        {
            schema.USER_ID: [1, 2],
            schema.ITEM_ID: [3.0, 4.0],  # a Parquet writer turned ints into floats
            schema.TIMESTAMP: pd.to_datetime(["2020-01-01 10:00+02:00", "2020-01-02 10:00+02:00"]),
        }
    )
    frame, findings = conform_table(raw, schema.EVENTS)
    assert findings == []
    assert frame[schema.USER_ID].tolist() == ["1", "2"] and frame[schema.ITEM_ID].tolist() == ["3", "4"]
    assert frame[schema.TIMESTAMP].tolist() == [pd.Timestamp("2020-01-01 08:00"), pd.Timestamp("2020-01-02 08:00")]


def test_text_timestamps_with_offsets_and_missing_event_type():
    raw = pd.DataFrame(
        {
            schema.USER_ID: ["a", "b"],
            schema.ITEM_ID: ["x", "y"],
            schema.TIMESTAMP: ["2020-01-01T10:00:00+02:00", "2020-01-01 09:00:00"],
            schema.EVENT_TYPE: ["View", None],
        }
    )
    frame, findings = conform_table(raw, schema.EVENTS)
    assert findings == []
    assert frame[schema.TIMESTAMP].tolist() == [pd.Timestamp("2020-01-01 08:00"), pd.Timestamp("2020-01-01 09:00")]
    assert frame[schema.EVENT_TYPE].tolist() == ["view", "purchase"]


def test_fractional_quantity_is_a_type_error():
    raw = pd.DataFrame(
        {schema.USER_ID: ["a"], schema.ITEM_ID: ["x"], schema.TIMESTAMP: ["2020-01-01"], schema.QUANTITY: ["1.5"]}
    )
    _, findings = conform_table(raw, schema.EVENTS)
    assert [(f.column, f.check, f.row_indices) for f in findings] == [(schema.QUANTITY, "values_parse_as_int", [0])]


def test_epoch_numbers_and_fractional_float_ids():
    raw = pd.DataFrame(
        {schema.USER_ID: [1.0, 2.5], schema.ITEM_ID: ["x", "y"], schema.TIMESTAMP: [1_577_872_800, 1_577_876_400]}
    )
    frame, findings = conform_table(raw, schema.EVENTS)
    assert findings == [] and frame[schema.USER_ID].tolist() == ["1", "2.5"]
    assert frame[schema.TIMESTAMP].tolist() == [pd.Timestamp("2020-01-01 10:00"), pd.Timestamp("2020-01-01 11:00")]
    millis, _ = conform_table(raw.assign(**{schema.TIMESTAMP: raw[schema.TIMESTAMP] * 1000}), schema.EVENTS)
    assert millis[schema.TIMESTAMP].equals(frame[schema.TIMESTAMP])


def test_epoch_numbers_in_every_unit_and_excel_serial_days_become_the_same_time():
    moment = pd.Timestamp("2017-06-01 12:30:00")
    seconds = (moment - pd.Timestamp("1970-01-01")).total_seconds()
    columns = {
        "s": seconds,
        "ms": seconds * 1e3,
        "us": seconds * 1e6,
        "ns": seconds * 1e9,
        "excel": (moment - pd.Timestamp("1899-12-30")) / pd.Timedelta(days=1),
    }
    for unit, value in columns.items():
        raw = pd.DataFrame({schema.USER_ID: ["a", "b"], schema.ITEM_ID: ["x", "y"], schema.TIMESTAMP: [value, value]})
        frame, findings = conform_table(raw, schema.EVENTS)
        assert findings == [] and (frame[schema.TIMESTAMP] - moment).abs().max() < pd.Timedelta(seconds=1), unit


def test_shop_names_of_event_types_are_mapped_and_a_mapping_adds_more():
    raw = pd.DataFrame(
        {
            schema.USER_ID: ["a"] * 4,
            schema.ITEM_ID: ["x"] * 4,
            schema.TIMESTAMP: ["2020-01-01"] * 4,
            schema.EVENT_TYPE: ["Order", " click ", "addtocart", "rating"],
        }
    )
    frame, _ = conform_table(raw, schema.EVENTS, {"Rating": "purchase"})
    assert frame[schema.EVENT_TYPE].tolist() == ["purchase", "view", "add_to_cart", "purchase"]
    assert conform_table(raw, schema.EVENTS)[0][schema.EVENT_TYPE].tolist()[-1] == "rating"  # left for the check
