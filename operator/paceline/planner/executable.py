"""The executable space: the strategies the worker runtime can run, and how a chosen one is described.

A job with tensor-parallel degree t on p GPUs forms D = p / t data-parallel groups of t consecutive ranks
(inside one pod). Every layer splits its batch D ways; a layer is replicated in its group, or, when a
Linear/Embedding module computes it, split Megatron style: colwise (output features) or rowwise (input
features). A colwise output stays sharded only when its single consumer is a rowwise layer reading it
directly, or a chain of single-input, single-consumer elementwise layers (an activation) that ends in
one: those run feature-split on the local shards. The runtime all-gathers a colwise output otherwise,
which is the layout-transition cost on that edge; it cannot gather or scatter at an elementwise layer,
so a feature-split elementwise layer next to anything else is forbidden (infinite transition).
Embeddings cost what the runtime's index gather costs (`gather_terms`), not PaSE's one-hot GEMM.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np

from paceline.plan_types import Layout, ModuleSplit, SplitStyle
from paceline.planner.configs import (
    axis_splits,
    executable_configs,
    feature_dim,
    gemm_dims,
    keys_of,
    module_dims,
)
from paceline.planner.graph import Layer, LayerGraph
from paceline.planner.layer_terms import gather_terms
from paceline.planner.strategy import EdgeSpace, LayerSpace, SearchSpace, Strategy, build_space

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


def pass_through_layers(graph: LayerGraph, tensor_parallel: int) -> set[int]:
    """Indices of the elementwise layers that may run feature-split: `feature_dim` divisible by t, one
    consumer, on a chain of such layers from a colwise-capable layer (a module with one consumer) to a
    rowwise-capable one (a module reading the chain's output as its input)."""
    t = tensor_parallel
    if t <= 1:
        return set()
    uses = consumers(graph)

    def candidate(i: int) -> bool:
        layer = graph.layers[i]
        last = feature_dim(layer, batch_dim=graph.batch_dim)
        return last is not None and len(uses[i]) == 1 and layer.size_of(last) % t == 0

    def colwise_capable(i: int) -> bool:
        dims = module_dims(graph.layers[i])
        return dims is not None and len(uses[i]) == 1 and graph.layers[i].size_of(dims.out_dim) % t == 0

    def rowwise_capable(i: int, pos: int) -> bool:
        dims = module_dims(graph.layers[i])
        return dims is not None and pos == 0 and graph.layers[i].size_of(dims.in_dim) % t == 0

    fed: set[int] = set()
    for i in range(len(graph.layers)):  # producers come first
        source = graph.layers[i].inputs[0].source if candidate(i) else None
        if source is not None and (graph.index[source] in fed or colwise_capable(graph.index[source])):
            fed.add(i)
    drained: set[int] = set()
    for i in sorted(fed, reverse=True):
        dst, pos = uses[i][0]
        if dst in drained or rowwise_capable(dst, pos):
            drained.add(i)
    return drained


def executable_space(graph: LayerGraph, *, procs: int, tensor_parallel: int) -> SearchSpace | None:
    """The executable search space on `procs` GPUs, or None when some layer's batch is below D = p / t.

    Colwise is offered only for layers with exactly one consumer: that is where the edge cost sees
    whether the output stays sharded (paired with a rowwise consumer, directly or through feature-split
    elementwise layers) or is all-gathered. Transitions the runtime cannot make are infinite.
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
    through = {graph.layers[i].name for i in pass_through_layers(graph, tensor_parallel)}
    space = build_space(
        graph,
        procs,
        configs_of=lambda layer: make(layer, colwise=single[layer.name], feature=layer.name in through),
    )
    layers = tuple(_gathered(layer, ls) for layer, ls in zip(graph.layers, space.layers, strict=True))
    edges = tuple(_forbid_reshards(space, e) for e in space.edges)
    return replace(space, layers=layers, edges=edges)


def _gathered(layer: Layer, ls: LayerSpace) -> LayerSpace:
    """An embedding layer's space with the runtime's gather cost in place of PaSE's one-hot GEMM."""
    dims = gemm_dims(layer)
    if dims is None or dims.kind != "embedding":
        return ls
    return replace(ls, terms=gather_terms(ls.terms, layer, ls.configs, vocab_dim=dims.in_dim))


def is_feature_split(layer: Layer, config: tuple[int, ...] | np.ndarray, *, batch_dim: str) -> bool:
    """Whether `config` runs an elementwise layer on feature shards (its last dim split)."""
    last = feature_dim(layer, batch_dim=batch_dim)
    return last is not None and int(config[layer.dim_names.index(last)]) > 1


def _layouts(layer: Layer, configs: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
    return keys_of(axis_splits(layer, configs, axes))[0]


def _forbid_reshards(space: SearchSpace, e: EdgeSpace) -> EdgeSpace:
    """Infinite words where a feature-split elementwise layer would need a gather or a scatter: its
    input must arrive in its own sharded layout, and its output must be read in that layout."""
    graph = space.graph
    src_layer, dst_layer = graph.layers[e.src], graph.layers[e.dst]
    src_ls, dst_ls = space.layers[e.src], space.layers[e.dst]
    in_keys = dst_ls.in_keys[e.position]
    assert in_keys is not None
    src_rows = _layouts(src_layer, src_ls.configs, src_layer.output)
    dst_rows = _layouts(dst_layer, dst_ls.configs, dst_layer.inputs[e.position].axes)
    bad = np.zeros(e.words.shape, dtype=bool)
    for i, cfg in enumerate(dst_ls.configs):  # a feature-split consumer: the producer must hold its shard
        if is_feature_split(dst_layer, cfg, batch_dim=graph.batch_dim):
            have = np.all(src_rows == dst_rows[in_keys[i]], axis=1)
            bad[:, in_keys[i]] |= ~have
    for i, cfg in enumerate(src_ls.configs):  # a feature-split producer: the consumer must read its shard
        if is_feature_split(src_layer, cfg, batch_dim=graph.batch_dim):
            need = np.all(dst_rows == src_rows[src_ls.out_keys[i]], axis=1)
            bad[src_ls.out_keys[i], :] |= ~need
    if not bad.any():
        return e
    return replace(e, words=np.where(bad, np.inf, e.words))


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


def pass_through(space: SearchSpace, strategy: Strategy) -> dict[int, int]:
    """The feature-split elementwise layers of `strategy`, each mapped to the colwise layer whose shard
    it carries. Raises ValueError when one is not between a colwise and a rowwise layer (only such
    chains run: the runtime cannot gather or scatter at an elementwise layer)."""
    graph = space.graph
    uses = consumers(graph)
    split = [
        is_feature_split(layer, cfg, batch_dim=graph.batch_dim)
        for layer, cfg in zip(graph.layers, strategy.configs, strict=True)
    ]
    head: dict[int, int] = {}
    for i, layer in enumerate(graph.layers):
        if not split[i]:
            continue
        source = layer.inputs[0].source
        assert source is not None
        src = graph.index[source]
        style = split_style(graph.layers[src], strategy.configs[src])
        if split[src]:
            head[i] = head[src]
        elif style == SplitStyle.COLWISE and len(uses[src]) == 1:
            head[i] = src
        else:
            raise ValueError(f"layer {layer.name!r} runs feature-split, but {source!r} is not colwise")
        (dst, pos), *more = uses[i]
        rowwise = split_style(graph.layers[dst], strategy.configs[dst]) == SplitStyle.ROWWISE and pos == 0
        if more or not (split[dst] or rowwise):
            raise ValueError(f"layer {layer.name!r} runs feature-split, but it does not feed a rowwise layer")
    return head


def module_splits(space: SearchSpace, strategy: Strategy) -> tuple[ModuleSplit, ...]:
    """One ModuleSplit per tensor-split layer of `strategy`, with Megatron colwise -> rowwise pairing
    (directly, or through feature-split elementwise layers)."""
    graph = space.graph
    styles = [split_style(layer, cfg) for layer, cfg in zip(graph.layers, strategy.configs, strict=True)]
    through = pass_through(space, strategy)
    shard_out: set[int] = set(through.values())
    shard_in: set[int] = set()
    for i, uses in enumerate(consumers(graph)):
        if (styles[i] == SplitStyle.COLWISE or i in through) and len(uses) == 1:
            dst, pos = uses[0]
            if styles[dst] == SplitStyle.ROWWISE and pos == 0:
                shard_out.add(through.get(i, i))
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
