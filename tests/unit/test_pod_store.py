"""The pod store: what the operator keeps of pods, and whom a watch event concerns."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from paceline.controller.inventory import GpuPod
from paceline.controller.pod_store import PodStore

OURS = {"app.kubernetes.io/managed-by": "paceline", "paceline.dev/job": "demo"}


def pod(
    name: str,
    *,
    uid: str,
    labels: dict[str, str] = OURS,
    node: str | None = "gpu-t4-0",
    phase: str = "Running",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": uid,
            "labels": labels,
            "managedFields": [{"manager": "paceline"}],
        },
        "spec": {"nodeName": node, "containers": [{"resources": {"limits": {"nvidia.com/gpu": "2"}}}]},
        "status": {"phase": phase, "podIP": "127.16.0.2", "conditions": [{"type": "Ready"}]},
    }


def test_paceline_pods_are_kept_compact_by_job_and_every_gpu_pod_by_node() -> None:
    store = PodStore()
    changes = store.apply(
        [("ADDED", pod("demo-worker-0", uid="a")), ("ADDED", pod("other", uid="b", labels={}))]
    )
    assert changes.jobs == {("ml", "demo")} and not changes.gpus_freed
    (kept,) = store[("job", "ml", "demo")]
    assert kept["status"] == {"phase": "Running", "podIP": "127.16.0.2"}
    assert "managedFields" not in kept["metadata"] and kept["spec"] == {"nodeName": "gpu-t4-0"}
    assert sorted(store[("node", "gpu-t4-0")], key=str) == [
        GpuPod(node="gpu-t4-0", gpus=2, job=("ml", "demo")),
        GpuPod(node="gpu-t4-0", gpus=2, job=None),
    ]
    assert set(store) == {("job", "ml", "demo"), ("node", "gpu-t4-0")}


def test_a_pod_paceline_does_not_manage_wakes_no_job_but_its_deletion_frees_gpus() -> None:
    store = PodStore()
    store.apply([("ADDED", pod("other", uid="b", labels={}))])
    assert not store.apply([("MODIFIED", pod("other", uid="b", labels={}))]).jobs
    changes = store.apply([("DELETED", pod("other", uid="b", labels={}))])
    assert changes.gpus_freed and not changes.jobs and ("node", "gpu-t4-0") not in store


def test_a_finished_pod_holds_no_gpus_and_frees_none_when_deleted() -> None:
    store = PodStore()
    store.apply(
        [
            ("ADDED", pod("demo-worker-0", uid="a")),
            ("MODIFIED", pod("demo-worker-0", uid="a", phase="Succeeded")),
        ]
    )
    assert ("node", "gpu-t4-0") not in store
    changes = store.apply([("DELETED", pod("demo-worker-0", uid="a", phase="Succeeded"))])
    assert changes.jobs == {("ml", "demo")} and not changes.gpus_freed
    assert ("job", "ml", "demo") not in store


def test_a_listing_removes_what_it_lacks_in_its_scope_only() -> None:
    store = PodStore()
    elsewhere = {**pod("x", uid="c"), "metadata": {**pod("x", uid="c")["metadata"], "namespace": "other"}}
    store.apply(
        [
            ("ADDED", pod("demo-worker-0", uid="a")),
            ("ADDED", pod("demo-worker-1", uid="b")),
            ("ADDED", elsewhere),
        ]
    )
    changes = store.replace([pod("demo-worker-0", uid="a")], namespace="ml")
    assert changes.jobs == {("ml", "demo")} and changes.gpus_freed  # worker-1 was deleted unseen
    assert [p["metadata"]["name"] for p in store[("job", "ml", "demo")]] == ["demo-worker-0"]
    assert ("job", "other", "demo") in store  # another namespace's listing decides about that one
    store.replace([])  # the whole cluster listed: nothing is left
    assert len(store) == 0


def test_an_expired_watch_lists_again_and_a_broken_one_resumes_where_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watch's reactions to the API server (the exchange itself: tests/e2e/test_pod_watch.py)."""
    from paceline.adapters import kube, pod_watch

    calls: list[str] = []
    listings = iter([([pod("demo-worker-0", uid="a")], "10"), ([], "30")])
    streams: Any = iter(
        [
            [
                [
                    {
                        "type": "MODIFIED",
                        "object": {
                            **pod("demo-worker-0", uid="a"),
                            "metadata": {"uid": "a", "resourceVersion": "12"},
                        },
                    }
                ],
                ConnectionError("reset"),
            ],
            [kube.Expired()],
            [],
        ]
    )

    def list_all_pods(namespace: str | None = None) -> tuple[list[dict[str, Any]], str]:
        calls.append("list")
        return next(listings)

    class Stream:
        def __init__(self, version: str, namespace: str | None = None) -> None:
            calls.append(f"watch from {version}")
            self.script = next(streams)

        def batches(self) -> Any:
            for item in self.script:
                if isinstance(item, Exception):
                    raise item
                yield item
            watch._stopped.set()  # the last stream: stop here

        def close(self) -> None:
            pass

    monkeypatch.setattr(kube, "list_all_pods", list_all_pods)
    monkeypatch.setattr(kube, "PodStream", Stream)
    readiness = iter([False, True])  # a restarted API server: not ready at first

    def api_ready() -> bool:
        calls.append("readyz")
        return next(readiness)

    monkeypatch.setattr(kube, "api_ready", api_ready)
    monkeypatch.setattr(pod_watch, "RETRY_S", (0.0,))
    seen: list[str] = []
    loop = asyncio.new_event_loop()
    watch = pod_watch.PodWatch(
        loop,
        on_listing=lambda items, ns: seen.append(f"listing of {len(items)}"),
        on_events=lambda e: seen.append(f"{len(e)} event"),
    )
    watch._run()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    assert calls == ["list", "watch from 10", "readyz", "readyz", "watch from 12", "list", "watch from 30"]
    assert seen == ["listing of 1", "1 event", "listing of 0"]
