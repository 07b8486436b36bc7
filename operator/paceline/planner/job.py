"""plan_job: layer graph x node pools -> JobPlan (executed strategy, placement, shares, predictions)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from paceline.plan_types import Executed, JobPlan, ModuleSplit, NodeCapacity, WorkerPlacement
from paceline.planner.cost_models import Device, HeteroCostModel
from paceline.planner.devices import GIB, DeviceCatalog
from paceline.planner.executable import (
    EXECUTABLE,
    divisors,
    executable_space,
    module_splits,
    pass_through,
    split_style,
)
from paceline.planner.graph import GraphError, LayerGraph, with_batch
from paceline.planner.graph_io import graph_from_dict
from paceline.planner.memory_bounds import footprint
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
    data_parallel_choice,
    describe_config,
    device_bytes,
    evaluate,
    plan_strategy,
    split_kind,
)

SUMMARY_MAX = 60
SPLITS_LISTED = 4  # split modules named in the strategy text


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


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """The best executable strategy for one tensor-parallel degree."""

    tensor_parallel: int
    space: SearchSpace
    model: HeteroCostModel
    strategy: Strategy
    splits: tuple[ModuleSplit, ...]


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
    """Place `workers` ranks on `nodes` and pick the fastest strategy the workers can execute for `graph`
    (data parallel, or tensor parallel inside pods x data parallel across; None: data parallel)."""
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
            executed=Executed.DATA_PARALLEL,
            peak_flops=sum(r.speed for r in ranks),
            reason=(
                f"No model graph, so plain data parallel on {p} GPUs ({mix}) with batch shares "
                f"proportional to GPU speed (fastest rank {fastest / slowest:.1f}x the slowest; "
                f"shares {min(shares)}-{max(shares)})."
            ),
        )
    devices = rank_devices(ranks)
    sized = with_batch(graph, global_batch)
    candidates, notes = executable_candidates(sized, devices, catalog, gpus_per_worker)
    if not candidates:
        raise PlacementError(f"{graph.name} cannot run on {p} GPUs ({mix}): {'; '.join(notes)}")
    best = min(candidates, key=lambda c: c.strategy.total_seconds)  # ties: the smallest degree
    baseline = _baseline(sized, devices, catalog)
    others = [c for c in candidates if c is not best]
    plan = _executed_plan(
        best,
        baseline=baseline,
        placements=placements,
        mix=mix,
        gpus_per_worker=gpus_per_worker,
        alternatives=[f"TP{c.tensor_parallel} {c.strategy.total_seconds * 1e3:.3g} ms/step" for c in others]
        + notes,
    )
    return replace(plan, peak_flops=sum(r.speed for r in ranks))


def executable_candidates(
    graph: LayerGraph, devices: tuple[Device, ...], catalog: DeviceCatalog, gpus_per_worker: int
) -> tuple[list[Candidate], list[str]]:
    """The best executable strategy per tensor-parallel degree t (t divides the GPUs of a pod), and a
    note for each degree left out (batch too small, does not fit memory, splits nothing)."""
    p = len(devices)
    candidates: list[Candidate] = []
    notes: list[str] = []
    for t in divisors(gpus_per_worker):
        space = executable_space(graph, procs=p, tensor_parallel=t)
        if space is None:
            notes.append(f"TP{t}: global batch {graph.batch_size} < {p // t} data-parallel groups")
            continue
        model = HeteroCostModel(devices=devices, catalog=catalog, proportional=True, group_size=t)
        try:
            strategy = plan_strategy(space, model)
        except DoesNotFit as exc:
            notes.append(f"TP{t}: does not fit in GPU memory ({exc})")
            continue
        splits = module_splits(space, strategy)
        if t > 1 and not splits:
            notes.append(f"TP{t}: no layer gains from a tensor split")
            continue
        candidates.append(
            Candidate(tensor_parallel=t, space=space, model=model, strategy=strategy, splits=splits)
        )
    return candidates, notes


def _baseline(graph: LayerGraph, devices: tuple[Device, ...], catalog: DeviceCatalog) -> Strategy | None:
    """Plain data parallel with equal shares on every GPU (None when the batch is below the GPU count)."""
    space = executable_space(graph, procs=len(devices), tensor_parallel=1)
    if space is None:
        return None
    equal = HeteroCostModel(devices=devices, catalog=catalog, proportional=False, group_size=1)
    return evaluate(space, data_parallel_choice(space), equal)


def _executed_plan(
    best: Candidate,
    *,
    baseline: Strategy | None,
    placements: tuple[WorkerPlacement, ...],
    mix: str,
    gpus_per_worker: int,
    alternatives: list[str],
) -> JobPlan:
    t, p = best.tensor_parallel, best.space.procs
    seconds = best.strategy.total_seconds
    hybrid = t > 1
    strategy = executed_text(best, gpus_per_worker=gpus_per_worker)
    short = f"hybrid TP{t} x DP{p // t}" if hybrid else f"DP x{p}"
    shares = [w.batch_share for w in placements]
    memory = device_bytes(best.space, best.strategy.choice, best.model)
    peak = None if memory is None else float(memory.max())
    held = footprint(best.space.graph, tensor_parallel=t, split_layers={s.layer for s in best.splits})
    if baseline is None:
        summary = f"{short} {mix}"
        versus = "(equal-share data parallel over every GPU is impossible: batch < GPUs)"
    else:
        speedup = baseline.total_seconds / seconds
        summary = f"{short} {mix} {speedup:.2f}x vs {'DP' if hybrid else 'equal DP'}"
        versus = (
            f"vs {baseline.total_seconds * 1e3:.3g} ms/step for equal-share data parallel ({speedup:.2f}x)"
        )
    others = f"; other tensor-parallel degrees: {', '.join(alternatives)}" if alternatives else ""
    memory_text = "" if peak is None else f", at most {peak / GIB:.3g} GiB per GPU"
    return JobPlan(
        strategy=strategy,
        summary=_fit(summary),
        workers=placements,
        predicted_step_s=seconds,
        baseline_step_s=None if baseline is None else baseline.total_seconds,
        reason=(
            f"{strategy} for {best.space.graph.name} on {p} GPUs ({mix}): predicted "
            f"{seconds * 1e3:.3g} ms/step {versus}{memory_text}; batch shares "
            f"{min(shares)}-{max(shares)} of {sum(shares)} by GPU speed{others}."
        ),
        layers=executed_rows(best.space, best.strategy, tensor_parallel=t),
        executed=Executed.HYBRID if hybrid else Executed.DATA_PARALLEL,
        tensor_parallel=t,
        splits=best.splits,
        predicted_memory_bytes_per_gpu=peak,
        memory_fixed_bytes_per_gpu=held.fixed_bytes,
        memory_bytes_per_sample_per_gpu=held.bytes_per_sample,
        search_space=EXECUTABLE,
    )


def executed_text(candidate: Candidate, *, gpus_per_worker: int) -> str:
    """`data-parallel x8, batch shares by GPU speed` or
    `hybrid: tensor parallel 2 in each pod (fc1 colwise, fc2 rowwise), data parallel x4 across`."""
    t, p = candidate.tensor_parallel, candidate.space.procs
    if t == 1:
        return f"data-parallel x{p}, batch shares by GPU speed"
    named = [f"{s.layer} {s.style}" for s in candidate.splits]
    listed = ", ".join(named[:SPLITS_LISTED])
    if len(named) > SPLITS_LISTED:
        listed += f", +{len(named) - SPLITS_LISTED} more"
    where = "in each pod" if t == gpus_per_worker else f"in {gpus_per_worker // t} groups per pod"
    return f"hybrid: tensor parallel {t} {where} ({listed}), data parallel x{p // t} across"


def executed_rows(
    space: SearchSpace, strategy: Strategy, *, tensor_parallel: int
) -> tuple[dict[str, str], ...]:
    """Per-layer rows of an executable strategy: kind is data (t=1), replicated, colwise, rowwise or
    `sharded (follows fc1)` (an elementwise layer run on fc1's colwise shard); every layer occupies
    all GPUs (replicated layers redundantly within their group)."""
    rows = layer_rows(space, strategy)
    if tensor_parallel == 1:
        return rows
    through = pass_through(space, strategy)
    out = []
    for i, (layer, cfg, row) in enumerate(zip(space.graph.layers, strategy.configs, rows, strict=True)):
        style = split_style(layer, cfg)
        if i in through:
            kind = f"sharded (follows {space.graph.layers[through[i]].name})"
        else:
            kind = "replicated" if style is None else str(style)
        out.append({**row, "kind": kind, "gpus": str(space.procs)})
    return tuple(out)


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
