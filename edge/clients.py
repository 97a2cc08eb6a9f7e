"""Client keys: who may call a node's public routes, for what, and how often.

A key is `lpk_<8 hex id>_<secret>`, shown once when it is made (`lightpersml keys client add`).
The node keeps only its SHA-256 (the secret is 256 random bits, so a fast hash is enough) in
`<node dir>/clients.json` (mode 0600), with the key's name, scopes and rate. A running node
rereads the file when it changes, so adding or revoking a key needs no restart.

Scopes: `recommend` (GET /v1/recommendations) and `events` (POST /v1/events). Rates are in the
`limits` library's notation ("1000/second", "50/minute") and are enforced per key by the generic
cell rate algorithm (one number per key; a refused call learns when to retry).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from limits import RateLimitItem, parse

SCOPES = ("recommend", "events")
DEFAULT_RATE = "1000/second"
KEYS_FILE = "clients.json"
PREFIX, ID_LENGTH = "lpk_", 8
RELOAD_EVERY_S = 1.0
log = logging.getLogger(__name__)


class ClientKeyError(ValueError):
    """A key request that cannot be carried out (unknown scope, bad rate, no such key)."""


@dataclass(frozen=True)
class ClientKey:
    key_id: str
    name: str
    scopes: tuple[str, ...]
    rate: str
    digest: str  # SHA-256 hex of the secret
    created_at: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(presented: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    if not presented.startswith(PREFIX) or len(presented) > 200:
        return None
    key_id, separator, secret = presented[len(PREFIX) :].partition("_")
    if len(key_id) != ID_LENGTH or not separator or not secret:
        return None
    return key_id, secret


def parse_rate(rate: str) -> RateLimitItem:
    try:
        return parse(rate)
    except ValueError:
        raise ClientKeyError(f"rate {rate!r} is not like '1000/second' or '50/minute'") from None


class ClientKeys:
    """The node's client keys file (see the module docstring)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / KEYS_FILE
        self._keys: dict[str, ClientKey] = {}
        self._mtime: float | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._reload(force=True, strict=True)

    # ---- management (the CLI) ------------------------------------------------------------
    def add(self, name: str, scopes: tuple[str, ...] = SCOPES, rate: str = DEFAULT_RATE) -> tuple[ClientKey, str]:
        """A new key named `name`; returns it and the key text (shown once, never stored)."""
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise ClientKeyError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(unknown) or 'none'}")
        parse_rate(rate)
        if any(key.name == name for key in self.list()):
            raise ClientKeyError(f"a key named {name!r} exists; revoke it first or choose another name")
        key_id, secret = secrets.token_hex(ID_LENGTH // 2), secrets.token_urlsafe(32)
        key = ClientKey(
            key_id,
            name,
            tuple(sorted(set(scopes))),
            rate,
            _digest(secret),
            datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self._write({**self._keys, key_id: key})
        return key, f"{PREFIX}{key_id}_{secret}"

    def revoke(self, name_or_id: str) -> ClientKey:
        match = [key for key in self.list() if name_or_id in (key.name, key.key_id)]
        if not match:
            raise ClientKeyError(f"no client key named {name_or_id!r} in {self.path}")
        self._write({kid: key for kid, key in self._keys.items() if kid != match[0].key_id})
        return match[0]

    def list(self) -> list[ClientKey]:
        self._reload()
        return sorted(self._keys.values(), key=lambda key: key.created_at)

    def _write(self, keys: dict[str, ClientKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as f:
            json.dump({"keys": [asdict(key) for key in keys.values()]}, f, indent=2)
        os.replace(tmp, self.path)
        self._reload(force=True)

    # ---- serving ---------------------------------------------------------------------------
    def __bool__(self) -> bool:
        self._reload()
        return bool(self._keys)

    def authenticate(self, presented: str) -> ClientKey | None:
        """The key `presented` stands for, or None; compares digests in constant time."""
        self._reload()
        parts = _split(presented)
        key = self._keys.get(parts[0]) if parts else None
        given = _digest(parts[1]) if parts else ""
        if key is None or not hmac.compare_digest(given, key.digest):
            return None
        return key

    def _reload(self, force: bool = False, strict: bool = False) -> None:
        """Reread the file if it changed (at most once per RELOAD_EVERY_S). A file that cannot be
        read raises when `strict` (start-up), else keeps the keys read before and logs why."""
        now = time.monotonic()
        if not force and now - self._checked < RELOAD_EVERY_S:
            return
        with self._lock:
            self._checked = now
            try:
                mtime = self.path.stat().st_mtime_ns
            except FileNotFoundError:
                self._keys, self._mtime = {}, None
                return
            if mtime == self._mtime and not force:
                return
            try:
                entries = json.loads(self.path.read_text())["keys"]
                keys = {e["key_id"]: ClientKey(**{**e, "scopes": tuple(e["scopes"])}) for e in entries}
            except (OSError, ValueError, KeyError, TypeError) as error:
                message = f"{self.path}: cannot read client keys ({type(error).__name__}: {error})"
                if strict:
                    raise ClientKeyError(message) from None
                log.error("%s; keeping the %d keys read before", message, len(self._keys))
                keys = self._keys
            self._keys, self._mtime = keys, mtime


class RateLimits:
    """Per-identity request rates by the generic cell rate algorithm (GCRA): a rate of n per
    period admits a burst of n, then one request every period / n. The state of an identity is
    the time its next request is due. Called from the node's event loop only.

    Not `limits`' in-memory storage: it starts a timer thread every 10 ms of traffic, which cost a
    busy node 8% of its event loop and stalls of the GIL hand-off."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock  # seconds
        self._due: dict[str, float] = {}  # identity → when its next request is due (by `clock`)
        self._parsed: dict[str, RateLimitItem] = {}

    def retry_after(self, identity: str, rate: str) -> int | None:
        """None when one more request of `identity` fits in `rate` (and counts it); else whole
        seconds until one does."""
        limit = self._parsed.get(rate) or self._parsed.setdefault(rate, parse_rate(rate))
        period = float(limit.get_expiry())
        now = self.clock()
        due = max(self._due.get(identity, now), now) + period / limit.amount
        if due - now > period:
            return max(1, math.ceil(due - now - period))
        self._due[identity] = due
        return None
