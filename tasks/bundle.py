"""Prefect tasks over `tracking.bundles` (the logic lives there)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tracking.bundles import registry_bundle


@task(name="build bundle", cache_policy=NO_CACHE, task_run_name="build bundle of {name}@{alias}")
def bundle_task(folder: Path, key_path: Path, name: str, alias: str = "edge") -> dict:
    return registry_bundle(folder, key_path, name, alias)
