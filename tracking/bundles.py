"""Bundle: sign the edge bundle of a registered version (format: edge.bundle).

The training pipeline lays out every registered version's bundle (`models.tier_bundle.lay_out`)
and logs it, unsigned, as the version run's `deploy/` artifacts; this step downloads those files
and signs them with the deployer's key and the version's registry details.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from edge import bundle
from models.tier_bundle import sign

log = logging.getLogger(__name__)


def resolve_version(name: str, alias: str = "edge", version: str | None = None):
    """The version of registered model `name` behind `alias` (or numbered `version`); LookupError if none."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        if version is not None:
            return client.get_model_version(name, str(version))
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        wanted = f"version {version}" if version is not None else f"a version with alias {alias!r} (promote one first)"
        raise LookupError(f"{name} has no {wanted}") from None


def registry_bundle(folder: Path, key_path: Path, name: str, alias: str = "edge", version: str | None = None) -> dict:
    """Sign the bundle of the version of registered model `name` behind `alias` (or of `version`)
    into `folder`; returns its manifest."""
    import mlflow
    from tracking.registry import version_metrics

    found = resolve_version(name, alias, version)
    serving = found.tags.get("serving_artifacts")
    if not serving:
        raise LookupError(f"version {found.version} of {name} has no bundle files (tag serving_artifacts)")
    key = bundle.load_private_key(key_path)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(serving, dst_path=tmp))
        Path(folder).mkdir(parents=True, exist_ok=True)
        for name_ in (*bundle.FILES, *bundle.OPTIONAL_FILES):
            if (local / name_).is_file():
                shutil.copyfile(local / name_, Path(folder) / name_)
    manifest = sign(
        folder,
        key,
        {
            "registered_model": name,
            "model_version": str(found.version),
            "aliases": list(found.aliases),
            "run_id": found.run_id,
            "metrics": version_metrics(found),
        },
    )
    log.info("bundle of %s version %s (%s) in %s", name, found.version, manifest["tier"], folder)
    return manifest
