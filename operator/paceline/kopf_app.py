"""kopf wiring, nothing more: the watch-cache indices (whose functions also wake a job's runner when one of
its children changes), thin event handlers for jobs and for deletions, and start-up/clean-up of the runners
(`paceline.controller.runner`) and of the pod watches (`paceline.adapters.pod_watch`: pods are the one kind
with thousands of events a minute, too many for kopf's per-object machinery). No finalizer, no polling."""

from __future__ import annotations

import asyncio
import gc
import logging
import types
from collections.abc import Mapping
from typing import Any

import kopf

from paceline import api
from paceline.adapters.pod_watch import PodWatch
from paceline.capacity import Offer
from paceline.controller.inventory import GpuNode, JobKey, gpu_node, node_pool_offer
from paceline.controller.pod_store import PodStore, compact_meta
from paceline.controller.runner import Cache, Fleet

OURS: dict[str, Any] = {api.LABEL_MANAGED_BY: api.MANAGED_BY, api.LABEL_JOB: kopf.PRESENT}
CONTROL: dict[str, Any] = {**OURS, api.LABEL_ROLE: "control"}


@kopf.index("v1", "nodes")
async def gpu_nodes(body: kopf.Body, **_: Any) -> dict[str, GpuNode] | None:
    """Ready, schedulable GPU nodes, by name."""
    node = gpu_node(body)
    return None if node is None else {node.name: node}


@kopf.index("v1", "persistentvolumeclaims")
async def claims(
    namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> dict[JobKey, str]:
    """Every PersistentVolumeClaim's phase, by (namespace, name): checkpoint volumes must exist. A claim's
    change wakes the jobs of its namespace (one may be waiting for it)."""
    fleet = getattr(memo, "fleet", None)
    if fleet is not None:
        fleet.namespace_event(namespace or "")
    return {(namespace or "", name): str((body.get("status") or {}).get("phase") or "Pending")}


@kopf.index("karpenter.sh", "v1", "nodepools")
async def offers(name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[str, Offer] | None:
    """What each Karpenter NodePool can add (GPU type, GPUs left, price); served only where Karpenter's CRDs
    are installed. A change wakes the jobs that may ask for capacity."""
    fleet = getattr(memo, "fleet", None)
    if fleet is not None:
        fleet.offers_changed()
    offer = node_pool_offer(body)
    return None if offer is None else {name: offer}


def _poke(memo: kopf.Memo, key: JobKey) -> None:
    """Wake a job's runner from an index function: kopf calls those on every event of the kind, so events
    of a job's children cost no handler round of their own."""
    fleet = getattr(memo, "fleet", None)  # None only while kopf lists before start-up finished
    if fleet is not None:
        fleet.poke(key)


@kopf.index("v1", "configmaps", labels=CONTROL)
async def controls(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, memo: kopf.Memo, **_: Any
) -> dict[JobKey, dict[str, Any]]:
    """Each job's control ConfigMap (plan and assignment)."""
    _poke(memo, (namespace or "", labels[api.LABEL_JOB]))
    return {
        (namespace or "", labels[api.LABEL_JOB]): {
            "metadata": compact_meta(body),
            "data": dict(body.get("data") or {}),
        }
    }


@kopf.index("v1", "services", labels=OURS)
async def services(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, memo: kopf.Memo, **_: Any
) -> dict[JobKey, dict[str, Any]]:
    """Each job's headless Service."""
    _poke(memo, (namespace or "", labels[api.LABEL_JOB]))
    return {(namespace or "", labels[api.LABEL_JOB]): {"metadata": compact_meta(body)}}


def fast_watch_decoding() -> bool:
    """Give kopf's watch-stream decoder orjson: at thousands of pod events per minute, decoding them with
    the json module was the operator's largest CPU cost. The same dicts come out. False (and nothing
    changed) if orjson or that kopf module is missing."""
    try:
        import orjson
        from kopf._cogs.clients import api as kopf_api
    except ImportError:
        return False
    if not hasattr(kopf_api, "json"):
        return False
    kopf_api.json = types.SimpleNamespace(loads=orjson.loads)  # type: ignore[assignment]
    return True


GC_YOUNG_THRESHOLD = 50_000  # allocations between two young collections (CPython's default: 700)


def calm_garbage_collector() -> None:
    """Keep the cyclic garbage collector from re-scanning what lives as long as the operator. Each decoded
    watch event allocates hundreds of containers; at CPython's defaults the collections those trigger, each
    walking the modules, kopf's per-object state and the caches, took 39 % of the operator's CPU while 1600
    pods started (bench/scale.py, profiled). What exists at start-up is frozen out of collection, and young
    collections run every 50 000 allocations instead of 700; cycles are still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf deep-copies every watched object on every event to diff it for create/update handlers; this
    operator has none (one level-based pass per job), so it keeps no diff base at all."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **indices: Any) -> None:
    """Keep kopf's bookkeeping out of the way and start the fleet of job runners on the indices."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.paceline.dev")
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not a line per handled event
    settings.watching.server_timeout = 600
    fast_watch_decoding()
    calm_garbage_collector()
    names = ("gpu_nodes", "controls", "services", "claims", "offers")
    nodes, cms, svcs, pvcs, pools = (indices[n] for n in names)
    scopes: tuple[str | None, ...] = getattr(memo, "pod_namespaces", None) or (None,)
    fleet = Fleet(
        Cache(pods=PodStore(), gpu_nodes=nodes, controls=cms, services=svcs, claims=pvcs, offers=pools),
        pod_scopes=len(scopes),
    )
    loop = asyncio.get_running_loop()
    memo.pod_watches = [
        PodWatch(loop, on_listing=fleet.pod_listing, on_events=fleet.pod_events, namespace=scope)
        for scope in scopes
    ]
    memo.fleet = fleet
    for watch in memo.pod_watches:
        watch.start()


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for watch in memo.pod_watches:
        watch.stop()
    memo.fleet.stop()


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def on_job(
    namespace: str | None, name: str, type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """Any change to a TrainingJob (our own status writes too: they lead to passes that write nothing)."""
    if namespace is not None:  # TrainingJobs are namespaced; kopf types allow None for cluster-scoped kinds
        memo.fleet.job_event((namespace, name), None if type == "DELETED" else dict(body))


@kopf.on.event("v1", "nodes")
async def on_node(name: str, type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A node changed: jobs re-plan when one of theirs is lost, waiting jobs retry when one is added."""
    memo.fleet.node_event(name, usable=type != "DELETED" and gpu_node(body) is not None)


def _deleted(type: str | None, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event("v1", "services", labels=OURS, when=_deleted)
@kopf.on.event("v1", "configmaps", labels=CONTROL, when=_deleted)
async def on_child_gone(namespace: str | None, labels: Mapping[str, str], memo: kopf.Memo, **_: Any) -> None:
    """A job's Service or control ConfigMap is gone (kopf does not index deletions): run a pass."""
    _poke(memo, (namespace or "", labels[api.LABEL_JOB]))
