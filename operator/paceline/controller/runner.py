"""Per-job passes driven by the watch cache: one asyncio task per TrainingJob, woken by events on the job or
its children, never polling the API. Bursts of events coalesce into one pass; a pass that changes nothing
writes nothing. (kopf's own daemons would put a finalizer on every job; these tasks need none.)

The cache is kopf's indices (GPU nodes, control ConfigMaps, Services, claims, NodePools), the pod store
(`paceline.controller.pod_store`, fed by its own list-and-watch) plus, per job, what this operator itself
wrote and the watch has not shown yet — so a pass never re-creates what it just created. No pass runs
before the pods are listed.
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
from paceline.capacity import Offer
from paceline.controller.apply import report
from paceline.controller.decide.model import Event
from paceline.controller.decide.plan import avoided, may_grow, needs_plan, stored_plan
from paceline.controller.inventory import GpuNode, GpuPod, JobKey, reservation
from paceline.controller.observe import JobMemory
from paceline.controller.planning import PlanningError
from paceline.controller.pod_store import Changes, PodStore
from paceline.controller.reconcile import PassResult, Snapshot, compute_plan, run_pass
from paceline.plan_types import JobPlan

log = logging.getLogger("paceline.runner")

SETTLE_S = 0.5  # a burst of events (16 pods turning Running) becomes one pass
RESYNC_S = 600.0  # a pass without any event: a safety net that costs no API request when nothing changed
TERMINAL = ("Succeeded", "Failed")
T = TypeVar("T")


@dataclass(kw_only=True)
class Cache:
    """Read-only views of the watch cache (kopf's indices and the pod store: mappings of key → values), read
    in the event loop only."""

    pods: PodStore  # ("job", namespace, job) → pods; ("node", node) → GpuPods
    gpu_nodes: Mapping[str, Iterable[GpuNode]]
    controls: Mapping[JobKey, Iterable[dict[str, Any]]]
    services: Mapping[JobKey, Iterable[dict[str, Any]]]
    claims: Mapping[JobKey, Iterable[str]] = field(default_factory=dict)  # (namespace, name) → phase
    offers: Mapping[str, Iterable[Offer]] = field(default_factory=dict)  # NodePool → what it can add


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
    last_control: dict[str, Any] | None = None  # the control ConfigMap as last seen (cache or our write)
    service: dict[str, Any] | None = None

    def pods_over(self, indexed: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The indexed pods with our creations and deletions laid over them; forgets what the index shows.

        A created pod counts until the index shows a pod of that name: if that is still an older one on its
        way out, the name stays taken and nothing is created twice (a create would meet 409 anyway)."""
        seen: dict[str, Mapping[str, Any]] = {p["metadata"]["name"]: p for p in indexed}
        for name, body in list(self.pods.items()):
            if name not in seen:
                seen[name] = body
            else:
                del self.pods[name]
        for name in list(self.deleted):
            pod = seen.get(name)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                self.deleted.discard(name)
            else:
                seen[name] = {**pod, "metadata": {**pod["metadata"], "deletionTimestamp": "requested"}}
        return list(seen.values())


class JobRunner:
    """The task that runs one job's passes, one at a time, and reports their outcome.

    A pass writes the objects at once; its status and events go to the reporting lane, one request at a
    time for the whole operator. While a report waits, later passes replace its status (only the newest
    is written) and add their events, so a burst of pod changes costs one status write, and object
    writes — what users wait for — never queue behind status writes. Decisions read the status as
    decided, not as last seen, so nothing is reported twice.
    """

    def __init__(self, fleet: Fleet, key: JobKey) -> None:
        self.fleet, self.key = fleet, key
        self.job: dict[str, Any] | None = None
        self.written = Written()
        self.memory = JobMemory()
        # capacity may have changed since this job last considered growing (true at first: an operator
        # restart, or GPUs freed before the job ran, are not missed)
        self.capacity_changed = True
        self.decided: dict[str, Any] | None = None  # the status of the last pass, written or waiting
        self._reported: dict[str, Any] | None = None  # the status last written (or found unchanged)
        self._events: list[Event] = []
        self._reporting: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"paceline-job-{key[0]}/{key[1]}")

    def observe(self, body: dict[str, Any]) -> None:
        """The watch's latest version of the job."""
        self.job = newer(body, self.job)
        self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    def provisions(self) -> bool:
        """Whether this job asks the node autoscaler for capacity (spec.elastic.provision)."""
        spec = self.memory.spec(self.job) if self.job is not None else None
        return isinstance(spec, api.JobSpec) and spec.elastic.provision is not None

    def may_grow(self) -> bool:
        """Whether this job could grow into new capacity (elastic, Running, below replicas.max)."""
        if self.job is None:
            return False
        spec = self.memory.spec(self.job)
        return may_grow(self.job, spec, self.fleet.snapshot(self, self.job).control)

    def stop(self) -> None:
        self._task.cancel()

    def as_decided(self) -> dict[str, Any] | None:
        """The job as the next decision should see it: with the status last decided."""
        if self.job is None or self.decided is None:
            return self.job
        return {**self.job, "status": self.decided}

    async def _run(self) -> None:
        await self.fleet.pods_listed.wait()  # a pass that saw no pods would create them again
        due: float | None = 0.0
        first = True  # a new job's first pass starts at once: there is nothing to coalesce yet
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=RESYNC_S if due is None else due)
            if not first:
                await asyncio.sleep(SETTLE_S)
            first = False
            self._wake.clear()
            try:
                due = await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # one job's failure must not stop its later passes, nor other jobs'
                due = 5.0
                answer = getattr(err, "status", None)  # the API server's, e.g. 403 in a deleted namespace
                if answer is None:
                    log.exception("pass of %s/%s failed; retrying", *self.key)
                else:
                    log.warning("pass of %s/%s: API answered %s; retrying", *self.key, answer)

    async def _pass(self) -> float | None:
        job = self.as_decided()
        if job is None:
            return None
        snap = self.fleet.snapshot(self, job)
        spec = self.memory.spec(job)
        if not isinstance(spec, api.JobSpec):
            result = await self.fleet.call(run_pass, snap, self.memory, new_plan=None)
        elif needs_plan(job, spec, snap.control or snap.lost_control, snap.usable_nodes):
            async with self.fleet.planning:  # one plan at a time: each sees the others' reservations
                nodes, pods, reserved = self.fleet.inventory(avoid=avoided(job))
                new_plan = await self.fleet.plan(job, spec, nodes=nodes, pods=pods, reserved=reserved)
                if isinstance(new_plan, JobPlan):
                    self.fleet.reservations[self.key] = reservation(new_plan)
            result = await self.fleet.call(run_pass, snap, self.memory, new_plan=new_plan)
        elif self.capacity_changed and may_grow(job, spec, snap.control):
            self.capacity_changed = False
            async with self.fleet.planning:  # a candidate: the decision adopts it only if worth the pause
                nodes, pods, reserved = self.fleet.inventory(avoid=avoided(job))
                candidate = await self.fleet.plan(job, spec, nodes=nodes, pods=pods, reserved=reserved)
                result = await self.fleet.call(run_pass, snap, self.memory, new_plan=candidate)
                if result.applied.control is not None:
                    adopted = stored_plan(result.applied.control, spec.plan_hash())
                    if adopted is not None:
                        self.fleet.reservations[self.key] = reservation(adopted[0])
        else:
            result = await self.fleet.call(run_pass, snap, self.memory, new_plan=None)
        self._absorb(result)
        if self.key not in self.fleet.reservations and isinstance(spec, api.JobSpec):
            stored = stored_plan(newer(self.written.control, snap.control), spec.plan_hash())
            if stored is not None and (result.decision.status or {}).get("phase") not in TERMINAL:
                self.fleet.reservations[self.key] = reservation(stored[0])  # e.g. after an operator restart
        return result.requeue_after

    def _absorb(self, result: PassResult) -> None:
        """Keep the cache ahead of the watch with what the pass wrote; queue its report; track the job's
        GPU reservation."""
        applied, decision = result.applied, result.decision
        for obj in applied.created:
            if obj["kind"] == "Pod":
                self.written.pods[obj["metadata"]["name"]] = obj
            elif obj["kind"] == "Service":
                self.written.service = obj
            elif obj["kind"] == "ConfigMap":
                self.written.control = obj
        self.written.control = newer(applied.control, self.written.control)
        self.written.deleted.update(applied.deleted)
        if applied.rejected is None:
            if decision.status is not None:
                self.decided = decision.status
            self._events += decision.events
            if self._reporting is None and (self._events or self.decided != self._reported):
                self._reporting = asyncio.create_task(self._report())
        finished = (decision.status or {}).get("phase") in TERMINAL
        if finished and self.fleet.reservations.pop(self.key, None) is not None:
            self.fleet.gpus_freed()  # its pods have finished: the cache no longer counts their GPUs

    async def _report(self) -> None:
        """Write the newest decided status and the events gathered so far, through the reporting lane."""
        try:
            while self.job is not None and (self._events or self.decided != self._reported):
                async with self.fleet.reporting:
                    job, status, events = self.job, self.decided, self._events
                    self._events = []
                    written = await self.fleet.call(report, job, status, events)
                self.job, self._reported = newer(written, self.job), status
        except Exception as err:
            log.warning("report of %s/%s failed: %s; the next pass reports again", *self.key, err)
            self.decided = self._reported = None  # decide from the status as observed
        finally:
            self._reporting = None


class Fleet:
    """Every job's runner, the shared cache, GPU reservations and the worker threads passes run in."""

    def __init__(self, cache: Cache, *, threads: int = 8, pod_scopes: int = 1) -> None:
        self.cache = cache
        self.pods_listed = asyncio.Event()  # set once every watched scope's pods were listed
        self._pod_scopes, self._scopes_listed = pod_scopes, set[str | None]()
        self.runners: dict[JobKey, JobRunner] = {}
        self.reservations: dict[JobKey, dict[str, int]] = {}
        self.planning = asyncio.Lock()
        self._usable: dict[str, bool] = {}
        self.reporting = asyncio.Semaphore(1)  # status writes and events: one at a time, behind object writes
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="paceline-pass")
        self._planner = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="paceline-plan"
        )  # plans queue here

    def job_event(self, key: JobKey, body: dict[str, Any] | None) -> None:
        """A TrainingJob appeared, changed (body) or is gone (None)."""
        if body is None:
            runner = self.runners.pop(key, None)
            if runner is not None:
                runner.stop()
            if self.reservations.pop(key, None) is not None:
                self.gpus_freed()
            operator_metrics.forget_job(namespace=key[0], job=key[1])
            return
        if key not in self.runners:
            self.runners[key] = JobRunner(self, key)
        self.runners[key].observe(body)

    def pod_listing(self, items: list[dict[str, Any]], namespace: str | None) -> None:
        """A fresh listing of the pods of `namespace` (None: all)."""
        self._pods_changed(self.cache.pods.replace(items, namespace))
        self._scopes_listed.add(namespace)
        if len(self._scopes_listed) >= self._pod_scopes:
            self.pods_listed.set()

    def pod_events(self, events: list[tuple[str, Mapping[str, Any]]]) -> None:
        """Pod watch events, in order."""
        self._pods_changed(self.cache.pods.apply(events))

    def _pods_changed(self, changes: Changes) -> None:
        for key in changes.jobs:
            self.poke(key)
        if changes.gpus_freed:
            self.gpus_freed()

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
            for key in self.runners:
                if key not in self.reservations:
                    self.poke(key)  # waiting for capacity
            self._offer_growth()

    def gpus_freed(self) -> None:
        """GPUs became free (a job finished and gave up its reservation, or a pod holding GPUs is gone):
        waiting jobs retry, running jobs that may grow consider them."""
        for key in self.runners:
            if key not in self.reservations:
                self.poke(key)
        self._offer_growth()

    def _offer_growth(self) -> None:
        """New capacity: every running job that may grow re-plans once to see whether growing pays."""
        for key, runner in self.runners.items():
            if key in self.reservations and runner.may_grow():
                runner.capacity_changed = True
                self.poke(key)

    def usable_nodes(self) -> frozenset[str]:
        """GPU nodes pods can run on now, by name (in the event loop)."""
        return frozenset(self.cache.gpu_nodes.keys())

    def offers_changed(self) -> None:
        """A NodePool changed (its limit, its use): jobs that provision re-decide what to ask for."""
        for key, runner in self.runners.items():
            if runner.provisions():
                self.poke(key)

    def namespace_event(self, namespace: str) -> None:
        """Something a job may wait for changed in `namespace` (a claim): wake that namespace's jobs."""
        for key in [k for k in self.runners if k[0] == namespace]:
            self.poke(key)

    def snapshot(self, runner: JobRunner, job: dict[str, Any]) -> Snapshot:
        """The job and its children from the cache and our own writes (in the event loop)."""
        key, written = runner.key, runner.written
        cached = next(iter(self.cache.controls.get(key, ())), None)
        if (
            cached is not None
            and written.control is not None
            and _version(cached) >= _version(written.control)
        ):
            written.control = None  # the watch caught up with our write: from now on a deletion shows
        control = newer(written.control, cached)
        if control is not None:
            written.last_control = control
        service = next(iter(self.cache.services.get(key, ())), None)
        if service is not None:
            written.service = None
        return Snapshot(
            job=job,
            pods=written.pods_over(self.cache.pods.get(("job", *key), ())),
            service=service or written.service,
            control=control,
            lost_control=written.last_control if control is None else None,
            usable_nodes=self.usable_nodes(),
            offers=tuple(o for values in self.cache.offers.values() for o in values)
            if self.cache.offers
            else None,
            claims=frozenset(name for ns, name in self.cache.claims if ns == key[0]),
        )

    def inventory(
        self, avoid: frozenset[str] = frozenset()
    ) -> tuple[list[GpuNode], list[GpuPod], dict[JobKey, dict[str, int]]]:
        """Copies of the GPU nodes (less those `avoid`), GPU pods and reservations (in the event loop)."""
        nodes = [n for values in self.cache.gpu_nodes.values() for n in values if n.name not in avoid]
        pods = [p for key, values in self.cache.pods.items() if key[0] == "node" for p in values]
        return nodes, pods, dict(self.reservations)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a pass's blocking I/O in one of the pass threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def plan(self, job: dict[str, Any], spec: api.JobSpec, **inventory: Any) -> JobPlan | PlanningError:
        """Plan in the planner's own thread, so a plan never waits behind other jobs' passes."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._planner, lambda: compute_plan(job, spec, **inventory))

    def stop(self) -> None:
        for runner in self.runners.values():
            runner.stop()
        self.runners.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._planner.shutdown(wait=False, cancel_futures=True)
