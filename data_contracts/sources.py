"""Where a dataset comes from: a bundled source by name, or a folder of contract files."""

from __future__ import annotations

from pathlib import Path

from data_contracts.dataset import Dataset

BUNDLED = ("completejourney", "movielens-100k")


def load_source(source: str, cache_dir: Path | None = None) -> Dataset:
    """`completejourney`, `movielens-100k` (downloaded once into `cache_dir`) or a folder path."""
    if source == "completejourney":
        from data_contracts.completejourney import load_completejourney

        return load_completejourney()
    if source == "movielens-100k":
        from data_contracts.errors import DataContractError
        from data_contracts.movielens import load_movielens_100k

        if cache_dir is None:
            raise DataContractError("movielens-100k needs a cache folder to download its ratings into")
        return load_movielens_100k(cache_dir)
    from data_contracts.folder import load_folder

    return load_folder(source)
