"""The operator's cache of pods, fed by one list-and-watch (`paceline.adapters.pod_watch`): Paceline's pods
by job, and the GPUs every live pod holds by node. Pure: it applies decoded watch events and says whom
they concern. Read in the event loop only.

A store rather than a kopf index: kopf runs each watch event through its per-object machinery (a worker
task, causes, handler invocation), which cost ≈ 1 ms of CPU per pod event; at thousands of pod events a
minute that was most of the operator's CPU (bench/scale.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from paceline import api
from paceline.controller.inventory import GpuPod, JobKey, gpu_pod

POD_STATUS_KEYS = ("phase", "podIP", "reason", "containerStatuses")
META_KEYS = ("name", "namespace", "uid", "labels", "annotations", "deletionTimestamp", "resourceVersion")


def compact_meta(body: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata a decision reads (no managedFields)."""
    meta = body["metadata"]
    return {k: meta[k] for k in META_KEYS if k in meta}


def compact_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a decision reads of a pod (the cache holds thousands: no managedFields, no full spec)."""
    status = body.get("status") or {}
    return {
        "kind": "Pod",
        "metadata": compact_meta(body),
        "spec": {"nodeName": (body.get("spec") or {}).get("nodeName")},
        "status": {k: status[k] for k in POD_STATUS_KEYS if k in status},
    }


def job_of(body: Mapping[str, Any]) -> JobKey | None:
    """The TrainingJob a pod belongs to, when it is Paceline's."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(api.LABEL_MANAGED_BY) == api.MANAGED_BY and api.LABEL_JOB in labels:
        return (meta.get("namespace") or "", labels[api.LABEL_JOB])
    return None


@dataclass(frozen=True)
class Entry:
    """One pod as the store keeps it."""

    namespace: str
    job: JobKey | None
    pod: dict[str, Any] | None  # compact, for Paceline's pods
    gpus: GpuPod | None  # the GPUs it holds, while it holds them


@dataclass(kw_only=True)
class Changes:
    """What a batch of events means for the jobs: whose pods changed, and whether GPUs were given back."""

    jobs: set[JobKey] = field(default_factory=set)
    gpus_freed: bool = False


class PodStore(Mapping[tuple[str, ...], list[Any]]):
    """Pods by ("job", namespace, job) → compact pods and ("node", node) → GpuPods, the shape the runners
    read."""

    def __init__(self) -> None:
        self._pods: dict[str, Entry] = {}  # by uid
        self._by_job: dict[JobKey, dict[str, dict[str, Any]]] = {}
        self._by_node: dict[str, dict[str, GpuPod]] = {}

    def __getitem__(self, key: tuple[str, ...]) -> list[Any]:
        if key[0] == "job" and len(key) == 3:
            return list(self._by_job[(key[1], key[2])].values())
        if key[0] == "node" and len(key) == 2:
            return list(self._by_node[key[1]].values())
        raise KeyError(key)

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        yield from (("job", *job) for job in self._by_job)
        yield from (("node", node) for node in self._by_node)

    def __len__(self) -> int:
        return len(self._by_job) + len(self._by_node)

    def apply(self, events: Iterable[tuple[str, Mapping[str, Any]]]) -> Changes:
        """Watch events in order: ("ADDED" | "MODIFIED" | "DELETED", pod)."""
        changes = Changes()
        for kind, body in events:
            uid = (body.get("metadata") or {}).get("uid")
            if uid:
                self._put(uid, None if kind == "DELETED" else body, changes)
        return changes

    def replace(self, bodies: Iterable[Mapping[str, Any]], namespace: str | None = None) -> Changes:
        """A fresh listing of every pod (of `namespace`, or of the cluster): pods it lacks were deleted
        while the watch was down."""
        changes = Changes()
        listed: dict[str, Mapping[str, Any]] = {}
        for body in bodies:
            uid = (body.get("metadata") or {}).get("uid")
            if uid:
                listed[uid] = body
        for uid, entry in list(self._pods.items()):
            if uid not in listed and namespace in (None, entry.namespace):
                self._put(uid, None, changes)
        for uid, body in listed.items():
            self._put(uid, body, changes)
        return changes

    def _put(self, uid: str, body: Mapping[str, Any] | None, changes: Changes) -> None:
        """Replace a pod's entry with its newer version (None: it is gone). A pod that held GPUs and holds
        none now (deleted, or finished) gave them back."""
        before = self._remove(uid)
        after = None if body is None else self._add(uid, body)
        for entry in (before, after):
            if entry is not None and entry.job is not None:
                changes.jobs.add(entry.job)
        if before is not None and before.gpus is not None and (after is None or after.gpus is None):
            changes.gpus_freed = True

    def _add(self, uid: str, body: Mapping[str, Any]) -> Entry:
        job, gpus = job_of(body), gpu_pod(body)
        namespace = (body.get("metadata") or {}).get("namespace") or ""
        entry = Entry(namespace=namespace, job=job, pod=compact_pod(body) if job else None, gpus=gpus)
        self._pods[uid] = entry
        if job is not None and entry.pod is not None:
            self._by_job.setdefault(job, {})[uid] = entry.pod
        if gpus is not None:
            self._by_node.setdefault(gpus.node, {})[uid] = gpus
        return entry

    def _remove(self, uid: str) -> Entry | None:
        entry = self._pods.pop(uid, None)
        if entry is None:
            return None
        if entry.job is not None:
            pods = self._by_job.get(entry.job, {})
            pods.pop(uid, None)
            if not pods:
                self._by_job.pop(entry.job, None)
        if entry.gpus is not None:
            held = self._by_node.get(entry.gpus.node, {})
            held.pop(uid, None)
            if not held:
                self._by_node.pop(entry.gpus.node, None)
        return entry
