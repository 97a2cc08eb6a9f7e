"""Cast raw columns to the contract's types and record every value that would not parse.

Parse failures are not fixed or dropped here: they become thresholded `Finding`s that validation
quarantines (a few rows) or turns into a blocking error naming the rows and their raw values.
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
    # Quarantined while its rows are at most `ValidationSettings.max_bad_share` of the table,
    # blocking above (`blocking` is then decided by validation, from the share).
    thresholded: bool = False


def _parse_failures(raw: pd.Series, parsed: pd.Series) -> pd.Series:
    """True where the raw value was present but the parsed value is missing."""
    raw_present = raw.notna()
    if not (pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_datetime64_any_dtype(raw)):
        # Only text can be blank: rendering 1.5M timestamps or numbers as strings cost ~3 s.
        raw_present &= raw.astype("string").str.strip() != ""
    return raw_present & parsed.isna()


# Epoch numbers below each bound are read in that unit (1e11 s is the year 5138).
EPOCH_UNITS = (("s", 1e11), ("ms", 1e14), ("us", 1e17), ("ns", float("inf")))
# A column of numbers all in this range is Excel's serial dates (days since 1899-12-30: 1954–2119).
EXCEL_SERIAL_DAYS = (20_000, 80_000)
THOUSANDS = r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$"  # 1,234 or 12,345.50


def _numbers(raw: pd.Series) -> pd.Series:
    """Numbers from text, reading thousands separators (1,234.50) as a spreadsheet writes them."""
    if pd.api.types.is_numeric_dtype(raw):
        return raw
    text = raw.astype("string").str.strip()
    text = text.mask(text.str.match(THOUSANDS, na=False), text.str.replace(",", "", regex=False))
    return pd.to_numeric(text, errors="coerce")


def _timestamps(raw: pd.Series) -> pd.Series:
    """UTC-naive timestamps from datetimes, epoch numbers (unit from the magnitude), Excel serial
    days, or text in any common format (offsets converted to UTC)."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        return raw.dt.tz_convert("UTC").dt.tz_localize(None) if raw.dt.tz is not None else raw
    numbers = raw if pd.api.types.is_numeric_dtype(raw) else None
    if numbers is None:
        text = raw.astype("string").str.strip()
        if pd.to_numeric(text.dropna().head(100), errors="coerce").notna().any():  # only then parse it all as numbers
            as_number = pd.to_numeric(text, errors="coerce")
            if as_number.notna().sum() >= 0.99 * text.notna().sum():
                numbers = as_number  # a column of numbers written as text
    if numbers is not None:
        present = numbers.dropna()
        if len(present) and present.between(*EXCEL_SERIAL_DAYS).all():
            return pd.Timestamp("1899-12-30") + pd.to_timedelta(numbers, unit="D")
        unit = next(u for u, top in EPOCH_UNITS if numbers.abs().max() < top)
        return pd.to_datetime(numbers, unit=unit, errors="coerce")
    return pd.to_datetime(raw, errors="coerce", format="mixed", utc=True).dt.tz_localize(None)


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


def conform_table(
    frame: pd.DataFrame, spec: schema.TableSpec, event_types: dict[str, str] | None = None
) -> tuple[pd.DataFrame, list[Finding]]:
    """Return the table with contract types (ids as strings, UTC-naive timestamps, numbers)
    and one thresholded `Finding` per column holding values of the wrong type. Event types are
    lower-cased and mapped through `schema.EVENT_TYPE_ALIASES`, then `event_types`.

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
            parsed = _timestamps(raw)
        elif kind in ("int", "float"):
            parsed = _numbers(raw)
            if kind == "int":
                whole = parsed.isna() | ((parsed == parsed.round()) & (parsed.abs() < 2**63))  # fits an int64
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
                    thresholded=True,
                    unexpected_count=len(positions),
                    row_indices=positions,
                    detail=f"expected {kind} values",
                )
            )
        out[column] = parsed
    if spec is schema.EVENTS and schema.EVENT_TYPE in out.columns:
        mapping = schema.EVENT_TYPE_ALIASES | {k.strip().lower(): v for k, v in (event_types or {}).items()}
        types = out[schema.EVENT_TYPE].fillna(schema.DEFAULT_EVENT_TYPE).str.strip().str.lower()
        out[schema.EVENT_TYPE] = types.replace(mapping)
    return out, findings
