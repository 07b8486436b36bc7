"""The layer graph: each layer is an iteration space (named dimensions) plus the tensors it reads and writes.

A tensor axis is described by an *axis expression* over the layer's dimensions: a dimension name (`b`),
a product of names (`c*h*w`, for flattened axes) or `1` (the axis is never split by this layer).
The split of a tensor axis under a layer configuration is the product of the splits of the named dims.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum


class GraphError(ValueError):
    """A layer graph is malformed; the message says what to fix."""


class OpKind(StrEnum):
    """Cost formula of a layer (PaSE's analytic layer costs)."""

    GEMM = "gemm"  # FC, convolution (no halo), einsum, embedding: roles batch/m/n/k
    LSTM = "lstm"  # whole multi-layer LSTM as one vertex, dims (l, s, b, n, k)
    ELEMENTWISE = "elementwise"
    POOL = "pool"
    NORM = "norm"  # batch norm / layer norm over `axis`
    SOFTMAX = "softmax"
    SOFTMAX_XENT = "softmax_xent"  # softmax + cross-entropy; class axis is the last dim
    REDUCE = "reduce"  # mean/sum over `axis`
    LAYOUT = "layout"  # reshape, concat, stack, transpose: no compute


AXIS_ONE = "1"


def parse_axis(expr: str) -> tuple[str, ...]:
    """`"c*h*w"` -> `("c", "h", "w")`; `"1"` -> `()`."""
    text = expr.strip()
    if text == AXIS_ONE:
        return ()
    return tuple(part.strip() for part in text.split("*"))


@dataclass(frozen=True, kw_only=True)
class GemmRoles:
    """Which dims play which GEMM role: gemm-batch (no reduction), m (rows), n (cols), k (reduced)."""

    batch: tuple[str, ...] = ()
    m: tuple[str, ...]
    n: tuple[str, ...]
    k: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class TensorIn:
    """One input tensor of a layer: its producer (None = graph input or weight) and its axes."""

    source: str | None
    axes: tuple[str, ...]
    halo: tuple[int, ...] = ()  # per axis: ghost cells exchanged when that axis is split (pooling)


@dataclass(frozen=True, kw_only=True)
class Layer:
    """One vertex of the layer graph."""

    name: str
    op: OpKind
    dims: tuple[tuple[str, int], ...]  # ordered iteration space
    output: tuple[str, ...]  # axis expressions of the output tensor
    inputs: tuple[TensorIn, ...] = ()
    output_sizes: tuple[int, ...] = ()  # only where the output is larger than the dims say (concat, stack)
    fixed: tuple[str, ...] = ()  # dims this layer never splits
    gemm: GemmRoles | None = None  # required for gemm
    axis: tuple[str, ...] = ()  # norm / softmax / reduce axis
    weights: tuple[str, ...] = ()  # dims of the weight tensor (memory and parameter count)
    weight_scale: int = (
        1  # weight tensor = scale x product(weights dims), e.g. 8 for an LSTM's 4 gates x [x, h]
    )
    pointwise: int = 0  # fused pointwise ops after the layer (relu, ...)
    contiguous: bool = False  # only configurations that split the dims contiguously (PaSE reshape rule)
    min_split_size: int | None = None  # overrides the graph's rule for this layer
    module: str = ""  # qualified name of the nn.Module computing the layer ("" = none: never tensor-split)

    @property
    def dim_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.dims)

    @property
    def dim_sizes(self) -> tuple[int, ...]:
        return tuple(size for _, size in self.dims)

    def size_of(self, axis_expr: str) -> int:
        sizes = dict(self.dims)
        return math.prod(sizes[d] for d in parse_axis(axis_expr))

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.output_sizes:
            return self.output_sizes
        return tuple(self.size_of(a) for a in self.output)


@dataclass(frozen=True, kw_only=True)
class LayerGraph:
    """A model as PaSE sees it: layers with iteration spaces, edges given by `TensorIn.source`."""

    name: str
    layers: tuple[Layer, ...]
    batch_dim: str = "b"  # dims with this name are the data-parallel (sample) dimension
    min_split_size: int = 4  # a dim of size d may be split e ways only if e divides d and d / e >= this
    description: str = ""
    index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {layer.name: i for i, layer in enumerate(self.layers)})

    def layer(self, name: str) -> Layer:
        return self.layers[self.index[name]]

    @property
    def batch_size(self) -> int | None:
        for layer in self.layers:
            for name, size in layer.dims:
                if name == self.batch_dim:
                    return size
        return None

    def edges(self) -> list[tuple[int, int, int]]:
        """(source layer index, target layer index, target input position) for every tensor between layers."""
        return [
            (self.index[t.source], j, pos)
            for j, layer in enumerate(self.layers)
            for pos, t in enumerate(layer.inputs)
            if t.source is not None
        ]


def with_batch(graph: LayerGraph, batch: int) -> LayerGraph:
    """The same graph with every batch dimension resized to `batch`."""
    if batch <= 0:
        raise GraphError(f"batch size must be positive, got {batch}")
    old = graph.batch_size
    if old is None or old == batch:
        return graph
    layers = []
    for layer in graph.layers:
        dims = tuple((n, batch if n == graph.batch_dim else s) for n, s in layer.dims)
        sizes = layer.output_sizes
        if sizes:
            sizes = tuple(
                batch if graph.batch_dim in parse_axis(a) and len(parse_axis(a)) == 1 else s
                for a, s in zip(layer.output, sizes, strict=True)
            )
        layers.append(replace(layer, dims=dims, output_sizes=sizes))
    return replace(graph, layers=tuple(layers))


def validate(graph: LayerGraph) -> LayerGraph:
    """Check the graph; raise GraphError naming the layer and what to fix. Returns the graph."""
    if not graph.layers:
        raise GraphError(f"graph {graph.name!r} has no layers: add at least one entry under `layers`")
    if graph.min_split_size < 1:
        raise GraphError(f"minSplitSize must be >= 1, got {graph.min_split_size}")
    seen: set[str] = set()
    modules: dict[str, str] = {}
    for pos, layer in enumerate(graph.layers):
        where = f"layer {layer.name!r} (#{pos})"
        if layer.name in seen:
            raise GraphError(f"{where}: duplicate layer name; every layer needs a unique `name`")
        _check_layer(layer, where)
        _check_module(layer, where, modules)
        for t in layer.inputs:
            if t.source is None:
                continue
            if t.source not in graph.index:
                raise GraphError(
                    f"{where}: input from {t.source!r}, which is not a layer of this graph; "
                    "use the name of an earlier layer, or omit `from` for a graph input"
                )
            if t.source not in seen:
                raise GraphError(
                    f"{where}: input from {t.source!r}, which is defined later; "
                    "list layers in an order where producers come before consumers (no cycles)"
                )
            _check_edge(graph.layer(t.source), t, where)
        seen.add(layer.name)
    return graph


def _check_layer(layer: Layer, where: str) -> None:
    names = layer.dim_names
    if not layer.dims:
        raise GraphError(f"{where}: `dims` is empty; give the iteration space, e.g. {{b: 128, n: 4096}}")
    if len(set(names)) != len(names):
        raise GraphError(f"{where}: a dim name repeats in `dims` {list(names)}")
    for name, size in layer.dims:
        if not isinstance(size, int) or size < 1:
            raise GraphError(f"{where}: dim {name!r} has size {size!r}; sizes must be positive integers")

    def known(exprs: Sequence[str], what: str) -> None:
        for expr in exprs:
            for d in parse_axis(expr):
                if d not in names:
                    raise GraphError(
                        f"{where}: {what} uses dim {d!r}, which is not in `dims` {list(names)}; "
                        "add it to `dims` or use '1' for an axis this layer does not split"
                    )

    known(layer.output, "`output`")
    known(layer.fixed, "`fixed`")
    known(layer.axis, "`axis`")
    known(layer.weights, "`weights`")
    for t in layer.inputs:
        known(t.axes, "an input's `axes`")
        if t.halo and len(t.halo) != len(t.axes):
            raise GraphError(f"{where}: `halo` needs one entry per input axis ({len(t.axes)})")
    if layer.output_sizes and len(layer.output_sizes) != len(layer.output):
        raise GraphError(f"{where}: `outputSizes` needs one entry per output axis ({len(layer.output)})")
    if layer.op == OpKind.GEMM:
        roles = layer.gemm
        if roles is None:
            raise GraphError(f"{where}: op gemm needs `gemm: {{m: [...], n: [...], k: [...]}}`")
        known(roles.batch + roles.m + roles.n + roles.k, "`gemm`")
        used = roles.batch + roles.m + roles.n + roles.k
        if len(set(used)) != len(used) or set(used) != set(names):
            raise GraphError(
                f"{where}: `gemm` roles must use every dim exactly once; "
                f"dims {list(names)}, roles use {list(used)}"
            )
        if not roles.m or not roles.n or not roles.k:
            raise GraphError(f"{where}: `gemm` needs at least one dim in each of m, n and k")
    if layer.op == OpKind.LSTM and len(layer.dims) != 5:
        raise GraphError(f"{where}: op lstm needs dims (layers, seq, batch, units_out, units_in), 5 in order")
    if layer.op in (OpKind.NORM, OpKind.SOFTMAX) and len(layer.axis) != 1:
        raise GraphError(f"{where}: op {layer.op.value} needs exactly one `axis`")
    if layer.op == OpKind.REDUCE and not layer.axis:
        raise GraphError(f"{where}: op reduce needs `axis` (the reduced dims)")
    if layer.min_split_size is not None and layer.min_split_size < 1:
        raise GraphError(f"{where}: minSplitSize must be >= 1")


def _check_module(layer: Layer, where: str, modules: dict[str, str]) -> None:
    """`module` is a dotted name (parts: identifiers or indices, as in `named_modules()`), unique."""
    if not layer.module:
        return
    if not all(part.isidentifier() or part.isdigit() for part in layer.module.split(".")):
        raise GraphError(
            f"{where}: `module` {layer.module!r} is not a qualified module name; "
            "use the dotted name from model.named_modules(), e.g. encoder.layers.0.fc1"
        )
    if layer.module in modules:
        raise GraphError(
            f"{where}: `module` {layer.module!r} is also the module of layer {modules[layer.module]!r}; "
            "each module computes one layer"
        )
    modules[layer.module] = layer.name


def _check_edge(src: Layer, t: TensorIn, where: str) -> None:
    shape = src.output_shape
    if len(shape) != len(t.axes):
        raise GraphError(
            f"{where}: input from {src.name!r} has {len(t.axes)} axes {list(t.axes)}, "
            f"but {src.name!r} outputs a rank-{len(shape)} tensor {list(shape)}"
        )
