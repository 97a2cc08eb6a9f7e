"""Edge nodes as the training side sees them: the nodes file, and pushing a bundle to a node or
rolling it back (POST to its /admin API, then read its /readyz), one report row per node."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx

PUSH_TIMEOUT_S = 300  # a node verifies and warms the bundle before it answers


@dataclass(frozen=True)
class EdgeNode:
    name: str
    url: str
    token: str


def read_nodes(path: Path) -> list[EdgeNode]:
    """The nodes of a TOML nodes file; errors name the file and the entry."""
    path = Path(path)
    try:
        entries = tomllib.loads(path.read_text()).get("nodes", [])
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"{path}: cannot read the nodes file: {error}") from None
    if not entries:
        raise ValueError(f"{path}: no [[nodes]] entries")
    nodes = []
    for number, entry in enumerate(entries, start=1):
        missing = [key for key in ("name", "url") if not entry.get(key)]
        token = entry.get("token") or os.environ.get(entry.get("token_env", ""), "")
        if not token:
            missing.append(
                f"token (or a set token_env; {entry.get('token_env')!r} is unset)"
                if entry.get("token_env")
                else "token"
            )
        if missing:
            raise ValueError(f"{path}: node #{number} ({entry.get('name', '?')}): missing {', '.join(missing)}")
        nodes.append(EdgeNode(entry["name"], entry["url"].rstrip("/"), token))
    return nodes


def _ready_version(client: httpx.Client, node: EdgeNode) -> str | None:
    try:
        response = client.get(f"{node.url}/readyz", timeout=10)
        return response.json().get("model_version") if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


@dataclass(frozen=True)
class NodeUpdate:
    """One node's outcome of a push or a rollback: the model versions its /readyz reported before
    and after (None: not ready or unreachable)."""

    node: str
    url: str
    version_before: str | None
    version_after: str | None
    status: str  # "updated" or "failed"
    detail: str  # why it failed ("" when updated)


def admin_call(node: EdgeNode, path: str, expected_version: str | None, content: bytes | None = None) -> NodeUpdate:
    """POST to a node's admin `path`, then read its /readyz: one report row."""
    with httpx.Client(headers={"Authorization": f"Bearer {node.token}"}) as client:
        before = _ready_version(client, node)
        try:
            response = client.post(
                f"{node.url}{path}",
                content=content,
                timeout=PUSH_TIMEOUT_S,
                headers={"Content-Type": "application/octet-stream"} if content else None,
            )
            detail = response.json().get("detail", "") if response.status_code != 200 else ""
            accepted = response.status_code == 200
            if not accepted:
                detail = f"HTTP {response.status_code}: {detail}"
        except httpx.HTTPError as error:
            accepted, detail = False, f"unreachable: {type(error).__name__}: {error}"
        after = _ready_version(client, node)
    if accepted and expected_version is not None and after != expected_version:
        accepted, detail = False, f"/readyz reports version {after}, expected {expected_version}"
    return NodeUpdate(node.name, node.url, before, after, "updated" if accepted else "failed", detail)
