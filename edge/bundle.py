"""Edge bundles: the signed directory an edge node serves from, and its keys.

A bundle holds the files below. `manifest.json` lists every file with its SHA-256 together with
the model version, data hash, metrics and creation time; `manifest.sig` is the Ed25519 signature
of the manifest's exact bytes (base64). A node verifies both against its configured public key
before it loads anything, and refuses a bundle with a missing, changed or unlisted file.

Keys are PEM files made by `lightpersml keys init`: the private key stays with whoever builds
bundles (the training machine), the public key is copied to every node.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT_VERSION = 1
MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
MODEL = "model.onnx"  # the ranker (int8 ONNX for the edge tier); baselines have none
CANDIDATES = "candidates.npz"  # candidate generator state: repurchase statistics, TIFU-KNN vectors
CATALOG = "catalog.npz"  # ids, global popularity, per-store popularity and availability
HISTORIES = "histories.npz"  # every known shopper's baskets, for real-time updates
ITEMS = "items.npz"  # item table: item_id (+ title, category, department, brand when known; utf-8 bytes)
CO_PURCHASE = "co_purchase.npz"  # per item, the items most often bought with it
SERVING = "serving.json"  # the tier's parameters: candidate settings, scorer (models.scorers), exclude_seen
FILES = (CANDIDATES, CATALOG, HISTORIES, ITEMS, CO_PURCHASE, SERVING)
LIGHTGBM_MODEL = "model.lgb.txt"  # optional: a boosted ranker for LightGBM itself (the cloud reference, never a node)
OPTIONAL_FILES = (MODEL, LIGHTGBM_MODEL)
PRIVATE_KEY, PUBLIC_KEY = "bundle-signing.key", "bundle-signing.pub"


class BundleError(Exception):
    """A bundle that must not be served; the message says which file or check failed."""


def init_keys(folder: Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair into `folder` (private key readable by the owner only)."""
    folder = Path(folder)
    private_path, public_path = folder / PRIVATE_KEY, folder / PUBLIC_KEY
    if private_path.exists() and not overwrite:
        raise FileExistsError(f"{private_path} exists; bundles signed with it would stop verifying if it were replaced")
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as f:
        f.write(private_pem)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{path}: not an Ed25519 public key")
    return key


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sign_bundle(folder: Path, key: Ed25519PrivateKey, info: dict) -> dict:
    """Write manifest.json (`info` + creation time + every file's SHA-256) and its signature."""
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise BundleError(f"{folder}: cannot sign, missing {', '.join(missing)}")
    names = [*FILES, *(name for name in OPTIONAL_FILES if (folder / name).is_file())]
    manifest = {
        "format": FORMAT_VERSION,
        **info,
        "created_at": datetime.now(UTC).isoformat(),
        "files": {name: sha256(folder / name) for name in sorted(names)},
    }
    body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
    (folder / MANIFEST).write_bytes(body)
    (folder / SIGNATURE).write_text(base64.b64encode(key.sign(body)).decode())
    return manifest


def verify_bundle(folder: Path, public_key: Ed25519PublicKey) -> dict:
    """The bundle's manifest, after checking its signature and every file; raises BundleError."""
    folder = Path(folder)
    for name in (MANIFEST, SIGNATURE):
        if not (folder / name).is_file():
            raise BundleError(f"{folder}: no {name}")
    body = (folder / MANIFEST).read_bytes()
    try:
        public_key.verify(base64.b64decode((folder / SIGNATURE).read_text(), validate=True), body)
    except (InvalidSignature, ValueError):
        raise BundleError(
            f"{folder}: {SIGNATURE} does not verify {MANIFEST} against this node's public key "
            "(edited manifest, or signed with another key)"
        ) from None
    manifest = json.loads(body)
    if manifest.get("format") != FORMAT_VERSION:
        raise BundleError(f"{folder}: bundle format {manifest.get('format')!r}, this node reads {FORMAT_VERSION}")
    listed = manifest.get("files", {})
    for name in FILES:
        if name not in listed:
            raise BundleError(f"{folder}: {MANIFEST} does not list {name}")
    for name in listed:
        if name not in FILES + OPTIONAL_FILES:
            raise BundleError(f"{folder}: {MANIFEST} lists {name!r}, which is not a bundle file")
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{folder}: {name} is missing")
        actual = sha256(path)
        if actual != listed[name]:
            raise BundleError(
                f"{folder}: {name} does not match its SHA-256 in the manifest "
                f"(manifest {listed[name][:12]}…, file {actual[:12]}…)"
            )
    unlisted = sorted({p.name for p in folder.iterdir()} - set(listed) - {MANIFEST, SIGNATURE})
    if unlisted:
        raise BundleError(f"{folder}: files not in the manifest: {', '.join(unlisted)}")
    return manifest


def archive_bundle(folder: Path) -> bytes:
    """The bundle's files as a .tar.gz (what `POST /admin/bundle` takes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in (*FILES, *OPTIONAL_FILES, MANIFEST, SIGNATURE):
            if (Path(folder) / name).is_file():
                tar.add(Path(folder) / name, arcname=name)
    return buffer.getvalue()
