"""Plain data shared by the planner, the placement code and the operator."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from paceline_worker.execution_plan import ExecutionPlan, ModuleShard


@dataclass(frozen=True, kw_only=True)
class NodeCapacity:
    """One schedulable GPU node as the planner sees it."""

    name: str
    pool: str
    gpu_product: str  # value of the node's `nvidia.com/gpu.product` label
    gpus_allocatable: int
    gpus_free: int  # allocatable minus GPUs requested by pods already bound there


@dataclass(frozen=True, kw_only=True)
class WorkerPlacement:
    """Where one worker rank runs and how much of the global batch it takes."""

    rank: int
    node: str
    pool: str
    gpu_product: str
    gpus: int
    batch_share: int


class Executed(StrEnum):
    """What the workers execute: plain data parallel, or data parallel across pods plus tensor parallel
    (Megatron-style column/row splits) inside each pod."""

    DATA_PARALLEL = "data-parallel"
    HYBRID = "hybrid"


class SplitStyle(StrEnum):
    COLWISE = "colwise"  # output features split (Linear weight rows / Embedding columns)
    ROWWISE = "rowwise"  # input features split (Linear weight columns / Embedding rows = vocabulary)


class Layout(StrEnum):
    REPLICATE = "replicate"  # the full tensor on every rank of the tensor-parallel group
    SHARD = "shard"  # last dim split over the group (a colwise output feeding a rowwise input directly)


@dataclass(frozen=True, kw_only=True)
class ModuleSplit:
    """One tensor-parallel module of an executable plan, applied inside every pod."""

    module: str  # qualified name in the user's nn.Module, e.g. "classifier.1"
    layer: str  # the graph layer it comes from (for messages)
    kind: str  # "linear" | "embedding"
    style: SplitStyle
    shape: tuple[int, int]  # weight shape the plan was made for: (out, in) or (vocabulary, dim)
    input: Layout = Layout.REPLICATE  # rowwise only may be SHARD
    output: Layout = Layout.REPLICATE  # colwise only may be SHARD


@dataclass(frozen=True, kw_only=True)
class JobPlan:
    """A parallelization strategy plus a placement of every rank onto nodes."""

    strategy: str  # short, e.g. "data-parallel x8" or "hybrid: conv batch-split, fc model-split 4"
    summary: str  # one line for status / printer columns
    workers: tuple[WorkerPlacement, ...]
    predicted_step_s: float | None = None
    baseline_step_s: float | None = None  # plain data parallel with equal shares, same cost model
    reason: str = ""  # why this plan: goes into the `Planned` event
    layers: tuple[dict[str, str], ...] = field(default_factory=tuple)  # per-layer strategy rows (optional)
    executed: Executed = Executed.DATA_PARALLEL  # what the workers run (never a strategy they cannot run)
    tensor_parallel: int = 1  # ranks per tensor-parallel group (divides the GPUs of a pod)
    splits: tuple[ModuleSplit, ...] = ()  # the modules split across each tensor-parallel group
    predicted_memory_bytes_per_gpu: float | None = None  # most loaded GPU under the executed strategy
    memory_fixed_bytes_per_gpu: float | None = None  # model state per GPU (no graph: unknown)
    memory_bytes_per_sample_per_gpu: float | None = None  # activations per sample of a GPU's group
    peak_flops: float | None = None  # summed peak FLOP/s of the plan's GPUs (compute-bound throughput scale)
    search_space: str = "executable"  # "executable" (what the runtime runs) or "pase" (PaSE's full space)


def execution_plan(plan: JobPlan) -> ExecutionPlan:
    """The executed strategy as the workers receive it (the wire contract's sharding map)."""
    return ExecutionPlan(
        tensor_parallel=plan.tensor_parallel,
        modules=tuple(
            ModuleShard(
                module=s.module,
                layer=s.layer,
                kind=s.kind,
                style=str(s.style),
                shape=s.shape,
                input=str(s.input),
                output=str(s.output),
            )
            for s in plan.splits
        ),
    )


def sharding_map(plan: JobPlan) -> dict[str, object]:
    """The wire form of the executed strategy every rank receives (PACELINE_PLAN; see docs/worker.md)."""
    return execution_plan(plan).to_mapping()


def sharding_json(plan: JobPlan) -> str:
    """PACELINE_PLAN: `sharding_map` as compact JSON."""
    return execution_plan(plan).to_json()
