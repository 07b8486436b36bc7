"""A small Python builder for layer graphs, used by the presets and the torch.fx tracer.

Each method appends one layer and returns its name; tensors are referred to by the producing layer's
name (`None` for graph inputs and weights). Shapes are tracked so callers only give what a layer adds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from paceline.planner.graph import GemmRoles, GraphError, Layer, LayerGraph, OpKind, TensorIn, validate

Ref = str | None  # producing layer name, or None for an input tensor


def conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size - kernel + 2 * pad) // stride + 1


@dataclass(kw_only=True)
class GraphBuilder:
    """Appends layers; `shape(ref)` is the output shape of a layer."""

    name: str
    batch_dim: str = "b"
    min_split_size: int = 4
    description: str = ""
    modules_from_names: bool = False  # fc, embedding and weight-einsum layers get module = layer name
    layers: list[Layer] = field(default_factory=list)
    _shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    def build(self) -> LayerGraph:
        return validate(
            LayerGraph(
                name=self.name,
                layers=tuple(self.layers),
                batch_dim=self.batch_dim,
                min_split_size=self.min_split_size,
                description=self.description,
            )
        )

    def shape(self, ref: str) -> tuple[int, ...]:
        return self._shapes[ref]

    def _name(self, kind: str, name: str | None) -> str:
        if name is not None:
            if name in self._shapes:
                raise GraphError(f"duplicate layer name {name!r}")
            return name
        n = self._counts.get(kind, 0) + 1
        self._counts[kind] = n
        return f"{kind}{n}"

    def _module(self, module: str, name: str) -> str:
        return module or (name if self.modules_from_names else "")

    def add(self, layer: Layer) -> str:
        self.layers.append(layer)
        self._shapes[layer.name] = layer.output_shape
        return layer.name

    # --- GEMM-shaped layers -------------------------------------------------------------------------

    def conv(
        self,
        src: Ref,
        in_shape: Sequence[int],
        *,
        out_channels: int,
        kernel: tuple[int, int],
        stride: int = 1,
        pad: tuple[int, int] = (0, 0),
        pointwise: int = 0,
        name: str | None = None,
    ) -> str:
        """2-D convolution as PaSE models it: GEMM with m=(b,h,w), n=n, k=(c,r,s); h and w never split."""
        b, c, h, w = in_shape
        r, s = kernel
        ho, wo = conv_out(h, r, stride, pad[0]), conv_out(w, s, stride, pad[1])
        bd = self.batch_dim
        return self.add(
            Layer(
                name=self._name("conv", name),
                op=OpKind.GEMM,
                dims=((bd, b), ("c", c), ("h", ho), ("w", wo), ("r", r), ("s", s), ("n", out_channels)),
                gemm=GemmRoles(m=(bd, "h", "w"), n=("n",), k=("c", "r", "s")),
                inputs=(TensorIn(source=src, axes=(bd, "c", "h", "w")),),
                output=(bd, "n", "h", "w"),
                fixed=("h", "w"),
                weights=("n", "c", "r", "s"),
                pointwise=pointwise,
            )
        )

    def fc(
        self,
        src: Ref,
        in_shape: Sequence[int],
        units: int,
        *,
        pointwise: int = 0,
        name: str | None = None,
        module: str = "",
    ) -> str:
        """Fully connected layer on the last axis; leading axes are GEMM rows (`module`: its nn.Linear)."""
        lead = [self._dim_letter(i, len(in_shape) - 1) for i in range(len(in_shape) - 1)]
        dims = (*zip(lead, in_shape[:-1], strict=True), ("n", units), ("k", in_shape[-1]))
        name = self._name("fc", name)
        return self.add(
            Layer(
                name=name,
                op=OpKind.GEMM,
                dims=tuple(dims),
                gemm=GemmRoles(m=tuple(lead), n=("n",), k=("k",)),
                inputs=(TensorIn(source=src, axes=(*lead, "k")),),
                output=(*lead, "n"),
                weights=("n", "k"),
                pointwise=pointwise,
                module=self._module(module, name),
            )
        )

    def einsum(
        self,
        equation: str,
        first: tuple[Ref, Sequence[int]],
        second: tuple[Ref, Sequence[int]],
        *,
        weights: bool = False,
        pointwise: int = 0,
        name: str | None = None,
        module: str = "",
    ) -> str:
        """Binary einsum; iteration space = output dims then reduced dims (PaSE's convention)."""
        lhs, out = equation.replace(" ", "").split("->")
        in1, in2 = lhs.split(",")
        sizes: dict[str, int] = {}
        for letters, shape in ((in1, first[1]), (in2, second[1])):
            if len(letters) != len(shape):
                raise GraphError(f"einsum {equation!r}: operand {letters!r} vs shape {list(shape)}")
            for d, n in zip(letters, shape, strict=True):
                if sizes.setdefault(d, n) != n:
                    raise GraphError(f"einsum {equation!r}: dim {d!r} has sizes {sizes[d]} and {n}")
        common = set(in1) & set(in2)
        reduced = "".join(d for d in in1 if d in common and d not in out)
        order = out + reduced
        roles = GemmRoles(
            batch=tuple(d for d in order if d in common and d in out),
            m=tuple(d for d in order if d in in1 and d not in common),
            n=tuple(d for d in order if d in in2 and d not in common),
            k=tuple(reduced),
        )
        name = self._name("einsum", name)
        return self.add(
            Layer(
                name=name,
                op=OpKind.GEMM,
                dims=tuple((d, sizes[d]) for d in order),
                gemm=roles,
                inputs=(
                    TensorIn(source=first[0], axes=tuple(in1)),
                    TensorIn(source=second[0], axes=tuple(in2)),
                ),
                output=tuple(out),
                weights=tuple(in2) if weights else (),
                pointwise=pointwise,
                module=self._module(module, name) if weights else module,
            )
        )

    def embedding(
        self, in_shape: Sequence[int], vocab: int, dim: int, *, name: str | None = None, module: str = ""
    ) -> str:
        """Embedding lookup as PaSE models it: one-hot input times the table (einsum over the vocabulary)."""
        lead = "b" + "lpq"[: len(in_shape) - 1]
        eq = f"{lead}v,ve->{lead}e"
        one_hot, table = (None, (*in_shape, vocab)), (None, (vocab, dim))
        return self.einsum(eq, one_hot, table, weights=True, name=name, module=module)

    def lstm(
        self, src: Ref, in_shape: Sequence[int], *, layers: int, units: int, name: str | None = None
    ) -> str:
        """A whole multi-layer LSTM as one vertex (dims l, s, b, n, k; the sequence dim is never split)."""
        b, seq, k = in_shape
        bd = self.batch_dim
        return self.add(
            Layer(
                name=self._name("lstm", name),
                op=OpKind.LSTM,
                dims=(("l", layers), ("s", seq), (bd, b), ("n", units), ("k", k)),
                inputs=(TensorIn(source=src, axes=(bd, "s", "k")),),
                output=(bd, "s", "n"),
                fixed=("s",),
                weights=("l", "n", "k"),
                weight_scale=8,
            )
        )

    # --- element-wise and reductions ------------------------------------------------------------------

    def _dims_for(self, shape: Sequence[int]) -> tuple[tuple[str, int], ...]:
        return tuple((self._dim_letter(i, len(shape)), n) for i, n in enumerate(shape))

    def _dim_letter(self, i: int, rank: int) -> str:
        return self.batch_dim if i == 0 else f"d{i}"

    def elementwise(
        self,
        srcs: Sequence[Ref],
        shape: Sequence[int],
        *,
        pointwise: int = 0,
        name: str | None = None,
        fixed: Sequence[int] = (),
    ) -> str:
        """Element-wise op on equal-shape tensors; `fixed`: axes it never splits (e.g. the features,
        when it also reads a tensor broadcast over them that the graph does not show, like a bias)."""
        dims = self._dims_for(shape)
        axes = tuple(d for d, _ in dims)
        return self.add(
            Layer(
                name=self._name("add" if len(srcs) > 1 else "act", name),
                op=OpKind.ELEMENTWISE,
                dims=dims,
                inputs=tuple(TensorIn(source=s, axes=axes) for s in srcs),
                output=axes,
                pointwise=pointwise,
                fixed=tuple(axes[a % len(axes)] for a in fixed),
            )
        )

    def norm(
        self, src: Ref, shape: Sequence[int], *, axis: int, name: str | None = None, kind: str = "norm"
    ) -> str:
        dims = self._dims_for(shape)
        axes = tuple(d for d, _ in dims)
        return self.add(
            Layer(
                name=self._name(kind, name),
                op=OpKind.NORM,
                dims=dims,
                inputs=(TensorIn(source=src, axes=axes),),
                output=axes,
                axis=(axes[axis % len(axes)],),
                weights=(axes[1] if axis % len(axes) == 0 and len(axes) > 1 else axes[axis % len(axes)],),
                weight_scale=2,  # scale and bias (per channel for batch norm)
            )
        )

    def softmax(self, src: Ref, shape: Sequence[int], *, axis: int, name: str | None = None) -> str:
        dims = self._dims_for(shape)
        axes = tuple(d for d, _ in dims)
        return self.add(
            Layer(
                name=self._name("softmax", name),
                op=OpKind.SOFTMAX,
                dims=dims,
                inputs=(TensorIn(source=src, axes=axes),),
                output=axes,
                axis=(axes[axis % len(axes)],),
            )
        )

    def softmax_xent(self, src: Ref, shape: Sequence[int], *, name: str | None = None) -> str:
        dims = self._dims_for(shape)
        axes = tuple(d for d, _ in dims)
        return self.add(
            Layer(
                name=self._name("loss", name),
                op=OpKind.SOFTMAX_XENT,
                dims=dims,
                inputs=(TensorIn(source=src, axes=axes),),
                output=axes,
            )
        )

    def pool(
        self,
        src: Ref,
        in_shape: Sequence[int],
        *,
        kernel: tuple[int, int],
        stride: int = 1,
        pad: int = 0,
        name: str | None = None,
    ) -> str:
        """Max/avg pooling; spatial dims may be split, at the price of a halo exchange."""
        b, c, h, w = in_shape
        ho, wo = conv_out(h, kernel[0], stride, pad), conv_out(w, kernel[1], stride, pad)
        bd = self.batch_dim
        axes = (bd, "c", "h", "w")
        return self.add(
            Layer(
                name=self._name("pool", name),
                op=OpKind.POOL,
                dims=((bd, b), ("c", c), ("h", ho), ("w", wo)),
                inputs=(TensorIn(source=src, axes=axes, halo=(0, 0, kernel[0], kernel[1])),),
                output=axes,
            )
        )

    def reduce_mean(
        self, src: Ref, shape: Sequence[int], *, axes: Sequence[int], name: str | None = None
    ) -> str:
        dims = self._dims_for(shape)
        names = tuple(d for d, _ in dims)
        reduced = tuple(names[a] for a in axes)
        return self.add(
            Layer(
                name=self._name("mean", name),
                op=OpKind.REDUCE,
                dims=dims,
                inputs=(TensorIn(source=src, axes=names),),
                output=tuple(n for n in names if n not in reduced),
                axis=reduced,
            )
        )

    # --- layout-only layers --------------------------------------------------------------------------

    def concat(self, srcs: Sequence[str], *, axis: int, name: str | None = None) -> str:
        """Concatenation; the concatenated axis is never split (PaSE's rule)."""
        shapes = [self.shape(s) for s in srcs]
        first = shapes[0]
        for shape in shapes:
            if len(shape) != len(first) or any(
                a != b for i, (a, b) in enumerate(zip(shape, first, strict=True)) if i != axis
            ):
                raise GraphError(f"concat: shapes {shapes} differ outside axis {axis}")
        dims = list(self._dims_for(first))
        dims[axis] = (dims[axis][0], 1)
        axes = tuple(d for d, _ in dims)
        out_sizes = list(first)
        out_sizes[axis] = sum(s[axis] for s in shapes)
        return self.add(
            Layer(
                name=self._name("concat", name),
                op=OpKind.LAYOUT,
                dims=tuple(dims),
                inputs=tuple(TensorIn(source=s, axes=axes) for s in srcs),
                output=axes,
                output_sizes=tuple(out_sizes),
            )
        )

    def flatten(self, src: str, *, name: str | None = None) -> str:
        """Reshape to (batch, rest): PaSE's Ravel + Unravel pair, contiguous splits only."""
        shape = self.shape(src)
        dims = self._dims_for(shape)
        axes = tuple(d for d, _ in dims)
        ravel = self.add(
            Layer(
                name=self._name("ravel", None if name is None else f"{name}_ravel"),
                op=OpKind.LAYOUT,
                dims=dims,
                inputs=(TensorIn(source=src, axes=axes),),
                output=("*".join(axes),),
                contiguous=True,
            )
        )
        out = (shape[0], math.prod(shape[1:]))
        out_dims = self._dims_for(out)
        out_axes = tuple(d for d, _ in out_dims)
        return self.add(
            Layer(
                name=self._name("unravel", name),
                op=OpKind.LAYOUT,
                dims=out_dims,
                inputs=(TensorIn(source=ravel, axes=("*".join(out_axes),)),),
                output=out_axes,
                contiguous=True,
            )
        )

    def stack(self, srcs: Sequence[Ref], shape: Sequence[int], *, name: str | None = None) -> str:
        """Stack equal tensors on a new leading axis `s` (never split)."""
        dims = (("s", 1), *self._dims_for(shape))
        axes = tuple(d for d, _ in dims)
        return self.add(
            Layer(
                name=self._name("stack", name),
                op=OpKind.LAYOUT,
                dims=dims,
                inputs=tuple(TensorIn(source=s, axes=axes[1:]) for s in srcs),
                output=axes,
                output_sizes=(len(srcs), *shape),
            )
        )

    def unstack(self, src: str, *, name: str | None = None) -> str:
        """Split the leading axis into its parts; consumers read one part each (same layout)."""
        shape = self.shape(src)
        dims = (("s", 1), *self._dims_for(shape[1:]))
        axes = tuple(d for d, _ in dims)
        return self.add(
            Layer(
                name=self._name("unstack", name),
                op=OpKind.LAYOUT,
                dims=dims,
                inputs=(TensorIn(source=src, axes=("1", *axes[1:])),),
                output=axes[1:],
            )
        )
