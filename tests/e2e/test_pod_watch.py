"""The operator's pod list-and-watch against the real API server: a listing, then events as pods come and
go. (What it does when the watch's version expired is a unit test: this API server does not expire the
versions of a quiet resource.)"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_support import Kube, wait_for

from paceline.adapters import kube as kube_adapter
from paceline.adapters.pod_watch import PodWatch
from paceline.controller.pod_store import PodStore
from paceline_dev.localcluster.cluster import LocalCluster

pytestmark = pytest.mark.e2e


@pytest.fixture
def admin_client(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The kube adapter's client, as admin on the local cluster."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.paths.kubeconfig))
    monkeypatch.setattr(kube_adapter, "_api_client", None)
    yield


class Loop:
    """An event loop in a thread, where the watch hands what it sees to a PodStore."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = PodStore()
        self.listings: list[str | None] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def listing(self, items: list[dict[str, Any]], namespace: str | None) -> None:
        self.store.replace(items, namespace)
        self.listings.append(namespace)

    def events(self, events: list[tuple[str, Any]]) -> None:
        self.store.apply(events)

    def names(self, namespace: str, job: str) -> set[str]:
        future = asyncio.run_coroutine_threadsafe(self._names(namespace, job), self.loop)
        return future.result(timeout=10)

    async def _names(self, namespace: str, job: str) -> set[str]:
        return {p["metadata"]["name"] for p in self.store.get(("job", namespace, job), ())}

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def job_pod(name: str, namespace: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "paceline", "paceline.dev/job": "watched"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        # unschedulable on purpose: nothing runs it, the test only watches it come and go
        "spec": {
            "nodeSelector": {"paceline.dev/none": "none"},
            "containers": [{"name": "c", "image": "none"}],
        },
    }


@pytest.mark.usefixtures("admin_client")
def test_pods_are_listed_then_followed(kube: Kube, namespace: str) -> None:
    kube.apply(job_pod("before", namespace), namespace)
    loop = Loop()
    watch = PodWatch(loop.loop, on_listing=loop.listing, on_events=loop.events, namespace=namespace)
    watch.start()
    try:
        wait_for(
            "the listing",
            lambda: loop.listings == [namespace] and loop.names(namespace, "watched") == {"before"},
        )
        kube.apply(job_pod("after", namespace), namespace)
        wait_for("the new pod", lambda: loop.names(namespace, "watched") == {"before", "after"})
        kube.run("delete", "pod", "before", "-n", namespace, "--wait=false")
        wait_for("the deletion", lambda: loop.names(namespace, "watched") == {"after"})

    finally:
        watch.stop()
        loop.close()
