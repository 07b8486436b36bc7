"""Stage 3d — scale out: placeholder pods that make the node autoscaler add the GPUs a running elastic job
wants (spec.elastic.provision).

Level-based: the wanted placeholders are recomputed every pass from the plan in force, the NodePools'
offers and the budget; missing ones are created, unwanted ones deleted. When a placeholder's node is Ready
the job grows into it (the node event brings a candidate plan; its own placeholders count as free GPUs)
and the placeholder, no longer wanted, goes. A NodePool that leaves a placeholder Pending past the
timeout is not asked again (status.scaleOut.unavailable) and an event says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from paceline import api
from paceline.builders import build_capacity_pod
from paceline.capacity import ScaleOut, choose
from paceline.conditions import Condition
from paceline.controller.decide.model import Event, Observed
from paceline.controller.decide.plan import Planned, job_ref
from paceline.planner.devices import DeviceCatalog
from paceline.reasons import ConditionType, EventReason, Reason

Pod = Mapping[str, Any]
ROLE = "capacity"
_CATALOG = DeviceCatalog()


@dataclass(kw_only=True)
class Placeholders:
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    status: dict[str, Any] | None = None  # status.scaleOut (None: not provisioning)
    condition: Condition | None = None  # ScalingOut (None: not provisioning)


@dataclass(frozen=True, kw_only=True)
class Held:
    """The workers a job has (or, waiting below replicas.min, could have now): a GPU type each, and the
    nodes they use (a placeholder never stays on one)."""

    products: tuple[str, ...]
    nodes: frozenset[str] = frozenset()
    waiting: bool = False  # not planned yet: what is asked for must bring it to replicas.min


def held(planned: Planned) -> Held:
    return Held(
        products=tuple(w.gpu_product for w in planned.plan.workers),
        nodes=frozenset(w.node for w in planned.plan.workers),
    )


def placeholders(pods: Sequence[Pod]) -> dict[str, Pod]:
    """The job's live placeholder pods, by name."""
    return {
        p["metadata"]["name"]: p
        for p in pods
        if (p["metadata"].get("labels") or {}).get(api.LABEL_ROLE) == ROLE
        and not p["metadata"].get("deletionTimestamp")
    }


def _flops(product: str) -> float:
    return _CATALOG.lookup(product).peak_flops


def _timed_out(pod: Pod, now: datetime, timeout_s: int) -> bool:
    created = pod["metadata"].get("creationTimestamp")
    if not created or (pod.get("status") or {}).get("phase") != "Pending":
        return False
    return (now - datetime.fromisoformat(str(created).replace("Z", "+00:00"))).total_seconds() > timeout_s


def refused(obs: Observed, spec: api.JobSpec) -> Condition | None:
    """Bad input the NodePools reveal: an allowed GPU type no NodePool offers, or a budget below what
    replicas.min workers of the cheapest allowed type cost. The job keeps running; nothing is requested."""
    provision = spec.elastic.provision
    if provision is None or obs.offers is None:
        return None
    offered = {o.gpu_product for o in obs.offers}
    missing = [p for p in provision.gpu_products if p not in offered]
    if missing:
        message = (
            f"spec.elastic.provision.gpuProducts: no NodePool offers {', '.join(missing)}; "
            f"NodePools offer {', '.join(sorted(offered)) or 'nothing'}"
        )
        return Condition(
            type=ConditionType.SCALING_OUT, status=False, reason=Reason.NO_NODE_POOL, message=message
        )
    prices = [
        o.price_per_gpu_hour
        for o in obs.offers
        if o.price_per_gpu_hour and (not provision.gpu_products or o.gpu_product in provision.gpu_products)
    ]
    if provision.budget_per_hour is not None and prices:
        least = min(prices) * spec.gpus_per_worker * spec.replicas_min
        if least > float(provision.budget_per_hour):
            message = (
                f"spec.elastic.provision.budgetPerHour {provision.budget_per_hour} is below what "
                f"replicas.min ({spec.replicas_min}) workers of the cheapest allowed GPU type cost: "
                f"${least:.2f}/h; raise the budget or lower replicas.min"
            )
            return Condition(
                type=ConditionType.SCALING_OUT, status=False, reason=Reason.BUDGET_TOO_SMALL, message=message
            )
    return None


OUTCOME_REASON = {
    "requested": Reason.CAPACITY_REQUESTED,
    "at-maximum": Reason.AT_MAXIMUM,
    "not-worth-it": Reason.NOT_WORTH_IT,
    "no-offer": Reason.NO_NODE_POOL,
    "no-room": Reason.NO_CAPACITY_LEFT,
}


def wanted(obs: Observed, spec: api.JobSpec, have: Held, unavailable: Sequence[str]) -> ScaleOut:
    """Extra workers per NodePool (nothing unless the job may provision and runs, or waits for capacity)."""
    provision = spec.elastic.provision
    running = (obs.job.get("status") or {}).get("phase") == "Running"
    planned_and_running = running and bool(have.products) and not have.waiting
    if provision is None or obs.offers is None or not (planned_and_running or have.waiting):
        return ScaleOut(workers={}, cost_per_hour=0.0, outcome="", note="")
    budget = float(provision.budget_per_hour) if provision.budget_per_hour is not None else None
    asked = choose(
        current=list(have.products),
        offers=[o for o in obs.offers if o.pool not in unavailable],
        slots=spec.replicas_max - len(have.products),
        gpus_per_worker=spec.gpus_per_worker,
        flops=_flops,
        budget_per_hour=budget,
        allowed=provision.gpu_products,
        worth=lambda old, new: spec.elastic.worth_resizing(old_samples_per_s=old, new_samples_per_s=new),
    )
    reach = len(have.products) + sum(asked.workers.values())
    if have.waiting and reach < spec.replicas_min:
        note = (
            f"{len(have.products)} worker slot(s) free and what the NodePools can add within the budget make "
            f"{reach}, fewer than replicas.min ({spec.replicas_min}): nothing asked; the job waits"
        )
        return ScaleOut(workers={}, cost_per_hour=0.0, outcome="no-room", note=note)
    return asked


def scale_out(obs: Observed, spec: api.JobSpec, now: Planned | Held) -> Placeholders:
    """The placeholders this pass wants, what to create and delete to get there, and the condition."""
    have_now = now if isinstance(now, Held) else held(now)
    out = Placeholders()
    have = placeholders(obs.pods)
    provision = spec.elastic.provision
    old = dict((obs.job.get("status") or {}).get("scaleOut") or {})
    unavailable = sorted(set(old.get("unavailable") or ()))
    if provision is not None:
        out.events, unavailable = _timeouts(obs, have, spec.elastic.pending_timeout_seconds, unavailable)
    bad = refused(obs, spec)
    plan = ScaleOut(workers={}, cost_per_hour=0.0, outcome="", note="")
    if bad is None:
        plan = wanted(obs, spec, have_now, unavailable)
    keep, make = _assign(obs, plan.workers, have, have_now.nodes)
    ref = job_ref(obs.job)
    out.create = [build_capacity_pod(ref, name=n, pool=p, gpus=spec.gpus_per_worker) for n, p in make]
    out.delete = sorted(n for n in have if n not in keep)
    if provision is None:
        return out
    out.status = {
        "requested": dict(sorted(plan.workers.items())),
        "costPerHourUSD": f"{plan.cost_per_hour:.2f}",
    }
    if unavailable:
        out.status["unavailable"] = sorted(unavailable)
    if bad is not None or plan.outcome:
        out.condition = bad or Condition(
            type=ConditionType.SCALING_OUT,
            status=plan.outcome == "requested",
            reason=OUTCOME_REASON[plan.outcome],
            message=plan.note,
        )
    return out


def _assign(
    obs: Observed, wanted: Mapping[str, int], have: Mapping[str, Pod], used: AbstractSet[str]
) -> tuple[set[str], list[tuple[str, str]]]:
    """Which placeholders stay and which are made: per NodePool, existing ones first — never one on a node
    the plan's workers use (its GPUs are theirs now) — then new names no pod holds."""
    job, held = obs.job["metadata"]["name"], {p["metadata"]["name"] for p in obs.pods}
    keep: set[str] = set()
    make: list[tuple[str, str]] = []
    for pool, n in sorted(wanted.items()):
        mine = [
            name
            for name, pod in sorted(have.items())
            if (pod["metadata"].get("labels") or {}).get(api.LABEL_POOL) == pool
            and (pod.get("spec") or {}).get("nodeName") not in used
        ]
        keep.update(mine[:n])
        index = 0
        for _ in range(n - len(mine[:n])):
            while api.capacity_pod_name(job, pool, index) in held:
                index += 1
            make.append((api.capacity_pod_name(job, pool, index), pool))
            index += 1
    return keep, make


def _timeouts(
    obs: Observed, have: Mapping[str, Pod], timeout_s: int, unavailable: list[str]
) -> tuple[list[Event], list[str]]:
    """NodePools whose placeholder stayed Pending past the timeout join `unavailable`, with an event."""
    events = []
    for name, pod in sorted(have.items()):
        pool = (pod["metadata"].get("labels") or {}).get(api.LABEL_POOL, "")
        if pool not in unavailable and _timed_out(pod, obs.now, timeout_s):
            unavailable = [*unavailable, pool]
            message = (
                f"NodePool {pool} gave no node for {name} within {timeout_s}s; "
                "the job trains on what it has and does not ask this NodePool again"
            )
            events.append(Event(type="Warning", reason=EventReason.SCALE_OUT, message=message))
    return events, unavailable
