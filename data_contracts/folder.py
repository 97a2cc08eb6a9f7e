"""Read a folder of contract tables (`events.csv`, `items.parquet`, ...) — the user's own data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_contracts import schema
from data_contracts.dataset import Dataset
from data_contracts.errors import DataContractError

SUFFIXES = (".parquet", ".csv")
OTHER_DELIMITERS = (";", "\t", "|")


def find_table_file(folder: Path, table: str) -> Path | None:
    """`<table>.parquet` or `<table>.csv` in `folder`; an error if both exist."""
    found = [folder / f"{table}{suffix}" for suffix in SUFFIXES if (folder / f"{table}{suffix}").exists()]
    if len(found) > 1:
        raise DataContractError(f"{folder}: both {found[0].name} and {found[1].name} exist; keep one.")
    return found[0] if found else None


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a comma-separated UTF-8 file with every column as text; types are cast later."""
    if path.stat().st_size == 0:
        raise DataContractError(f"{path}: the file is empty (0 bytes); expected a header row and data.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataContractError(
            f"{path}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at line {line}, offset {err.start}); "
            "save the file as UTF-8."
        ) from None
    header = text.splitlines()[0] if text.strip() else ""
    if "," not in header:
        for delimiter in OTHER_DELIMITERS:
            if delimiter in header:
                raise DataContractError(
                    f"{path}: the header {header[:80]!r} is separated by {delimiter!r}; "
                    "LightPersML reads comma-separated CSV files."
                )
    try:
        return pd.read_csv(path, dtype="string", keep_default_na=True, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataContractError(f"{path}: cannot be parsed as CSV ({str(err).strip()}).") from None


def read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return _read_csv(path)
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise DataContractError(f"{path}: cannot be read as Parquet ({err}).") from None


def load_folder(path: str | Path) -> Dataset:
    """Load every contract table present in `path`; `events` and `items` are required."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataContractError(
            f"{folder}: not a folder. Expected a folder with events.csv/.parquet and items.csv/.parquet."
        )
    frames, sources = {}, {}
    for table in schema.TABLES:
        file = find_table_file(folder, table)
        if file is None:
            if table in schema.REQUIRED_TABLES:
                raise DataContractError(f"{folder}: no {table}.parquet or {table}.csv (required table).")
            continue
        frames[table] = read_table(file)
        sources[table] = str(file)
    return Dataset(name=folder.name, sources=sources, **frames)
