"""`Dataset`: the contract's tables as pandas frames, plus where each came from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pandas as pd

from data_contracts import schema


@dataclass
class Dataset:
    """One dataset in the contract format. `sources` maps a table name to the file it was read from."""

    name: str
    events: pd.DataFrame
    items: pd.DataFrame
    stores: pd.DataFrame | None = None
    availability: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what an adapter changed, in plain words

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables present, by contract name."""
        found = {name: getattr(self, name) for name in schema.TABLES}
        return {name: frame for name, frame in found.items() if frame is not None}

    def content_hash(self) -> str:
        """SHA-256 (hex, first 16 chars) over every table's content and column names.

        Same rows in the same order give the same hash, whatever file format they came from.
        """
        digest = hashlib.sha256()
        for name, frame in sorted(self.tables().items()):
            digest.update(name.encode())
            digest.update(",".join(map(str, frame.columns)).encode())
            digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        return digest.hexdigest()[:16]
