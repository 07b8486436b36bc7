"""Per-job passes driven by the watch cache: one asyncio task per TrainingJob, woken by events on the job or
its children, never polling the API. Bursts of events coalesce into one pass; a pass that changes nothing
writes nothing. (kopf's own daemons would put a finalizer on every job; these tasks need none.)

The cache is kopf's indices (pods, GPU nodes, control ConfigMaps, Services) plus, per job, what this
operator itself wrote and the watch has not shown yet — so a pass never re-creates what it just created.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from paceline import api, operator_metrics
from paceline.controller.decide.plan import needs_plan, stored_plan
from paceline.controller.inventory import GpuNode, GpuPod, JobKey, reservation
from paceline.controller.observe import JobMemory
from paceline.controller.reconcile import PassResult, Snapshot, compute_plan, run_pass
from paceline.plan_types import JobPlan

log = logging.getLogger("paceline.runner")

SETTLE_S = 0.2  # a burst of events (16 pods turning Running) becomes one pass
RESYNC_S = 600.0  # a pass without any event: a safety net that costs no API request when nothing changed
TERMINAL = ("Succeeded", "Failed")
T = TypeVar("T")


@dataclass(kw_only=True)
class Cache:
    """Read-only views of kopf's indices (mappings of key → values), read in the event loop only."""

    pods: Mapping[JobKey, Iterable[dict[str, Any]]]
    gpu_pods: Mapping[str, Iterable[GpuPod]]
    gpu_nodes: Mapping[str, Iterable[GpuNode]]
    controls: Mapping[JobKey, Iterable[dict[str, Any]]]
    services: Mapping[JobKey, Iterable[dict[str, Any]]]
    claims: Mapping[JobKey, Iterable[str]] = field(default_factory=dict)  # (namespace, name) → phase


def _version(obj: Mapping[str, Any] | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def newer(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The later of two versions of one object (our write's answer vs the watch's latest)."""
    if a is None:
        return None if b is None else dict(b)
    if b is None:
        return dict(a)
    return dict(a if _version(a) >= _version(b) else b)


@dataclass(kw_only=True)
class Written:
    """What this operator wrote for one job and the watch may not show yet."""

    pods: dict[str, dict[str, Any]] = field(default_factory=dict)  # created, by name
    deleted: set[str] = field(default_factory=set)  # pod names whose deletion was requested
    control: dict[str, Any] | None = None
    service: dict[str, Any] | None = None

    def pods_over(self, indexed: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The indexed pods with our creations and deletions laid over them; forgets what the index shows."""
        seen: dict[str, Mapping[str, Any]] = {p["metadata"]["name"]: p for p in indexed}
        for name, body in list(self.pods.items()):
            if name not in seen:
                seen[name] = body
            elif seen[name]["metadata"].get("uid") == body["metadata"].get("uid"):
                del self.pods[name]
        for name in list(self.deleted):
            pod = seen.get(name)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                self.deleted.discard(name)
            else:
                seen[name] = {**pod, "metadata": {**pod["metadata"], "deletionTimestamp": "requested"}}
        return list(seen.values())


class JobRunner:
    """The task that runs one job's passes, one at a time."""

    def __init__(self, fleet: Fleet, key: JobKey) -> None:
        self.fleet, self.key = fleet, key
        self.job: dict[str, Any] | None = None
        self.written = Written()
        self.memory = JobMemory()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"paceline-job-{key[0]}/{key[1]}")

    def observe(self, body: dict[str, Any]) -> None:
        """The watch's latest version of the job."""
        self.job = newer(body, self.job)
        self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        due: float | None = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=RESYNC_S if due is None else due)
            await asyncio.sleep(SETTLE_S)
            self._wake.clear()
            try:
                due = await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception:  # one job's failure must not stop its own later passes, nor anyone else's
                log.exception("pass of %s/%s failed; retrying", *self.key)
                due = 5.0

    async def _pass(self) -> float | None:
        job = self.job
        if job is None:
            return None
        snap = self.fleet.snapshot(self)
        spec = self.memory.spec(job)
        new_plan = None
        if needs_plan(job, spec, snap.control, snap.usable_nodes) and isinstance(spec, api.JobSpec):
            async with self.fleet.planning:  # one plan at a time: each sees the others' reservations
                nodes, pods, reserved = self.fleet.inventory()
                new_plan = await self.fleet.call(
                    compute_plan, job, spec, nodes=nodes, pods=pods, reserved=reserved
                )
                if isinstance(new_plan, JobPlan):
                    self.fleet.reservations[self.key] = reservation(new_plan)
        result = await self.fleet.call(run_pass, snap, self.memory, new_plan=new_plan)
        self._absorb(result)
        if self.key not in self.fleet.reservations and isinstance(spec, api.JobSpec):
            stored = stored_plan(newer(self.written.control, snap.control), spec.plan_hash())
            if stored is not None and (result.decision.status or {}).get("phase") not in TERMINAL:
                self.fleet.reservations[self.key] = reservation(stored[0])  # e.g. after an operator restart
        return result.requeue_after

    def _absorb(self, result: PassResult) -> None:
        """Keep the cache ahead of the watch with what the pass wrote; track the job's GPU reservation."""
        applied = result.applied
        self.job = newer(applied.job, self.job)
        for obj in applied.created:
            name = obj["metadata"]["name"]
            if obj["kind"] == "Pod":
                self.written.pods[name] = obj
            elif obj["kind"] == "Service":
                self.written.service = obj
            elif obj["kind"] == "ConfigMap":
                self.written.control = obj
        self.written.control = newer(applied.control, self.written.control)
        self.written.deleted.update(applied.deleted)
        if (result.decision.status or {}).get("phase") in TERMINAL:
            self.fleet.reservations.pop(self.key, None)


class Fleet:
    """Every job's runner, the shared cache, GPU reservations and the worker threads passes run in."""

    def __init__(self, cache: Cache, *, threads: int = 8) -> None:
        self.cache = cache
        self.runners: dict[JobKey, JobRunner] = {}
        self.reservations: dict[JobKey, dict[str, int]] = {}
        self.planning = asyncio.Lock()
        self._usable: dict[str, bool] = {}
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="paceline-pass")

    def job_event(self, key: JobKey, body: dict[str, Any] | None) -> None:
        """A TrainingJob appeared, changed (body) or is gone (None)."""
        if body is None:
            runner = self.runners.pop(key, None)
            if runner is not None:
                runner.stop()
            self.reservations.pop(key, None)
            operator_metrics.forget_job(namespace=key[0], job=key[1])
            return
        if key not in self.runners:
            self.runners[key] = JobRunner(self, key)
        self.runners[key].observe(body)

    def poke(self, key: JobKey) -> None:
        """Something a job owns changed: run a pass for it."""
        runner = self.runners.get(key)
        if runner is not None:
            runner.poke()

    def node_event(self, name: str, *, usable: bool) -> None:
        """A GPU node changed. Only a change of usability matters: a node lost wakes the jobs placed on it
        (they re-plan), a node that became usable wakes the jobs still waiting for capacity."""
        if self._usable.get(name) == usable:
            return  # heartbeats and label churn: nothing to decide
        self._usable[name] = usable
        for key, held in self.reservations.items():
            if not usable and name in held:
                self.poke(key)
        if usable:
            for key in self.runners.keys() - self.reservations.keys():
                self.poke(key)

    def usable_nodes(self) -> frozenset[str]:
        """GPU nodes pods can run on now, by name (in the event loop)."""
        return frozenset(self.cache.gpu_nodes.keys())

    def snapshot(self, runner: JobRunner) -> Snapshot:
        """The job and its children from the cache and our own writes (in the event loop)."""
        key, written = runner.key, runner.written
        assert runner.job is not None
        control = next(iter(self.cache.controls.get(key, ())), None)
        service = next(iter(self.cache.services.get(key, ())), None)
        if service is not None:
            written.service = None
        return Snapshot(
            job=runner.job,
            pods=written.pods_over(self.cache.pods.get(key, ())),
            service=service or written.service,
            control=newer(written.control, control),
            usable_nodes=self.usable_nodes(),
            claims=frozenset(name for ns, name in self.cache.claims if ns == key[0]),
        )

    def inventory(self) -> tuple[list[GpuNode], list[GpuPod], dict[JobKey, dict[str, int]]]:
        """Copies of the GPU nodes, GPU pods and reservations (in the event loop)."""
        nodes = [n for values in self.cache.gpu_nodes.values() for n in values]
        pods = [p for values in self.cache.gpu_pods.values() for p in values]
        return nodes, pods, dict(self.reservations)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking I/O and planning in a worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def stop(self) -> None:
        for runner in self.runners.values():
            runner.stop()
        self.runners.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
