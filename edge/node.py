"""An edge node's state folder and its bundle swaps.

    <node dir>/bundles/<bundle id>/   verified bundles (the current one and the one before)
    <node dir>/active.json            {"current": id, "previous": id | null}, replaced atomically
    <node dir>/events.db              the durable event log (edge.events)
    <node dir>/clients.json           client keys, hashed (edge.clients)
    <node dir>/stock.db               availability pushed between bundles (edge.stock)

Installing a bundle: unpack into a staging folder (an upload is streamed to disk first, and its
unpacked size is capped as it is read), verify it against the node's public key, load it and
warm its ONNX Runtime session, and only then swap it in (one reference assignment, so in-flight
requests finish on the old engine). Any failure leaves the node serving what it served before,
and no staging file outlives it (leftovers of a killed process are removed at start-up).

Nothing is replayed: the new engine reads each shopper's events from the log when that shopper is
next asked for (`Engine` with `source`), so a swap or restart costs the same whatever the log holds.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from edge import bundle
from edge.engine import MAX_SHOPPERS, Engine, Event
from edge.events import EventLog
from edge.stock import LiveStock, StockApplied

KEEP_BUNDLES = 3  # current, previous, and one more for a second rollback
MAX_UPLOAD_BYTES = 512 * 2**20  # an uploaded .tar.gz
MAX_UNPACKED_BYTES = 2 * 2**30  # what it may unpack to (a small .tar.gz can expand to hundreds of GB)
MAX_ARCHIVE_MEMBERS = 64
UPLOAD_PREFIX, UNPACK_PREFIX, STAGING_PREFIX = ".upload-", ".unpack-", ".staging-"


class Node:
    """A node's bundles, event log and the engine it serves (see the module docstring)."""

    def __init__(
        self,
        folder: Path,
        public_key,
        runtime: str = "onnx",
        personal_reasons: bool = True,
        max_shoppers: int = MAX_SHOPPERS,
        discovery_slots: int = 0,
    ):
        """personal_reasons: answers may word reasons with the shopper's purchases and cart.
        max_shoppers: shoppers whose live state is held in memory (the rest are read back from the log).
        discovery_slots: ranked slots of each answer kept for items new to the shopper (`Engine`)."""
        self.folder, self.runtime = Path(folder), runtime
        self.personal_reasons, self.max_shoppers = personal_reasons, max_shoppers
        self.discovery_slots = discovery_slots
        self.bundles = self.folder / "bundles"
        self.bundles.mkdir(parents=True, exist_ok=True)
        self.public_key = public_key
        self.events = EventLog(self.folder / "events.db")
        self.stock = LiveStock(self.folder / "stock.db")
        self.engine: Engine | None = None
        self.current: str | None = None
        self.previous: str | None = None
        self._swap = threading.Lock()  # one install or rollback at a time

    # ---- start-up ------------------------------------------------------------------------
    def start(self, initial_bundle: Path | None = None) -> list[str]:
        """Serve `initial_bundle` (installed first; raises BundleError if refused), else the bundle
        that was active last time, else the one before it, else none until one is uploaded.
        Returns why the bundles it passed over could not be served."""
        self._remove_leftovers()
        _trim_periodically()
        if initial_bundle is not None:
            self.install_folder(Path(initial_bundle))
            return []
        active, problems = self._read_active(), []
        for bundle_id in dict.fromkeys(b for b in (active.get("current"), active.get("previous")) if b):
            try:
                self.current = bundle_id
                self.previous = active.get("previous") if bundle_id == active.get("current") else None
                self._activate(bundle_id)
                return problems
            except bundle.BundleError as error:
                problems.append(str(error))
        self.current = self.previous = None
        return problems

    # ---- events --------------------------------------------------------------------------
    def record(self, events: list[Event], event_ids: list[str | None]) -> int:
        """Log durably, then apply to the serving engine; returns how many were new. A swap needs
        no lock here: a new engine reads shoppers from the log, which already holds these events."""
        logged: list[Event] = []

        def apply(seqs: list[int | None]) -> None:  # in log order, once synced (EventLog.append)
            logged.extend(
                Event(e.user_id, e.item_id, e.event_type, e.timestamp, e.store_id, e.basket_id, seq)
                for e, seq in zip(events, seqs)
                if seq is not None
            )
            engine = self.engine
            if engine is not None:
                engine.apply(logged)

        self.events.append(events, event_ids, then=apply)
        return len(logged)

    def unusable_events(self) -> int:
        """Logged events that are never applied (see `EventLog.unusable`, `Engine.unusable`)."""
        return self.events.unusable() + (len(self.engine.unusable) if self.engine is not None else 0)

    # ---- stock ---------------------------------------------------------------------------
    def push_stock(self, changes: dict[tuple[str, str], bool]) -> StockApplied:
        """Mark (store id, item id) pairs in or out of stock: written to disk, then served.
        Pairs the served bundle does not know are reported and dropped. Raises BundleError
        without a bundle (nothing to check the ids against)."""
        with self._swap:
            engine = self.engine
            if engine is None:
                raise bundle.BundleError("no bundle loaded yet: upload one to /admin/bundle")
            stores = {s for s, _ in changes if s not in engine.store_index}
            known = {
                key: value
                for key, value in changes.items()
                if key[0] in engine.store_index and engine.item_index.get(key[1]) is not None
            }
            self.stock.push(known, max(time.time(), engine.cutoff_at + 1e-3))
            engine.restock(known)
        return StockApplied(len(known), sorted(stores)[:20], ignored=len(changes) - len(known))

    # ---- bundles -------------------------------------------------------------------------
    @contextlib.contextmanager
    def upload_file(self) -> Iterator[Path]:
        """A path in the node folder for an upload in progress, removed afterwards whatever happens."""
        descriptor, name = tempfile.mkstemp(dir=self.folder, prefix=UPLOAD_PREFIX, suffix=".tar.gz")
        os.close(descriptor)
        try:
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    def install_archive(self, archive: Path) -> str:
        """Install a bundle uploaded as a .tar.gz (or .tar) of its files; returns the bundle id."""
        with tempfile.TemporaryDirectory(dir=self.folder, prefix=UNPACK_PREFIX) as staging:
            with open(archive, "rb") as raw:
                _unpack(raw, Path(staging))
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
            staging = Path(tempfile.mkdtemp(dir=self.bundles, prefix=STAGING_PREFIX))
            try:
                for name in (*manifest["files"], bundle.MANIFEST, bundle.SIGNATURE):
                    shutil.copyfile(Path(source) / name, staging / name)
                staging.rename(target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
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
        with self._swap:
            try:
                engine = Engine.load(
                    self.bundles / bundle_id,
                    self.public_key,
                    self.runtime,
                    source=self.events.for_shopper,
                    max_shoppers=self.max_shoppers,
                    personal_reasons=self.personal_reasons,
                    discovery_slots=self.discovery_slots,
                )
            except bundle.BundleError:
                raise
            except Exception as error:  # signed, but this node cannot serve it
                raise bundle.BundleError(
                    f"{bundle_id} verified but could not be loaded: {type(error).__name__}: {error}"
                ) from error
            live = self.stock.newer_than(engine.cutoff_at)
            if live:
                engine.restock(live)
            if self.current != bundle_id:
                self.previous = self.current
            self.engine, self.current = engine, bundle_id
            self._write_active()
            del engine
            # The bundle's objects live as long as it is served: keep them out of the collector's sweeps,
            # whose pauses would otherwise show up as latency spikes (unfreeze first: the old bundle goes),
            # and hand the old bundle's memory back to the system.
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            _release_free_memory()

    def _remove_leftovers(self) -> None:
        """Uploads and staging folders of a process that was killed mid-install."""
        for leftover in [
            *self.folder.glob(f"{UPLOAD_PREFIX}*"),
            *self.folder.glob(f"{UNPACK_PREFIX}*"),
            *self.bundles.glob(f"{STAGING_PREFIX}*"),
        ]:
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    @staticmethod
    def _bundle_id(folder: Path) -> str:
        manifest = json.loads((folder / bundle.MANIFEST).read_text())
        digest = hashlib.sha256((folder / bundle.MANIFEST).read_bytes()).hexdigest()[:12]
        return f"v{manifest.get('model_version', 'x')}-{digest}"

    def _read_active(self) -> dict:
        path = self.folder / "active.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def _write_active(self) -> None:
        tmp = self.folder / "active.json.tmp"
        tmp.write_text(json.dumps({"current": self.current, "previous": self.previous}))
        os.replace(tmp, self.folder / "active.json")

    def _prune(self) -> None:
        keep = {self.current, self.previous}
        others = sorted(
            (p for p in self.bundles.iterdir() if p.is_dir() and p.name not in keep and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in others[KEEP_BUNDLES - len(keep) :]:
            shutil.rmtree(old, ignore_errors=True)


class _Capped(io.RawIOBase):
    """A reader that fails once more than `cap` bytes came out of `raw` (a decompression bomb)."""

    def __init__(self, raw, cap: int):
        self.raw, self.cap, self.total = raw, cap, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.raw.readinto(buffer)
        self.total += count
        if self.total > self.cap:
            raise bundle.BundleError(f"upload unpacks to more than {self.cap} bytes")
        return count


def _unpack(raw, folder: Path) -> None:
    """Extract a .tar.gz or .tar read from `raw` into `folder`: regular files and folders only, at
    most MAX_ARCHIVE_MEMBERS of them and MAX_UNPACKED_BYTES in all (checked as it is read)."""
    compressed = raw.read(2) == b"\x1f\x8b"
    raw.seek(0)
    stream = _Capped(gzip.GzipFile(fileobj=raw) if compressed else raw, MAX_UNPACKED_BYTES)
    declared = 0
    try:
        with tarfile.open(fileobj=io.BufferedReader(stream), mode="r|") as archive:
            for count, member in enumerate(archive, start=1):
                declared += member.size
                if count > MAX_ARCHIVE_MEMBERS:
                    raise bundle.BundleError(f"upload holds more than {MAX_ARCHIVE_MEMBERS} files")
                if not (member.isfile() or member.isdir()):
                    raise bundle.BundleError(f"upload holds {member.name!r}, which is not a regular file")
                if declared > MAX_UNPACKED_BYTES:
                    raise bundle.BundleError(f"upload unpacks to more than {MAX_UNPACKED_BYTES} bytes")
                archive.extract(member, folder, filter="data")  # refuses paths outside `folder`
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise bundle.BundleError(f"upload is not a readable .tar.gz bundle: {error}") from None


TRIM_EVERY_S = 30.0  # how often a serving process hands freed heap pages back to the system


@functools.cache  # one trimming thread per process, however many nodes it starts
def _trim_periodically() -> None:
    """Start a thread that returns freed heap pages every TRIM_EVERY_S. Answers and purchases
    allocate and free many small arrays, and glibc keeps the freed pages resident (measured on
    Complete Journey: 40 KB of RSS per shopper with a purchase, 12 KB once trimmed)."""

    def trim() -> None:
        while True:
            time.sleep(TRIM_EVERY_S)
            _release_free_memory()

    threading.Thread(target=trim, name="malloc-trim", daemon=True).start()


def _release_free_memory() -> None:
    """Return freed heap pages to the system (glibc keeps them otherwise, and RSS ratchets up)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
