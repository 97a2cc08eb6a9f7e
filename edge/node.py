"""An edge node's state folder and its bundle swaps.

    <node dir>/bundles/<bundle id>/   verified bundles (the current one and the one before)
    <node dir>/active.json            {"current": id, "previous": id | null}, replaced atomically
    <node dir>/events.db              the durable event log (edge.events)
    <node dir>/clients.json           client keys, hashed (edge.clients)
    <node dir>/stock.db               availability pushed between bundles (edge.stock)
    <node dir>/experiments.json       the running experiment and the ones before (edge.experiment)
    <node dir>/exposures.db           what each shopper of an experiment was shown (edge.experiment)

Installing a bundle: unpack into a staging folder (an upload is streamed to disk first, and its
unpacked size is capped as it is read), verify it against the node's public key, load it and
warm its ONNX Runtime session, and only then swap it in (one reference assignment, so in-flight
requests finish on the old engine). Any failure leaves the node serving what it served before,
and no staging file outlives it (leftovers of a killed process are removed at start-up).

During an experiment the node also serves the treatment bundle, each shopper from their arm's
engine; events and stock reach both engines, and bundle swaps wait until the experiment stops.

Nothing is replayed: the new engine reads each shopper's events from the log when that shopper is
next asked for (`Engine` with `source`), so a swap or restart costs the same whatever the log holds.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
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
from dataclasses import dataclass
from pathlib import Path

from edge import bundle
from edge.engine import MAX_SHOPPERS, Engine, Event
from edge.events import EventLog
from edge.experiment import CONTROL, Experiment, ExperimentBook, ExperimentError, ExposureLog, new_salt
from edge.stock import LiveStock, StockApplied

KEEP_BUNDLES = 3  # current, previous, and one more for a second rollback
MAX_UPLOAD_BYTES = 512 * 2**20  # an uploaded .tar.gz
MAX_UNPACKED_BYTES = 2 * 2**30  # what it may unpack to (a small .tar.gz can expand to hundreds of GB)
MAX_ARCHIVE_MEMBERS = 64
UPLOAD_PREFIX, UNPACK_PREFIX, STAGING_PREFIX = ".upload-", ".unpack-", ".staging-"


@dataclass(frozen=True)
class Trial:
    """A running experiment and the engine of its treatment (the control's is `Node.engine`)."""

    experiment: Experiment
    treatment: Engine


@dataclass(frozen=True)
class Serving:
    """The engine that answers one shopper, and the experiment arm it stands for (None: none runs)."""

    engine: Engine
    bundle_id: str
    experiment: Experiment | None = None
    arm: str | None = None
    log_all: bool = False  # the node logs every answer (`serve --log-exposures`)

    @property
    def logged(self) -> bool:
        """The answer is logged as an exposure: always during an experiment."""
        return self.experiment is not None or self.log_all


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
        log_exposures: bool = False,
    ):
        """personal_reasons: answers may word reasons with the shopper's purchases and cart.
        max_shoppers: shoppers whose live state is held in memory (the rest are read back from the log).
        discovery_slots: ranked slots of each answer kept for items new to the shopper (`Engine`).
        log_exposures: log every answer as an exposure (arm "served"), not only an experiment's."""
        self.folder, self.runtime = Path(folder), runtime
        self.personal_reasons, self.max_shoppers = personal_reasons, max_shoppers
        self.discovery_slots, self.log_exposures = discovery_slots, log_exposures
        self.bundles = self.folder / "bundles"
        self.bundles.mkdir(parents=True, exist_ok=True)
        self.public_key = public_key
        self.events = EventLog(self.folder / "events.db")
        self.stock = LiveStock(self.folder / "stock.db")
        self.experiments = ExperimentBook(self.folder / "experiments.json")
        self.exposures = ExposureLog(self.folder / "exposures.db")
        self.trial: Trial | None = None  # replaced whole, so a request reads one consistent pair
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
        problems = [self.experiments.problem] if self.experiments.problem else []
        if initial_bundle is not None:
            self.install_folder(Path(initial_bundle))
            return problems + self._resume_experiment()
        active = self._read_active()
        for bundle_id in dict.fromkeys(b for b in (active.get("current"), active.get("previous")) if b):
            try:
                self.current = bundle_id
                self.previous = active.get("previous") if bundle_id == active.get("current") else None
                self._activate(bundle_id)
                return problems + self._resume_experiment()
            except bundle.BundleError as error:
                problems.append(str(error))
        self.current = self.previous = None
        return problems + self._resume_experiment()

    def _resume_experiment(self) -> list[str]:
        """Serve the experiment that ran when the node stopped, or stop it and say why it cannot run."""
        running = self.experiments.running
        if running is None:
            return []
        try:
            if running.control != self.current:
                raise bundle.BundleError(
                    f"the node serves {self.current}, not the experiment's control {running.control}"
                )
            with self._swap:
                self.trial = Trial(running, self._treatment_engine(running.treatment))
            return []
        except bundle.BundleError as error:
            self.experiments.stop(f"could not resume at start-up: {error}")
            return [f"experiment {running.name!r} stopped: {error}"]

    # ---- events --------------------------------------------------------------------------
    def record(self, events: list[Event], event_ids: list[str | None]) -> int:
        """Log durably, then apply to the serving engine; returns how many were new. A swap needs
        no lock here: a new engine reads shoppers from the log, which already holds these events."""
        logged: list[Event] = []

        def apply(seqs: list[int | None]) -> None:  # in log order, once synced (EventLog.append)
            logged.extend(dataclasses.replace(e, seq=seq) for e, seq in zip(events, seqs) if seq is not None)
            for engine in self._engines():
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
            for served in self._engines():
                served.restock(known)
        return StockApplied(len(known), sorted(stores)[:20], ignored=len(changes) - len(known))

    # ---- experiments ---------------------------------------------------------------------
    def serving(self, user_id: str) -> Serving | None:
        """Who answers `user_id`: their arm's engine during an experiment, else the served bundle
        (None: no bundle loaded)."""
        engine, trial = self.engine, self.trial
        if engine is None:
            return None
        if trial is None:
            return Serving(engine, self.current or "", log_all=self.log_exposures)
        arm = trial.experiment.arm(user_id)
        if arm == CONTROL:
            return Serving(engine, trial.experiment.control, trial.experiment, arm)
        return Serving(trial.treatment, trial.experiment.treatment, trial.experiment, arm)

    def start_experiment(
        self, name: str, treatment: str, treatment_share: float, window_s: float, salt: str | None = None
    ) -> Experiment:
        """Serve installed bundle `treatment` to `treatment_share` of shoppers beside the current
        bundle (the control); raises ExperimentError if it cannot start."""
        with self._swap:
            if self.engine is None or self.current is None:
                raise ExperimentError("no bundle loaded yet: upload the control to /admin/bundle first")
            try:
                engine = self._treatment_engine(treatment)
            except bundle.BundleError as error:
                raise ExperimentError(f"treatment {treatment}: {error}") from None
            experiment = Experiment(
                name=name,
                control=self.current,
                treatment=treatment,
                treatment_share=treatment_share,
                window_s=window_s,
                salt=salt or new_salt(),
                started_at=time.time(),
                control_version=self.engine.version,
                treatment_version=engine.version,
            )
            self.experiments.start(experiment)
            self.trial = Trial(experiment, engine)
            return experiment

    def stop_experiment(self, reason: str, promote: bool = False) -> Experiment:
        """Every shopper gets the control again, or with `promote` the treatment (it becomes the
        served bundle, the control its previous). Raises ExperimentError if none runs."""
        with self._swap:
            stopped = self.experiments.stop(reason or "stopped")
            self.trial = None
        if promote and stopped.treatment != self.current:
            self._activate(stopped.treatment)
        return stopped

    def _treatment_engine(self, bundle_id: str) -> Engine:
        """The loaded engine of installed bundle `bundle_id` (or the control's, for an A/A test)."""
        if bundle_id == self.current and self.engine is not None:
            return self.engine
        if not bundle_id or bundle_id.startswith(".") or not (self.bundles / bundle_id).is_dir():
            raise bundle.BundleError(f"bundle {bundle_id!r} is not installed: upload it with activate=false")
        return self._load(bundle_id)

    def _engines(self) -> list[Engine]:
        """The engines serving now: the current one, and the treatment during an experiment."""
        engine, trial = self.engine, self.trial
        engines = [engine] if engine is not None else []
        if trial is not None and trial.treatment is not engine:
            engines.append(trial.treatment)
        return engines

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

    def install_archive(self, archive: Path, activate: bool = True) -> str:
        """Install a bundle uploaded as a .tar.gz (or .tar) of its files; returns the bundle id."""
        if activate:
            self._refuse_during_experiment("install a bundle")
        with tempfile.TemporaryDirectory(dir=self.folder, prefix=UNPACK_PREFIX) as staging:
            with open(archive, "rb") as raw:
                _unpack(raw, Path(staging))
            root = Path(staging)
            entries = list(root.iterdir())
            if len(entries) == 1 and entries[0].is_dir():  # archived as one top-level folder
                root = entries[0]
            return self.install_folder(root, activate)

    def install_folder(self, source: Path, activate: bool = True) -> str:
        """Verify and store a bundle; serve it unless `activate` is False (e.g. an experiment's
        treatment). Returns the bundle id."""
        if activate:
            self._refuse_during_experiment("install a bundle")
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
        else:
            os.utime(target)  # newest first in _prune's order
        if activate:
            self._activate(bundle_id)
        self._prune()
        return bundle_id

    def rollback(self) -> str:
        """Serve the previous bundle again; returns its id."""
        self._refuse_during_experiment("roll back")
        if not self.previous or not (self.bundles / self.previous).exists():
            raise bundle.BundleError("no previous bundle to roll back to")
        self._activate(self.previous)
        return self.current

    def _refuse_during_experiment(self, what: str) -> None:
        trial = self.trial
        if trial is not None:
            raise bundle.BundleError(
                f"cannot {what} while experiment {trial.experiment.name!r} runs: stop it first (or promote its treatment)"
            )

    def _load(self, bundle_id: str) -> Engine:
        """Load installed bundle `bundle_id` with the node's options and its live stock."""
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
        return engine

    def _activate(self, bundle_id: str) -> None:
        with self._swap:
            engine = self._load(bundle_id)
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
        keep, trial = {self.current, self.previous}, self.trial
        treatment = trial.experiment.treatment if trial else None  # kept beside them while it runs
        others = sorted(
            (
                p
                for p in self.bundles.iterdir()
                if p.is_dir() and p.name not in keep and p.name != treatment and not p.name.startswith(".")
            ),
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
