"""The watch cache as a pass sees it: our own writes laid over kopf's indices until the watch shows them,
and GPU reservations of plans whose pods the cache does not show yet."""

from __future__ import annotations

from typing import Any

from jobs import PLAN

from paceline.controller.inventory import GpuNode, GpuPod, node_inventory, reservation
from paceline.controller.runner import Written, newer


def body(name: str, uid: str, version: int = 1, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": uid, "resourceVersion": str(version), **meta}}


def test_a_created_pod_counts_until_the_index_shows_that_name() -> None:
    written = Written(pods={"w-0": body("w-0", "new")})
    assert [p["metadata"]["uid"] for p in written.pods_over([])] == ["new"]
    assert [p["metadata"]["uid"] for p in written.pods_over([])] == ["new"]  # still not in the index
    old = body("w-0", "old", deletionTimestamp="2026-11-23T12:00:00Z")
    (held,) = written.pods_over([old])  # an older pod still holds the name: it stays taken
    assert held["metadata"]["uid"] == "old" and not written.pods


def test_a_deleted_pod_counts_as_deleting_until_the_watch_agrees() -> None:
    written = Written(deleted={"w-1"})
    (pod,) = written.pods_over([body("w-1", "a")])
    assert pod["metadata"]["deletionTimestamp"]
    assert written.pods_over([]) == [] and not written.deleted


def test_newer_keeps_the_later_resource_version() -> None:
    assert newer(body("j", "u", 5), body("j", "u", 7)) == body("j", "u", 7)
    assert newer(None, body("j", "u", 1)) == body("j", "u", 1)
    assert newer(None, None) is None


def test_reservations_hold_gpus_whose_pods_the_cache_does_not_show_yet() -> None:
    nodes = [GpuNode(name="gpu-h100-0", pool="h100", gpu_product="H100", gpus=8)]
    mine, other = ("ml", "demo"), ("ml", "other")
    pods = [
        GpuPod(node="gpu-h100-0", gpus=1, job=other),  # counted through other's reservation instead
        GpuPod(node="gpu-h100-0", gpus=3, job=None),  # someone else's pod
        GpuPod(node="gpu-h100-0", gpus=1, job=mine),  # the job being planned: its own GPUs are free to it
    ]
    reserved = {other: {"gpu-h100-0": 2}, mine: reservation(PLAN)}
    (free,) = node_inventory(nodes, pods, reserved=reserved, exclude=mine)
    assert free.gpus_free == 8 - 2 - 3
    (seen_by_a_third,) = node_inventory(nodes, pods, reserved=reserved, exclude=("ml", "third"))
    assert seen_by_a_third.gpus_free == 8 - 2 - 2 - 3  # demo's plan holds 2 H100s (ranks 0 and 1)
