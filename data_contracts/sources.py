"""Where a dataset comes from: a bundled source by name, or a folder of contract files."""

from __future__ import annotations

from pathlib import Path

from data_contracts.dataset import Dataset

BUNDLED = ("completejourney", "movielens-100k", "movielens-1m")


def load_source(source: str, cache_dir: Path | None = None) -> Dataset:
    """`completejourney`, `movielens-100k` or `movielens-1m` (downloaded once into `cache_dir`), or
    a folder path."""
    if source == "completejourney":
        from data_contracts.completejourney import load_completejourney

        return load_completejourney()
    if source in BUNDLED:
        from data_contracts.errors import DataContractError
        from data_contracts.movielens import load_movielens

        if cache_dir is None:
            raise DataContractError(f"{source} needs a cache folder to download its ratings into")
        return load_movielens(source, cache_dir)
    from data_contracts.folder import load_folder

    return load_folder(source)
