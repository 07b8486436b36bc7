"""What a decision reads (`Observed`) and what it asks for (`Decision`): plain data, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from paceline.api import InvalidSpec, JobSpec
from paceline.capacity import Offer
from paceline.controller.planning import PlanningError
from paceline.plan_types import JobPlan
from paceline.reasons import EventReason
from paceline_worker.wire import Assignment


@dataclass(frozen=True, kw_only=True)
class Event:
    """A Kubernetes event about the job."""

    type: str  # Normal | Warning
    reason: EventReason
    message: str


@dataclass(frozen=True, kw_only=True)
class Rejection:
    """The API server refused a worker pod built from the template of this spec generation (422)."""

    generation: int
    pod: str
    message: str


@dataclass(frozen=True, kw_only=True)
class MomentumPut:
    """Explicit momentum to PUT to every parameter-server shard (level-based: repeated every pass)."""

    urls: tuple[str, ...]
    version: int
    momentum: float


@dataclass(frozen=True, kw_only=True)
class GenerationPut:
    """A new generation for a pod a resize kept: PUT `body` to its launcher's `url`."""

    pod: str  # the pod's uid
    url: str
    body: str
    generation: int


@dataclass(frozen=True, kw_only=True)
class Telemetry:
    """What the live control steps measured and decided this pass (balancer or momentum policy)."""

    worker_stats: Mapping[int, Mapping[str, str]] = field(default_factory=dict)  # rank → measured fields
    throughput: Mapping[str, str] = field(default_factory=dict)
    momentum: Mapping[str, str] = field(default_factory=dict)  # status.momentum
    assignment: Assignment | None = None  # a new version from the balancer
    push: tuple[str, Assignment] | None = None  # (rank 0's /assignment URL, what to PUT there)
    momentum_put: MomentumPut | None = None
    events: tuple[Event, ...] = ()
    asynchronous: Mapping[str, Any] | None = None  # status.asynchronous (None: keep the one in the status)


@dataclass(frozen=True, kw_only=True)
class Observed:
    """Everything the decision reads."""

    job: Mapping[str, Any]
    spec: JobSpec | InvalidSpec  # the job's spec, parsed once (`paceline.api.parsed`)
    pods: Sequence[Mapping[str, Any]]
    service: Mapping[str, Any] | None
    control: Mapping[str, Any] | None
    now: datetime
    lost_control: Mapping[str, Any] | None = None  # the control ConfigMap last seen, when it is gone now
    new_plan: JobPlan | PlanningError | None = None  # computed by the caller when `needs_plan` says so
    rejected: Rejection | None = None
    telemetry: Telemetry | None = None
    usable_nodes: frozenset[str] | None = None  # GPU nodes pods can run on now (None: not known)
    claims: frozenset[str] | None = None  # PersistentVolumeClaims in the job's namespace (None: not known)
    generations_acked: Mapping[str, int] = field(default_factory=dict)  # pod uid → generation it holds
    offers: tuple[Offer, ...] | None = None  # what the autoscaler's NodePools offer (None: no autoscaler)
    token: str | None = None  # the job's control token, from its Secret (None: no Secret seen)
    fresh_token: str | None = None  # a new random token for the Secret to create when there is none
    learners: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)  # RL: learner index → /status


@dataclass(kw_only=True)
class Decision:
    """What to change. Apply order: creates/patches, deletes, status (once, only if it changed), events,
    then the pushes to workers."""

    create: list[dict[str, Any]] = field(default_factory=list)
    patch_control: dict[str, Any] | None = None
    delete_pods: list[str] = field(default_factory=list)
    status: dict[str, Any] | None = None  # the whole new status; None leaves it as it is
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    push: tuple[str, Assignment] | None = None
    momentum_put: MomentumPut | None = None
    generation_puts: list[GenerationPut] = field(default_factory=list)
