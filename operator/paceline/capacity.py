"""Scale-out policy (pure): which GPU types to ask the node autoscaler for, by predicted throughput per price.

An elastic job below replicas.max asks for more workers through pods an autoscaler (Karpenter) provisions
nodes for: one pending placeholder pod per wanted worker, pinned to a NodePool. Which NodePools: the ones
offering an allowed GPU type with GPUs left under their limit, best peak FLOP/s per dollar first (for
compute-bound data parallel with speed-proportional shares, throughput scales with the summed peak), as long
as the job's hourly cost stays within its budget and the gain is worth a resize.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

# On-demand USD per GPU-hour (cloud list prices of 8- and 4-GPU instances divided by their GPUs); a
# NodePool's `paceline.dev/price-per-gpu-hour` annotation overrides them.
CATALOG_PRICE_PER_GPU_HOUR: dict[str, float] = {
    "NVIDIA-H100-80GB-HBM3": 12.29,  # p5.48xlarge 98.32 / 8
    "NVIDIA-A100-SXM4-80GB": 5.12,  # p4de.24xlarge 40.97 / 8
    "NVIDIA-A100-SXM4-40GB": 4.10,  # p4d.24xlarge 32.77 / 8
    "NVIDIA-L40S": 2.62,  # g6e.12xlarge 10.49 / 4
    "NVIDIA-A10G": 1.42,  # g5.12xlarge 5.67 / 4
    "NVIDIA-L4": 1.15,  # g6.12xlarge 4.60 / 4
    "Tesla-V100-SXM2-16GB": 3.06,  # p3.8xlarge 12.24 / 4
    "Tesla-T4": 0.98,  # g4dn.12xlarge 3.91 / 4
}


@dataclass(frozen=True, kw_only=True)
class Offer:
    """A NodePool that can add nodes of one GPU type."""

    pool: str  # the NodePool's name
    gpu_product: str
    gpus_left: int | None  # under the NodePool's GPU limit (None: no limit)
    price_per_gpu_hour: float | None  # None: unknown (the pool is not used)


@dataclass(frozen=True, kw_only=True)
class ScaleOut:
    """What to ask for: extra workers per NodePool, and the job's hourly cost with them."""

    workers: Mapping[str, int]
    cost_per_hour: float
    outcome: str  # requested | at-maximum | not-worth-it | no-offer | no-room
    note: str  # why (or why nothing), for the status


def price_per_gpu_hour(product: str) -> float | None:
    return CATALOG_PRICE_PER_GPU_HOUR.get(product)


def hourly_cost(products: Sequence[str], gpus_per_worker: int, price: Callable[[str], float | None]) -> float:
    """What workers of these GPU types cost per hour (types without a price count as free)."""
    return sum((price(p) or 0.0) * gpus_per_worker for p in products)


def choose(
    *,
    current: Sequence[str],
    offers: Sequence[Offer],
    slots: int,
    gpus_per_worker: int,
    flops: Callable[[str], float],
    budget_per_hour: float | None = None,
    allowed: Sequence[str] = (),
    worth: Callable[[float, float], bool] = lambda old, new: new > old,
) -> ScaleOut:
    """Up to `slots` extra workers that add the most peak FLOP/s within the budget and the NodePools' limits:
    filled one at a time from the offer with the best FLOP/s per dollar, or all of the one type that adds
    more on its own (a greedy fill can strand budget a single type uses). Nothing when the gain is not
    `worth` it (old, new FLOP/s). `current`: the GPU types of the job's workers now, priced like the
    NodePools price that type (else the catalog)."""
    listed = {o.gpu_product: o.price_per_gpu_hour for o in offers if o.price_per_gpu_hour}
    now = hourly_cost(current, gpus_per_worker, lambda p: listed.get(p) or price_per_gpu_hour(p))
    usable = [o for o in offers if o.price_per_gpu_hour and (not allowed or o.gpu_product in allowed)]
    usable.sort(key=lambda o: (-flops(o.gpu_product) / float(o.price_per_gpu_hour or 1), o.pool))
    room = None if budget_per_hour is None else budget_per_hour - now
    mixes = [_fill(usable, slots, gpus_per_worker, room)]
    mixes += [_fill([o], slots, gpus_per_worker, room) for o in usable]
    by_pool = {o.pool: o for o in usable}

    def added(mix: Mapping[str, int]) -> float:
        return sum(flops(by_pool[pool].gpu_product) * n for pool, n in mix.items()) * gpus_per_worker

    wanted = max(mixes, key=added)
    if not wanted:
        outcome, note = _nothing(usable, slots, budget_per_hour)
        return ScaleOut(workers={}, cost_per_hour=now, outcome=outcome, note=note)
    old = sum(flops(p) for p in current) * gpus_per_worker
    if not worth(old, old + added(wanted)):
        note = "the predicted gain of the GPUs left does not justify a resize"
        return ScaleOut(workers={}, cost_per_hour=now, outcome="not-worth-it", note=note)
    cost = now + sum(
        float(by_pool[p].price_per_gpu_hour or 0) * gpus_per_worker * n for p, n in wanted.items()
    )
    asked = ", ".join(
        f"{n} x {by_pool[pool].gpu_product} from NodePool {pool}" for pool, n in sorted(wanted.items())
    )
    note = f"asked for {asked} (most peak FLOP/s within the budget); ${cost:.2f}/h with them"
    return ScaleOut(workers=wanted, cost_per_hour=cost, outcome="requested", note=note)


def _fill(offers: Sequence[Offer], slots: int, gpus: int, room: float | None) -> dict[str, int]:
    """Workers taken one at a time from the first of `offers` with GPUs left and a price within `room`."""
    left = {o.pool: o.gpus_left for o in offers}
    wanted: dict[str, int] = {}
    spent = 0.0
    for _ in range(max(slots, 0)):
        pick = next((o for o in offers if _fits(o, left, spent, gpus, room)), None)
        if pick is None:
            break
        wanted[pick.pool] = wanted.get(pick.pool, 0) + 1
        spent += float(pick.price_per_gpu_hour or 0.0) * gpus
        if left[pick.pool] is not None:
            left[pick.pool] = int(left[pick.pool] or 0) - gpus
    return wanted


def _fits(offer: Offer, left: Mapping[str, int | None], cost: float, gpus: int, budget: float | None) -> bool:
    room = left[offer.pool]
    if room is not None and room < gpus:
        return False
    return budget is None or cost + float(offer.price_per_gpu_hour or 0.0) * gpus <= budget + 1e-9


def _nothing(usable: Sequence[Offer], slots: int, budget: float | None) -> tuple[str, str]:
    if slots <= 0:
        return "at-maximum", "the job has replicas.max workers"
    if not usable:
        return "no-offer", "no NodePool offers an allowed GPU type with a known price"
    within = " within its GPU limit and the budget" if budget is not None else " within its GPU limit"
    return "no-room", "no NodePool has room for another worker" + within


def best_single_type(
    *,
    offers: Sequence[Offer],
    workers: int,
    gpus_per_worker: int,
    flops: Callable[[str], float],
    budget_per_hour: float | None,
) -> tuple[str, float, float] | None:
    """For comparison: the one GPU type giving the most peak FLOP/s for the budget (up to `workers`
    workers of it, within its NodePool's limit) — (type, FLOP/s, cost per hour); None if no offer."""
    best: tuple[str, float, float] | None = None
    for offer in offers:
        price = offer.price_per_gpu_hour
        if not price:
            continue
        n = workers
        if offer.gpus_left is not None:
            n = min(n, offer.gpus_left // gpus_per_worker)
        if budget_per_hour is not None:
            n = min(n, int(budget_per_hour // (price * gpus_per_worker)))
        if n <= 0:
            continue
        total = flops(offer.gpu_product) * gpus_per_worker * n
        if best is None or total > best[1]:
            best = (offer.gpu_product, total, price * gpus_per_worker * n)
    return best
