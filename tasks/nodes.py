"""Prefect tasks over `nodes.fleet` (the logic lives there)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from nodes.fleet import EdgeNode, NodeUpdate, admin_call


@task(name="push bundle", cache_policy=NO_CACHE, task_run_name="push to {node.name}")
def push_task(node: EdgeNode, archive: bytes, version: str) -> NodeUpdate:
    return admin_call(node, "/admin/bundle", version, archive)


@task(name="roll back", cache_policy=NO_CACHE, task_run_name="roll back {node.name}")
def rollback_task(node: EdgeNode) -> NodeUpdate:
    return admin_call(node, "/admin/rollback", None)
