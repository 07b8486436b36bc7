"""Which pod runs which rank, generation by generation — so a resize keeps the pods it can.

A generation is one membership of the job: the pods in rank order and the rendezvous port they meet on. The
first has the pods `<job>-worker-<rank>`. When the job is re-planned on the same spec (a node was lost, or
capacity appeared), the next generation keeps every live pod on a node the new plan still uses: those
pods' launchers restart their ranks in place with the new generation (pushed over HTTP), and only the
plan's other workers get new pods, under names no pod holds. Kept pods come first in rank order, so rank 0
— the rendezvous host — is a pod whose address is already known.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from paceline import api
from paceline.plan_types import JobPlan

MEMBERS_KEY = "members.json"  # in the control ConfigMap


@dataclass(frozen=True, kw_only=True)
class Members:
    generation: int
    pods: tuple[str, ...]  # the pod of each rank

    def rank(self, pod: str) -> int | None:
        return self.pods.index(pod) if pod in self.pods else None

    def to_json(self) -> str:
        return json.dumps({"generation": self.generation, "pods": list(self.pods)})


def first_members(job: str, world: int, generation: int = 0) -> Members:
    """The pods of a fresh plan: `<job>-worker-<rank>`."""
    return Members(generation=generation, pods=tuple(api.worker_pod_name(job, r) for r in range(world)))


def stored_members(control: Mapping[str, Any] | None, job: str, world: int) -> Members:
    """The membership kept in the control ConfigMap (a plan stored before generations existed: the first)."""
    raw = ((control or {}).get("data") or {}).get(MEMBERS_KEY)
    if raw:
        doc = json.loads(raw)
        pods = tuple(str(p) for p in doc.get("pods") or ())
        if len(pods) == world:
            return Members(generation=int(doc.get("generation") or 0), pods=pods)
    return first_members(job, world)


def _alive(pod: Mapping[str, Any]) -> bool:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    return not meta.get("deletionTimestamp") and status.get("phase") in ("Pending", "Running")


def regroup(
    plan: JobPlan, previous: Members, pods: Sequence[Mapping[str, Any]], *, job: str, keep: bool = True
) -> tuple[JobPlan, Members]:
    """The next generation for `plan` (same spec, new placement): with `keep`, the previous members' live
    pods on nodes the plan uses keep their pods (they come first, in their old order); the plan's other
    workers get names no pod holds. Returns the plan with its ranks renumbered to match, and the
    membership."""
    by_name = {p["metadata"]["name"]: p for p in pods}
    free = list(plan.workers)
    kept: list[tuple[str, Any]] = []
    for name in previous.pods if keep else ():
        pod = by_name.get(name)
        if pod is None or not _alive(pod):
            continue
        node = (pod.get("spec") or {}).get("nodeName")
        match = next((w for w in free if w.node == node), None)
        if match is not None:
            free.remove(match)
            kept.append((name, match))
    taken = set(by_name) | {name for name, _ in kept}
    fresh: list[tuple[str, Any]] = []
    index = 0
    for worker in free:
        while api.worker_pod_name(job, index) in taken:
            index += 1
        name = api.worker_pod_name(job, index)
        taken.add(name)
        fresh.append((name, worker))
    order = kept + fresh
    workers = tuple(dataclasses.replace(w, rank=r) for r, (_, w) in enumerate(order))
    members = Members(generation=previous.generation + 1, pods=tuple(name for name, _ in order))
    return dataclasses.replace(plan, workers=workers), members
