"""The executable space: the strategies the worker runtime can run, and how a chosen one is described.

A job with tensor-parallel degree t on p GPUs forms D = p / t data-parallel groups of t consecutive ranks
(inside one pod). Every layer splits its batch D ways; a layer is replicated in its group, or, when a
Linear/Embedding module computes it, split Megatron style: colwise (output features) or rowwise (input
features). A colwise output stays sharded only when its single consumer is a rowwise layer reading it
directly; the runtime all-gathers it otherwise, which is the layout-transition cost on that edge.
"""

from __future__ import annotations

from functools import partial

from paceline.plan_types import Layout, ModuleSplit, SplitStyle
from paceline.planner.configs import executable_configs, module_dims
from paceline.planner.graph import Layer, LayerGraph
from paceline.planner.strategy import SearchSpace, Strategy, build_space

EXECUTABLE = "executable"
PASE = "pase"


def divisors(n: int) -> list[int]:
    """The positive divisors of n, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def consumers(graph: LayerGraph) -> list[list[tuple[int, int]]]:
    """Per layer: (consumer layer index, input position) of every edge leaving it."""
    out: list[list[tuple[int, int]]] = [[] for _ in graph.layers]
    for src, dst, pos in graph.edges():
        out[src].append((dst, pos))
    return out


def executable_space(graph: LayerGraph, *, procs: int, tensor_parallel: int) -> SearchSpace | None:
    """The executable search space on `procs` GPUs, or None when some layer's batch is below D = p / t.

    Colwise is offered only for layers with exactly one consumer: that is where the edge cost sees
    whether the output stays sharded (paired with a rowwise consumer) or is all-gathered.
    """
    if tensor_parallel < 1 or procs % tensor_parallel:
        raise ValueError(f"tensor parallel degree {tensor_parallel} must divide the {procs} GPUs")
    groups = procs // tensor_parallel
    if any(dict(layer.dims).get(graph.batch_dim, groups) < groups for layer in graph.layers):
        return None
    make = partial(
        executable_configs, batch_dim=graph.batch_dim, data_groups=groups, tensor_parallel=tensor_parallel
    )
    single = {layer.name: len(uses) == 1 for layer, uses in zip(graph.layers, consumers(graph), strict=True)}
    return build_space(graph, procs, configs_of=lambda layer: make(layer, colwise=single[layer.name]))


def split_style(layer: Layer, config: tuple[int, ...]) -> SplitStyle | None:
    """Colwise / rowwise for a tensor-split module layer's configuration; None when replicated."""
    dims = module_dims(layer)
    if dims is None:
        return None
    split = dict(zip(layer.dim_names, config, strict=True))
    if split[dims.out_dim] > 1:
        return SplitStyle.COLWISE
    if split[dims.in_dim] > 1:
        return SplitStyle.ROWWISE
    return None


def module_splits(space: SearchSpace, strategy: Strategy) -> tuple[ModuleSplit, ...]:
    """One ModuleSplit per tensor-split layer of `strategy`, with Megatron colwise -> rowwise pairing."""
    graph = space.graph
    styles = [split_style(layer, cfg) for layer, cfg in zip(graph.layers, strategy.configs, strict=True)]
    shard_out: set[int] = set()
    shard_in: set[int] = set()
    for i, uses in enumerate(consumers(graph)):
        if styles[i] == SplitStyle.COLWISE and len(uses) == 1:
            dst, pos = uses[0]
            if styles[dst] == SplitStyle.ROWWISE and pos == 0:
                shard_out.add(i)
                shard_in.add(dst)
    return tuple(
        _module_split(layer, style, shard_in=i in shard_in, shard_out=i in shard_out)
        for i, (layer, style) in enumerate(zip(graph.layers, styles, strict=True))
        if style is not None
    )


def _module_split(layer: Layer, style: SplitStyle, *, shard_in: bool, shard_out: bool) -> ModuleSplit:
    dims = module_dims(layer)
    assert dims is not None
    out_size, in_size = layer.size_of(dims.out_dim), layer.size_of(dims.in_dim)
    shape = (out_size, in_size) if dims.kind == "linear" else (in_size, out_size)
    return ModuleSplit(
        module=layer.module,
        layer=layer.name,
        kind=dims.kind,
        style=style,
        shape=shape,
        input=Layout.SHARD if shard_in else Layout.REPLICATE,
        output=Layout.SHARD if shard_out else Layout.REPLICATE,
    )
