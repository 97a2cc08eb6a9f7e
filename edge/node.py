"""An edge node's state folder and its bundle swaps.

    <node dir>/bundles/<bundle id>/   verified bundles (the current one and the one before)
    <node dir>/active.json            {"current": id, "previous": id | null}, replaced atomically
    <node dir>/events.db              the durable event log (edge.events)

Installing a bundle: unpack into a staging folder, verify it against the node's public key, load
it and warm its ONNX Runtime session, replay the event log into it, and only then swap it in (one
reference assignment, so in-flight requests finish on the old engine). Any failure leaves the
node serving what it served before.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import threading
from pathlib import Path

from edge import bundle
from edge.engine import Engine, Event
from edge.events import EventLog

KEEP_BUNDLES = 3  # current, previous, and one more for a second rollback


class Node:
    """A node's bundles, event log and the engine it serves (see the module docstring)."""

    def __init__(self, folder: Path, public_key, runtime: str = "onnx"):
        self.folder, self.runtime = Path(folder), runtime
        self.bundles = self.folder / "bundles"
        self.bundles.mkdir(parents=True, exist_ok=True)
        self.public_key = public_key
        self.events = EventLog(self.folder / "events.db")
        self.engine: Engine | None = None
        self.current: str | None = None
        self.previous: str | None = None
        self._swap = threading.Lock()  # events are logged and applied under it, so a swap misses none

    # ---- start-up ------------------------------------------------------------------------
    def start(self, initial_bundle: Path | None = None) -> None:
        """Serve `initial_bundle` (installed first), else the bundle that was active last time."""
        if initial_bundle is not None:
            self.install_folder(Path(initial_bundle))
            return
        active = self._read_active()
        if active.get("current"):
            self.current, self.previous = active["current"], active.get("previous")
            self._activate(self.current)

    # ---- events --------------------------------------------------------------------------
    def record(self, events: list[Event], event_ids: list[str | None]) -> int:
        """Log durably, then apply to the serving engine; returns how many were new."""
        with self._swap:
            new = self.events.append(events, event_ids)
            if self.engine is not None:
                self.engine.apply(events)
            return new

    # ---- bundles -------------------------------------------------------------------------
    def install_archive(self, data: bytes) -> str:
        """Install a bundle uploaded as a .tar.gz of its files; returns the bundle id."""
        with tempfile.TemporaryDirectory(dir=self.folder) as staging:
            try:
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
                    archive.extractall(staging, filter="data")  # refuses links and paths outside staging
            except (tarfile.TarError, OSError, EOFError) as error:
                raise bundle.BundleError(f"upload is not a readable .tar.gz bundle: {error}") from None
            root = Path(staging)
            entries = list(root.iterdir())
            if len(entries) == 1 and entries[0].is_dir():  # archived as one top-level folder
                root = entries[0]
            return self.install_folder(root)

    def install_folder(self, source: Path) -> str:
        manifest = bundle.verify_bundle(source, self.public_key)
        bundle_id = self._bundle_id(source)
        target = self.bundles / bundle_id
        if not target.exists():
            staging = Path(tempfile.mkdtemp(dir=self.bundles, prefix=".staging-"))
            for name in (*manifest["files"], bundle.MANIFEST, bundle.SIGNATURE):
                shutil.copyfile(Path(source) / name, staging / name)
            staging.rename(target)
        self._activate(bundle_id)
        self._prune()
        return bundle_id

    def rollback(self) -> str:
        """Serve the previous bundle again; returns its id."""
        if not self.previous or not (self.bundles / self.previous).exists():
            raise bundle.BundleError("no previous bundle to roll back to")
        self._activate(self.previous)
        return self.current

    def _activate(self, bundle_id: str) -> None:
        engine = self._load(bundle_id)  # verify + load + warm: the slow part, outside the lock
        with self._swap:
            engine.apply(self.events.events())
            if self.current != bundle_id:
                self.previous = self.current
            self.engine, self.current = engine, bundle_id
            self._write_active()
        # The bundle's objects live as long as it is served: keep them out of the collector's sweeps,
        # whose pauses would otherwise show up as latency spikes (unfreeze first: the old bundle goes).
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    def _load(self, bundle_id: str) -> Engine:
        return Engine.load(self.bundles / bundle_id, self.public_key, self.runtime)

    @staticmethod
    def _bundle_id(folder: Path) -> str:
        manifest = json.loads((folder / bundle.MANIFEST).read_text())
        digest = hashlib.sha256((folder / bundle.MANIFEST).read_bytes()).hexdigest()[:12]
        return f"v{manifest.get('model_version', 'x')}-{digest}"

    def _read_active(self) -> dict:
        path = self.folder / "active.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _write_active(self) -> None:
        tmp = self.folder / "active.json.tmp"
        tmp.write_text(json.dumps({"current": self.current, "previous": self.previous}))
        os.replace(tmp, self.folder / "active.json")

    def _prune(self) -> None:
        keep = {self.current, self.previous}
        others = sorted((p for p in self.bundles.iterdir() if p.is_dir() and p.name not in keep and not p.name.startswith(".")),
                        key=lambda p: p.stat().st_mtime, reverse=True)
        for old in others[KEEP_BUNDLES - len(keep):]:
            shutil.rmtree(old, ignore_errors=True)
