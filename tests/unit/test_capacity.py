"""Scale-out: which NodePools to ask for GPUs (pure policy), what a NodePool offers, and the decide stage
that keeps placeholder pods level with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from jobs import PLAN, job, pod

from paceline import api
from paceline.capacity import Offer, best_single_type, choose
from paceline.controller.decide.members import first_members
from paceline.controller.decide.model import Observed
from paceline.controller.decide.plan import Planned
from paceline.controller.decide.scale_out import Held, scale_out
from paceline.controller.inventory import node_pool_offer
from paceline.planner.devices import DeviceCatalog
from paceline.reasons import Reason
from paceline_worker.wire import Assignment

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
A100, T4, H100 = "NVIDIA-A100-SXM4-40GB", "Tesla-T4", "NVIDIA-H100-80GB-HBM3"
CATALOG = DeviceCatalog()


def flops(product: str) -> float:
    return CATALOG.lookup(product).peak_flops


OFFERS = (
    Offer(pool="a100", gpu_product=A100, gpus_left=8, price_per_gpu_hour=4.10),
    Offer(pool="t4", gpu_product=T4, gpus_left=8, price_per_gpu_hour=0.98),
    Offer(pool="h100", gpu_product=H100, gpus_left=16, price_per_gpu_hour=12.29),
)


def test_the_best_flops_per_dollar_pool_is_asked_first_within_its_limit() -> None:
    # per GPU-hour: H100 989/12.29 = 80, A100 312/4.10 = 76, T4 65/0.98 = 66 TFLOP/s per dollar
    out = choose(current=[T4], offers=OFFERS, slots=3, gpus_per_worker=8, flops=flops)
    assert out.workers == {"h100": 2, "a100": 1} and out.outcome == "requested"
    assert "H100" in out.note


def test_the_budget_caps_what_is_asked_and_nothing_is_asked_at_max() -> None:
    # the T4 worker costs 4 x 0.98 = 3.92/h; 21/h leaves room for one A100 worker (16.40, 1248 TFLOP/s), more
    # than the three T4 workers the same room buys (780 TFLOP/s); an H100 worker (49.16) does not fit
    out = choose(current=[T4], offers=OFFERS, slots=3, gpus_per_worker=4, flops=flops, budget_per_hour=21)
    assert out.workers == {"a100": 1} and abs(out.cost_per_hour - (3.92 + 16.40)) < 1e-6
    full = choose(current=[T4, T4], offers=OFFERS, slots=0, gpus_per_worker=4, flops=flops)
    assert full.workers == {} and full.outcome == "at-maximum"
    allowed = choose(current=[T4], offers=OFFERS, slots=2, gpus_per_worker=4, flops=flops, allowed=[T4])
    assert allowed.workers == {"t4": 2}
    dull = choose(
        current=[H100] * 4,
        offers=OFFERS,
        slots=1,
        gpus_per_worker=4,
        flops=flops,
        allowed=[T4],
        worth=lambda old, new: new > old * 1.1,
    )
    assert dull.workers == {} and dull.outcome == "not-worth-it"


@given(
    budget=st.floats(min_value=1, max_value=500),
    slots=st.integers(min_value=0, max_value=6),
    left=st.lists(st.integers(min_value=0, max_value=24), min_size=3, max_size=3),
)
def test_choose_never_exceeds_budget_slots_or_limits(budget: float, slots: int, left: list[int]) -> None:
    offers = [
        Offer(pool=o.pool, gpu_product=o.gpu_product, gpus_left=n, price_per_gpu_hour=o.price_per_gpu_hour)
        for o, n in zip(OFFERS, left, strict=True)
    ]
    out = choose(
        current=[], offers=offers, slots=slots, gpus_per_worker=4, flops=flops, budget_per_hour=budget
    )
    assert sum(out.workers.values()) <= slots
    assert out.cost_per_hour <= budget + 1e-6
    for offer in offers:
        assert out.workers.get(offer.pool, 0) * 4 <= (offer.gpus_left or 0)
    single = best_single_type(
        offers=offers, workers=slots, gpus_per_worker=4, flops=flops, budget_per_hour=budget
    )
    if single is not None:  # at least what the best single type buys with the same budget
        mix = sum(
            flops(next(o.gpu_product for o in offers if o.pool == p)) * 4 * n for p, n in out.workers.items()
        )
        assert mix >= single[1] - 1e-6


def nodepool(
    name: str, product: str | None, *, limit: str | None = "16", used: str = "4", price: str | None = None
) -> dict[str, Any]:
    reqs = [{"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["p4d.24xlarge"]}]
    if product:
        reqs.append({"key": "nvidia.com/gpu.product", "operator": "In", "values": [product]})
    return {
        "metadata": {
            "name": name,
            "annotations": {"paceline.dev/price-per-gpu-hour": price} if price else {},
        },
        "spec": {
            "template": {"spec": {"requirements": reqs}},
            **({"limits": {"nvidia.com/gpu": limit}} if limit else {}),
        },
        "status": {"resources": {"nvidia.com/gpu": used}},
    }


def test_a_nodepool_offers_its_gpu_type_what_is_left_of_its_limit_and_a_price() -> None:
    assert node_pool_offer(nodepool("a100", A100)) == Offer(
        pool="a100", gpu_product=A100, gpus_left=12, price_per_gpu_hour=4.10
    )
    assert node_pool_offer(nodepool("a", A100, price="2.5")).price_per_gpu_hour == 2.5
    assert node_pool_offer(nodepool("a", A100, limit=None)).gpus_left is None
    assert node_pool_offer(nodepool("cpu", None)) is None
    assert node_pool_offer(nodepool("odd", "NVIDIA-Unknown")).price_per_gpu_hour is None


SPEC_DOC = {
    "replicas": {"min": 1, "max": 5},
    "elastic": {"pendingTimeoutSeconds": 60, "provision": {"gpuProducts": [A100]}},
}


def observed(
    pods: list[dict[str, Any]], *, offers: tuple[Offer, ...] = OFFERS, phase: str = "Running", **spec: Any
) -> tuple[Observed, api.JobSpec]:
    tj = job(**{**SPEC_DOC, **spec})
    tj["status"] = {"phase": phase}
    parsed = api.parse_spec(tj["spec"])
    return Observed(job=tj, spec=parsed, pods=pods, service=None, control=None, now=T0, offers=offers), parsed


PLANNED = Planned(
    plan=PLAN,
    assignment=Assignment(version=1, batch_sizes=(56, 56, 16)),
    plan_hash="h",
    members=first_members("demo", 3),
)


def test_placeholders_are_made_for_the_wanted_workers_and_deleted_when_no_longer_wanted() -> None:
    obs, spec = observed([])
    out = scale_out(obs, spec, PLANNED)
    names = [p["metadata"]["name"] for p in out.create]
    assert names == ["demo-capacity-a100-0", "demo-capacity-a100-1"]  # replicas.max 5 − 3 workers
    placeholder = out.create[0]
    assert placeholder["spec"]["nodeSelector"] == {"karpenter.sh/nodepool": "a100"}
    assert placeholder["spec"]["containers"][0]["image"] == api.PLACEHOLDER_IMAGE
    assert placeholder["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert (
        out.condition is not None
        and out.condition.status
        and out.condition.reason == Reason.CAPACITY_REQUESTED
    )
    assert out.status == {"requested": {"a100": 2}, "costPerHourUSD": out.status["costPerHourUSD"]}
    have = [pod(n, role="capacity", phase="Pending") for n in [*names, "demo-capacity-t4-0"]]
    for p in have:
        p["metadata"]["labels"]["paceline.dev/pool"] = p["metadata"]["name"].split("-")[2]
        p["metadata"]["creationTimestamp"] = T0.isoformat()
    again = scale_out(observed(have)[0], spec, PLANNED)
    assert again.create == [] and again.delete == ["demo-capacity-t4-0"]
    done, _ = observed(have, replicas={"min": 1, "max": 3})
    full = scale_out(done, api.parse_spec(done.job["spec"]), PLANNED)
    assert sorted(full.delete) == sorted(n for n in [*names, "demo-capacity-t4-0"])
    assert full.condition is not None and full.condition.reason == Reason.AT_MAXIMUM


def test_a_pool_that_gives_no_node_in_time_is_not_asked_again() -> None:
    stuck = pod("demo-capacity-a100-0", role="capacity", phase="Pending")
    stuck["metadata"]["labels"]["paceline.dev/pool"] = "a100"
    stuck["metadata"]["creationTimestamp"] = (T0 - timedelta(seconds=61)).isoformat()
    obs, spec = observed([stuck])
    out = scale_out(obs, spec, PLANNED)
    assert out.status is not None and out.status["unavailable"] == ["a100"]
    assert out.delete == ["demo-capacity-a100-0"] and out.create == []
    assert any("gave no node" in e.message and e.type == "Warning" for e in out.events)


def test_bad_input_is_a_condition_and_nothing_is_asked() -> None:
    obs, spec = observed([], elastic={"provision": {"gpuProducts": ["NVIDIA-B200"]}})
    out = scale_out(obs, spec, PLANNED)
    assert out.create == [] and out.condition is not None and not out.condition.status
    assert out.condition.reason == Reason.NO_NODE_POOL and "NVIDIA-B200" in out.condition.message
    obs, spec = observed(
        [],
        replicas={"min": 2, "max": 5},
        elastic={"provision": {"gpuProducts": [A100], "budgetPerHour": "5"}},
    )
    out = scale_out(obs, spec, PLANNED)
    assert out.create == [] and out.condition is not None and out.condition.reason == Reason.BUDGET_TOO_SMALL
    assert "$8.20/h" in out.condition.message  # 2 workers x 1 GPU x 4.10


def test_a_job_that_does_not_provision_or_is_not_running_asks_nothing() -> None:
    obs, spec = observed([], phase="Pending")
    assert scale_out(obs, spec, PLANNED).create == []
    plain, _ = observed([], elastic={})
    out = scale_out(plain, api.parse_spec(plain.job["spec"]), PLANNED)
    assert out.create == [] and out.condition is None and out.status is None
    none, spec = observed([], offers=())
    assert scale_out(none, spec, PLANNED).create == []


def test_a_placeholder_on_a_node_the_workers_now_use_makes_way() -> None:
    """The job grew onto the node a placeholder held: that placeholder goes (its GPUs are the worker's);
    one still pending elsewhere stays, and one more is made under a free name."""
    on_plan = pod("demo-capacity-a100-0", role="capacity", phase="Running", node="gpu-t4-0")
    waiting = pod("demo-capacity-a100-1", role="capacity", phase="Pending")
    for p in (on_plan, waiting):
        p["metadata"]["labels"]["paceline.dev/pool"] = "a100"
        p["metadata"]["creationTimestamp"] = T0.isoformat()
    obs, spec = observed([on_plan, waiting])
    out = scale_out(obs, spec, PLANNED)
    assert out.delete == ["demo-capacity-a100-0"]
    assert [p["metadata"]["name"] for p in out.create] == ["demo-capacity-a100-2"]


def test_a_job_waiting_below_its_minimum_asks_for_what_it_lacks() -> None:
    """replicas.min 4, one A100 slot free: the waiting job asks for A100 workers up to replicas.max; when the
    NodePools cannot bring it to the minimum it asks for nothing and says why."""
    obs, spec = observed([], phase="Pending", replicas={"min": 4, "max": 5})
    out = scale_out(obs, spec, Held(products=(A100,), waiting=True))
    assert out.condition is not None and out.condition.reason == Reason.CAPACITY_REQUESTED
    assert out.status is not None and sum(out.status["requested"].values()) >= 3
    short = (Offer(pool="a100", gpu_product=A100, gpus_left=2, price_per_gpu_hour=4.10),)
    poor, spec = observed([], phase="Pending", replicas={"min": 4, "max": 5}, offers=short)
    out = scale_out(poor, spec, Held(products=(), waiting=True))
    assert out.create == [] and out.condition is not None
    assert (
        out.condition.reason == Reason.NO_CAPACITY_LEFT
        and "fewer than replicas.min (4)" in out.condition.message
    )


def test_an_unplanned_job_that_is_not_short_of_gpus_asks_nothing() -> None:
    obs, spec = observed([], phase="Running")
    assert scale_out(obs, spec, Held(products=())).create == []
