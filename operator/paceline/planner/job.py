"""plan_job: layer graph x node pools -> JobPlan (strategy, placement, batch shares, predictions)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from paceline.plan_types import JobPlan, NodeCapacity, WorkerPlacement
from paceline.planner.cost_models import HeteroCostModel
from paceline.planner.devices import DeviceCatalog
from paceline.planner.graph import GraphError, LayerGraph, with_batch
from paceline.planner.graph_io import graph_from_dict
from paceline.planner.placement import (
    PlacementError,
    Rank,
    device_types,
    place_ranks,
    rank_devices,
    split_batch,
)
from paceline.planner.presets import preset
from paceline.planner.strategy import (
    DoesNotFit,
    SearchSpace,
    Strategy,
    build_space,
    data_parallel_choice,
    describe_config,
    evaluate,
    plan_strategy,
    split_kind,
)

SUMMARY_MAX = 60


def load_graph(spec_model: Mapping[str, Any]) -> LayerGraph:
    """The layer graph of a TrainingJob's `spec.model`: `{preset: name}` or `{graph: {...}}`."""
    if not isinstance(spec_model, Mapping):
        raise GraphError("spec.model must be a mapping with `preset` or `graph`")
    if "preset" in spec_model and "graph" in spec_model:
        raise GraphError("spec.model: give either `preset` or `graph`, not both")
    if "preset" in spec_model:
        return preset(str(spec_model["preset"]))
    if "graph" in spec_model:
        return graph_from_dict(spec_model["graph"])
    if "configMapRef" in spec_model:
        raise GraphError("spec.model.configMapRef must be resolved first; pass its parsed content as `graph`")
    raise GraphError(f"spec.model needs `preset` or `graph`, got keys {sorted(spec_model)}")


def plan_job(
    *,
    graph: LayerGraph | None,
    nodes: Sequence[NodeCapacity],
    workers: int,
    gpus_per_worker: int,
    global_batch: int,
    allowed_pools: Sequence[str] = (),
    catalog: DeviceCatalog | None = None,
    measured_speed: Mapping[str, float] | None = None,
) -> JobPlan:
    """Place `workers` ranks on `nodes` and pick a per-layer strategy for `graph` (None: data parallel)."""
    catalog = catalog or DeviceCatalog()
    types = device_types(nodes, catalog, measured_speed)
    ranks = place_ranks(
        nodes=nodes,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        allowed_pools=allowed_pools,
        types=types,
    )
    shares = split_batch(global_batch, [r.speed for r in ranks])
    placements = tuple(
        WorkerPlacement(
            rank=r.rank,
            node=r.node.name,
            pool=r.node.pool,
            gpu_product=r.node.gpu_product,
            gpus=r.gpus,
            batch_share=s,
        )
        for r, s in zip(ranks, shares, strict=True)
    )
    mix = _composition(ranks)
    p = workers * gpus_per_worker
    if graph is None:
        slowest, fastest = min(r.speed for r in ranks), max(r.speed for r in ranks)
        return JobPlan(
            strategy=f"data-parallel x{workers}, batch shares by GPU speed",
            summary=_fit(f"DP x{workers} {mix}"),
            workers=placements,
            reason=(
                f"No model graph, so plain data parallel on {p} GPUs ({mix}) with batch shares "
                f"proportional to GPU speed (fastest rank {fastest / slowest:.1f}x the slowest; "
                f"shares {min(shares)}-{max(shares)})."
            ),
        )
    devices = rank_devices(ranks)
    model = HeteroCostModel(devices=devices, catalog=catalog, proportional=True)
    equal = HeteroCostModel(devices=devices, catalog=catalog, proportional=False)
    sized = with_batch(graph, global_batch)
    space = build_space(sized, p)
    try:
        best = plan_strategy(space, model)
    except DoesNotFit as exc:
        raise PlacementError(f"{graph.name} does not fit in GPU memory on {p} GPUs ({mix}): {exc}") from exc
    baseline = evaluate(space, data_parallel_choice(space), equal)
    strategy = strategy_text(space, best)
    speedup = baseline.total_seconds / best.total_seconds
    kind = {"d": "DP", "s": "1-GPU"}.get(strategy[0], "hybrid")
    return JobPlan(
        strategy=strategy,
        summary=_fit(f"{kind} {mix} {speedup:.2f}x vs DP"),
        workers=placements,
        predicted_step_s=best.total_seconds,
        baseline_step_s=baseline.total_seconds,
        reason=(
            f"{strategy} for {graph.name} on {p} GPUs ({mix}): "
            f"predicted {best.total_seconds * 1e3:.1f} ms/step "
            f"vs {baseline.total_seconds * 1e3:.1f} ms/step for equal-share data parallel ({speedup:.2f}x), "
            f"batch shares {min(shares)}-{max(shares)} of {global_batch} by GPU speed{_idle_note(best, p)}."
        ),
        layers=layer_rows(space, best),
    )


def strategy_text(space: SearchSpace, strategy: Strategy) -> str:
    """A short description such as `hybrid: 9 layers batch-split, 4 model-split (up to 32-way)`."""
    kinds = [split_kind(space, i, c) for i, c in enumerate(strategy.configs)]
    counts = Counter(kinds)
    widest = max((c for c in (int(_procs(cfg)) for cfg in strategy.configs)), default=1)
    if widest == 1:
        return "single GPU (too small to gain from splitting)"
    if counts["model"] == 0 and counts["hybrid"] == 0:
        return f"data-parallel x{widest}"
    parts = [f"{counts['data']} layers batch-split"] if counts["data"] else []
    if counts["model"]:
        parts.append(f"{counts['model']} model-split")
    if counts["hybrid"]:
        parts.append(f"{counts['hybrid']} batch+model")
    return f"hybrid: {', '.join(parts)} (up to {widest} GPUs per layer)"


def layer_rows(space: SearchSpace, strategy: Strategy) -> tuple[dict[str, str], ...]:
    """Per-layer rows for status and the CLI table."""
    rows = []
    for i, (layer, cfg, secs) in enumerate(
        zip(space.graph.layers, strategy.configs, strategy.layer_seconds, strict=True)
    ):
        rows.append(
            {
                "layer": layer.name,
                "op": layer.op.value,
                "split": describe_config(space, i, cfg),
                "kind": split_kind(space, i, cfg),
                "gpus": str(_procs(cfg)),
                "ms": f"{secs * 1e3:.4g}",
            }
        )
    return tuple(rows)


def _idle_note(strategy: Strategy, procs: int) -> str:
    widest = max(_procs(cfg) for cfg in strategy.configs)
    return f"; no layer gains from more than {widest} of the {procs} GPUs" if widest < procs else ""


def _procs(config: tuple[int, ...]) -> int:
    n = 1
    for c in config:
        n *= c
    return n


def _composition(ranks: Sequence[Rank]) -> str:
    counts: Counter[str] = Counter()
    for r in ranks:
        counts[r.type.short] += r.gpus
    return "+".join(f"{n}x{name}" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _fit(text: str) -> str:
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"
