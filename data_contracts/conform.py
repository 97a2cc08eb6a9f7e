"""Cast raw columns to the contract's types and record every value that would not parse.

Parse failures are not fixed or dropped here: they become `Finding`s that validation turns into a
blocking error naming the rows and their raw values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from data_contracts import schema


@dataclass
class Finding:
    """One failed check on one column: what failed, how many rows, and which."""

    table: str
    column: str | None
    check: str
    blocking: bool
    unexpected_count: int | None  # None for table-level checks (missing column, empty table)
    row_indices: list[int] = field(default_factory=list)  # positions in the table as read
    examples: list[dict] = field(default_factory=list)
    detail: str = ""


def _parse_failures(raw: pd.Series, parsed: pd.Series) -> pd.Series:
    """True where the raw value was present but the parsed value is missing."""
    raw_present = raw.notna()
    if not (pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_datetime64_any_dtype(raw)):
        # Only text can be blank: rendering 1.5M timestamps or numbers as strings cost ~3 s.
        raw_present &= raw.astype("string").str.strip() != ""
    return raw_present & parsed.isna()


# Epoch numbers below each bound are read in that unit (1e11 s is the year 5138).
EPOCH_UNITS = (("s", 1e11), ("ms", 1e14), ("us", 1e17), ("ns", float("inf")))


def normalise_ids(raw: pd.Series) -> pd.Series:
    """Ids as stripped strings; empty → missing. Whole floats (ints that Parquet or pandas turned
    into floats, "12.0") become "12" so they match the same id written as text; other floats stay
    as written and will not match an integer id."""
    if pd.api.types.is_float_dtype(raw):
        whole = raw.notna() & (raw == raw.round())
        text = raw.astype("string")
        return text.mask(whole, raw.where(whole).astype("Int64").astype("string"))
    parsed = raw.astype("string").str.strip()
    return parsed.mask(parsed == "")


def conform_table(frame: pd.DataFrame, spec: schema.TableSpec) -> tuple[pd.DataFrame, list[Finding]]:
    """Return the table with contract types (ids as strings, UTC-naive timestamps, numbers)
    and one blocking `Finding` per column holding values of the wrong type.

    Columns outside the contract are kept unchanged (e.g. user demographics).
    """
    out = frame.copy()
    findings = []
    for column, kind in spec.columns.items():
        if column not in out.columns:
            continue
        raw = out[column]
        if kind == "id":
            parsed = normalise_ids(raw)
        elif kind == "timestamp":
            if pd.api.types.is_datetime64_any_dtype(raw):
                parsed = raw.dt.tz_convert("UTC").dt.tz_localize(None) if raw.dt.tz is not None else raw
            elif pd.api.types.is_numeric_dtype(raw):  # epoch time; the unit follows from the magnitude
                unit = next(u for u, top in EPOCH_UNITS if raw.abs().max() < top)
                parsed = pd.to_datetime(raw, unit=unit, errors="coerce")
            else:
                parsed = pd.to_datetime(raw, errors="coerce", format="mixed", utc=True).dt.tz_localize(None)
        elif kind in ("int", "float"):
            parsed = pd.to_numeric(raw, errors="coerce")
            if kind == "int":
                whole = parsed.isna() | (parsed == parsed.round())
                parsed = parsed.where(whole).astype("Int64") if whole.all() else parsed.where(whole)
        elif kind == "bool":
            text = raw.astype("string").str.strip().str.lower()
            parsed = text.map({"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False})
            parsed = parsed.astype("boolean")
        else:
            parsed = raw.astype("string")
        failed = _parse_failures(raw, parsed) if kind != "str" else pd.Series(False, index=raw.index)
        if failed.any():
            positions = [int(i) for i in failed.to_numpy().nonzero()[0]]
            findings.append(
                Finding(
                    table=spec.name,
                    column=column,
                    check=f"values_parse_as_{kind}",
                    blocking=True,
                    unexpected_count=len(positions),
                    row_indices=positions,
                    detail=f"expected {kind} values",
                )
            )
        out[column] = parsed
    if spec is schema.EVENTS and schema.EVENT_TYPE in out.columns:
        out[schema.EVENT_TYPE] = out[schema.EVENT_TYPE].fillna(schema.DEFAULT_EVENT_TYPE).str.lower()
    return out, findings
