"""Placing worker ranks on GPU nodes and splitting the global batch by speed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from paceline.plan_types import NodeCapacity
from paceline.planner.cost_models import Device, order_devices
from paceline.planner.devices import DeviceCatalog, DeviceType


class PlacementError(ValueError):
    """The workers cannot be placed on the given nodes; the message says why."""


@dataclass(frozen=True, kw_only=True)
class Rank:
    """One placed worker rank."""

    rank: int
    node: NodeCapacity
    type: DeviceType  # speed already adjusted by measurements
    gpus: int

    @property
    def speed(self) -> float:
        return self.type.peak_flops * self.gpus


def device_types(
    nodes: Sequence[NodeCapacity], catalog: DeviceCatalog, measured_speed: Mapping[str, float] | None
) -> dict[str, DeviceType]:
    """Device type per node name; measured relative speeds (keyed by GPU product or pool) replace peak ratios.

    Measured speeds are unitless; they are scaled so that the measured types keep their total catalog
    FLOP/s, i.e. only the ratios between GPU types change.
    """
    base = {n.name: catalog.lookup(n.gpu_product) for n in nodes}
    if not measured_speed:
        return base
    measured: dict[str, float] = {}
    for n in nodes:
        value = measured_speed.get(n.gpu_product, measured_speed.get(n.pool))
        if value is not None:
            if value <= 0:
                raise PlacementError(f"measured speed for {n.gpu_product} must be positive, got {value}")
            measured[n.name] = float(value)
    if not measured:
        return base
    by_product = {base[name].product: (base[name], value) for name, value in measured.items()}
    scale = sum(t.peak_tflops for t, _ in by_product.values()) / sum(v for _, v in by_product.values())
    return {
        name: replace(t, peak_tflops=measured[name] * scale) if name in measured else t
        for name, t in base.items()
    }


def place_ranks(
    *,
    nodes: Sequence[NodeCapacity],
    workers: int,
    gpus_per_worker: int,
    allowed_pools: Sequence[str],
    types: Mapping[str, DeviceType],
) -> list[Rank]:
    """Fastest GPUs first, packing each node before the next (model-parallel groups stay on fast links)."""
    if workers < 1 or gpus_per_worker < 1:
        raise PlacementError(f"need workers >= 1 and gpusPerWorker >= 1, got {workers} and {gpus_per_worker}")
    pools = set(allowed_pools)
    eligible = [n for n in nodes if not pools or n.pool in pools]
    if not eligible:
        known = sorted({n.pool for n in nodes})
        raise PlacementError(f"no nodes in the allowed pools {sorted(pools)}; the cluster has pools {known}")
    slots = {n.name: max(n.gpus_free, 0) // gpus_per_worker for n in eligible}
    room = sum(slots.values())
    if room < workers:
        detail = ", ".join(f"{n.name} ({n.pool}): {n.gpus_free} free" for n in eligible[:8])
        more = f" and {len(eligible) - 8} more" if len(eligible) > 8 else ""
        biggest = max(n.gpus_allocatable for n in eligible)
        hint = (
            f"; no node has {gpus_per_worker} GPUs (largest: {biggest}), lower gpusPerWorker"
            if biggest < gpus_per_worker
            else "; wait for GPUs to free up, add nodes, allow more pools or lower replicas"
        )
        raise PlacementError(
            f"cannot place {workers} workers x {gpus_per_worker} GPUs (each on one node): "
            f"room for {room} in pools {sorted({n.pool for n in eligible})} [{detail}{more}]{hint}"
        )
    order = sorted(eligible, key=lambda n: (-types[n.name].peak_flops, -slots[n.name], n.name))
    ranks: list[Rank] = []
    for node in order:
        for _ in range(slots[node.name]):
            if len(ranks) == workers:
                return ranks
            ranks.append(Rank(rank=len(ranks), node=node, type=types[node.name], gpus=gpus_per_worker))
    return ranks


def rank_devices(ranks: Sequence[Rank]) -> tuple[Device, ...]:
    """All GPUs of the placed ranks, in the cost model's order (fastest first, by node)."""
    return order_devices([Device(node=r.node.name, type=r.type) for r in ranks for _ in range(r.gpus)])


def split_batch(total: int, weights: Sequence[float]) -> list[int]:
    """Integer shares proportional to `weights`, each >= 1, summing exactly to `total` (largest remainder)."""
    n = len(weights)
    if total < n:
        raise PlacementError(
            f"global batch {total} is smaller than the {n} workers; each worker needs >= 1 sample"
        )
    spare = total - n
    weight_sum = float(sum(weights))
    exact = [spare * w / weight_sum for w in weights]
    shares = [int(x) for x in exact]
    leftover = spare - sum(shares)
    by_remainder = sorted(range(n), key=lambda i: (-(exact[i] - shares[i]), -weights[i], i))
    for i in by_remainder[:leftover]:
        shares[i] += 1
    return [s + 1 for s in shares]
