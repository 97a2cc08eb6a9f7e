"""Great Expectations suites, written as code, one per contract table.

Each expectation carries `meta["blocking"]`: a blocking failure stops the pipeline before
training; a non-blocking one moves the offending rows to quarantine.
"""

from __future__ import annotations

import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.core import ExpectationSuite

from data_contracts import schema

BLOCKING = {"blocking": True}
QUARANTINE = {"blocking": False}  # always quarantined: with mostly=0 (ALWAYS), so GX's pages show them passed
THRESHOLDED = {"blocking": True, "thresholded": True}  # quarantined up to max_bad_share of the rows
ALWAYS = 0.0


def _required_columns(spec: schema.TableSpec) -> list:
    return [gxe.ExpectColumnToExist(column=c, meta=BLOCKING) for c in spec.required]


def _not_null_ids(spec: schema.TableSpec, frame: pd.DataFrame, mostly: float) -> list:
    return [
        gxe.ExpectColumnValuesToNotBeNull(column=c, mostly=mostly, meta=THRESHOLDED)
        for c, kind in spec.columns.items()
        if c in frame.columns and (c in spec.required or kind == "timestamp")
    ]


def _unique_keys(spec: schema.TableSpec, frame: pd.DataFrame) -> list:
    return [
        gxe.ExpectColumnValuesToBeUnique(column=c, mostly=ALWAYS, meta=QUARANTINE)
        for c in spec.primary_key
        if c in frame.columns
    ]


def _exact_duplicates(frame: pd.DataFrame) -> list:
    return [gxe.ExpectCompoundColumnsToBeUnique(column_list=list(frame.columns), mostly=ALWAYS, meta=QUARANTINE)]


def build_suite(
    spec: schema.TableSpec, frame: pd.DataFrame, max_quantity: int, max_bad_share: float
) -> ExpectationSuite:
    """The suite for one table. Expectations on optional columns are added only when present.
    Thresholded ones carry GX's `mostly` = 1 - max_bad_share, so Data Docs shows them passed while
    their failing rows are few enough to quarantine.

    References between tables (events → items) are checked in `validation.unknown_item_findings`:
    a 92k-id `value_set` makes GX re-serialise the suite for ~20 s per run.
    """
    suite = ExpectationSuite(name=f"lightpersml.{spec.name}")
    expectations = [gxe.ExpectTableRowCountToBeBetween(min_value=1, meta=BLOCKING)]
    expectations += _required_columns(spec)
    present = set(frame.columns)
    if not set(spec.required) <= present:
        for expectation in expectations:
            suite.add_expectation(expectation)
        return suite  # further checks would only repeat "column missing"
    mostly = 1.0 - max_bad_share
    expectations += _not_null_ids(spec, frame, mostly)
    expectations += _unique_keys(spec, frame)
    if spec is schema.EVENTS:
        expectations += _exact_duplicates(frame)
        if schema.QUANTITY in present:
            expectations.append(
                gxe.ExpectColumnValuesToBeBetween(column=schema.QUANTITY, min_value=1, mostly=mostly, meta=THRESHOLDED)
            )
            expectations.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=schema.QUANTITY,
                    max_value=max_quantity,
                    mostly=ALWAYS,
                    meta={**QUARANTINE, "kind": "outlier"},
                )
            )
        if schema.VALUE in present:
            expectations.append(
                gxe.ExpectColumnValuesToBeBetween(column=schema.VALUE, min_value=0, mostly=ALWAYS, meta=QUARANTINE)
            )
        if schema.EVENT_TYPE in present:
            expectations.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=schema.EVENT_TYPE, value_set=list(schema.EVENT_TYPES), mostly=mostly, meta=THRESHOLDED
                )
            )
    if spec is schema.ITEMS and schema.PRICE in present:
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(column=schema.PRICE, min_value=0, mostly=ALWAYS, meta=QUARANTINE)
        )
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite
