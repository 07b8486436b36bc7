"""Pure decisions for jobs that follow the cluster: which workers lost their node, whether new capacity is
worth a resize, and the pod order of the next generation (survivors keep their pods and their relative order).

Nothing here talks to the API; the controller feeds it the job's placements, the nodes it sees and the
planner's predictions, and executes the result (PUT /generation to surviving pods' launchers, new pods for
the rest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from paceline.plan_types import WorkerPlacement


@dataclass(frozen=True, kw_only=True)
class NodeState:
    """What resizing needs to know of a GPU node."""

    name: str
    ready: bool
    schedulable: bool  # not cordoned


def node_states(nodes: Sequence[Mapping[str, object]]) -> dict[str, NodeState]:
    """NodeState of every node object (as the API returns them)."""
    out = {}
    for node in nodes:
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        status = node.get("status") or {}
        assert isinstance(meta, Mapping) and isinstance(spec, Mapping) and isinstance(status, Mapping)
        conditions = status.get("conditions") or []
        assert isinstance(conditions, list)
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        name = str(meta.get("name"))
        out[name] = NodeState(name=name, ready=ready, schedulable=not spec.get("unschedulable"))
    return out


def lost_workers(placements: Sequence[WorkerPlacement], nodes: Mapping[str, NodeState]) -> tuple[int, ...]:
    """Workers whose node is gone or not Ready (a cordoned node keeps its running workers)."""
    return tuple(w.rank for w in placements if w.node not in nodes or not nodes[w.node].ready)


@dataclass(frozen=True, kw_only=True)
class GrowthDecision:
    grow: bool
    gain_percent: float  # amortised throughput gain over the horizon
    reason: str


def growth_worth_it(
    *, current_step_s: float, new_step_s: float, pause_s: float, horizon_s: float, min_gain_percent: float
) -> GrowthDecision:
    """Resize only when the steps done over `horizon_s` — after paying `pause_s` for the resize — beat the
    steps done without resizing by more than `min_gain_percent` (same global batch per step)."""
    if current_step_s <= 0 or new_step_s <= 0 or horizon_s <= 0:
        raise ValueError("step times and the horizon must be positive")
    staying = horizon_s / current_step_s
    moving = max(0.0, horizon_s - pause_s) / new_step_s
    gain = 100.0 * (moving / staying - 1.0)
    verdict = "worth it" if gain > min_gain_percent else "not worth it"
    return GrowthDecision(
        grow=gain > min_gain_percent,
        gain_percent=gain,
        reason=(
            f"predicted step {current_step_s:.3g}s -> {new_step_s:.3g}s, {pause_s:.0f}s pause amortised over "
            f"{horizon_s:.0f}s: {gain:+.1f}% ({verdict}, threshold {min_gain_percent:g}%)"
        ),
    )


def next_order(current: Sequence[str], lost: Sequence[str], added: Sequence[str]) -> tuple[str, ...]:
    """Pod names in node-rank order for the next generation: survivors first (their order), then new pods."""
    gone = set(lost)
    survivors = [p for p in current if p not in gone]
    return (*survivors, *(p for p in added if p not in survivors))
