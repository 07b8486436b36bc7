"""Trace a user's torch.nn.Module with torch.fx into the layer-graph format.

Supported: Linear, Conv2d, BatchNorm/LayerNorm/GroupNorm, pooling (incl. adaptive average to 1x1),
Embedding, Flatten/view/reshape to (batch, features), Softmax, matmul, element-wise modules and functions
(activations, dropout, add, mul). A softmax-cross-entropy layer is appended to the model's output.
Anything else raises GraphError naming the node, so the user knows what to describe by hand.
"""

from __future__ import annotations

import importlib
import math
import operator
from collections.abc import Callable
from typing import Any

from paceline.planner.builder import GraphBuilder
from paceline.planner.graph import GraphError, LayerGraph

Shape = tuple[int, ...]


def trace_target(target: str, *, input_shape: Shape | None = None) -> LayerGraph:
    """Import `module:Class`, construct it without arguments and trace it."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise GraphError(f"expected module:Class, got {target!r}")
    cls = getattr(importlib.import_module(module_name), attr)
    try:
        model = cls()
    except TypeError as exc:
        raise GraphError(f"{target}: the class must be constructible without arguments ({exc})") from exc
    shape = input_shape or getattr(model, "example_input_shape", None)
    if shape is None:
        raise GraphError(
            f"{target}: give --input-shape (batch first), or set `example_input_shape` on the model"
        )
    return trace_module(model, tuple(shape), name=attr.lower())


def trace_module(model: Any, input_shape: Shape, *, name: str = "model") -> LayerGraph:
    """Layer graph of `model` for one input of `input_shape` (batch dim first)."""
    import torch
    from torch import fx, nn
    from torch.fx.passes.shape_prop import ShapeProp

    traced = fx.symbolic_trace(model)
    dtype = torch.long if _takes_ids(model) else torch.float32
    example = torch.zeros(input_shape, dtype=dtype)
    ShapeProp(traced).propagate(example)
    g = GraphBuilder(name=name, description=f"traced from {type(model).__name__} with torch.fx")
    refs: dict[str, tuple[str | None, Shape]] = {}
    modules = dict(traced.named_modules())
    elementwise_mods = (
        nn.ReLU,
        nn.GELU,
        nn.SiLU,
        nn.Tanh,
        nn.Sigmoid,
        nn.Dropout,
        nn.Identity,
        nn.LeakyReLU,
        nn.ReLU6,
        nn.Hardswish,
    )
    elementwise_fns: set[Callable[..., Any]] = {
        operator.add,
        operator.mul,
        operator.sub,
        operator.truediv,
        torch.add,
        torch.mul,
        torch.relu,
        torch.tanh,
        torch.sigmoid,
        nn.functional.relu,
        nn.functional.gelu,
        nn.functional.silu,
        nn.functional.dropout,
    }
    elementwise_methods = {"relu", "tanh", "sigmoid", "add", "mul", "contiguous"}
    last: tuple[str | None, Shape] | None = None
    for node in traced.graph.nodes:
        if node.op == "placeholder":
            refs[node.name] = (None, _shape(node))
            continue
        if node.op == "output":
            out = node.args[0]
            last = refs[out.name] if hasattr(out, "name") else last
            continue
        if node.op == "get_attr":
            refs[node.name] = (None, _shape(node))
            continue
        tensors = [refs[a.name] for a in node.args if hasattr(a, "name") and a.name in refs]
        shape = _shape(node)
        label = node.name
        if node.op == "call_module":
            mod = modules[node.target]
            src, in_shape = tensors[0]
            if isinstance(mod, nn.Linear):
                ref = g.fc(src, in_shape, mod.out_features, name=label, module=str(node.target))
            elif isinstance(mod, nn.Conv2d):
                if mod.groups != 1:
                    raise GraphError(f"{label}: grouped convolution (groups={mod.groups}) is not supported")
                pad = mod.padding if isinstance(mod.padding, tuple) else (0, 0)
                ref = g.conv(
                    src,
                    in_shape,
                    out_channels=mod.out_channels,
                    kernel=_pair(mod.kernel_size),
                    stride=_pair(mod.stride)[0],
                    pad=_pair(pad),
                    name=label,
                )
            elif isinstance(mod, nn.BatchNorm1d | nn.BatchNorm2d):
                ref = g.norm(src, in_shape, axis=0, name=label)
            elif isinstance(mod, nn.LayerNorm | nn.GroupNorm):
                ref = g.norm(src, in_shape, axis=-1, name=label)
            elif isinstance(mod, nn.MaxPool2d | nn.AvgPool2d):
                ref = g.pool(
                    src,
                    in_shape,
                    kernel=_pair(mod.kernel_size),
                    stride=_pair(mod.stride or mod.kernel_size)[0],
                    pad=_pair(mod.padding)[0],
                    name=label,
                )
            elif isinstance(mod, nn.AdaptiveAvgPool2d) and math.prod(shape[2:]) == 1:
                ref = g.reduce_mean(src, in_shape, axes=(2, 3), name=label)
            elif isinstance(mod, nn.Embedding):
                ref = g.embedding(
                    in_shape, mod.num_embeddings, mod.embedding_dim, name=label, module=str(node.target)
                )
            elif isinstance(mod, nn.Flatten):
                ref = _flatten(g, src, in_shape, shape, label)
            elif isinstance(mod, nn.Softmax):
                ref = g.softmax(src, in_shape, axis=mod.dim if mod.dim is not None else -1, name=label)
            elif isinstance(mod, elementwise_mods):
                ref = _elementwise(g, tensors, shape, label)
            else:
                raise GraphError(
                    f"{label}: module {type(mod).__name__} is not supported; describe it in YAML"
                )
        elif node.target in elementwise_fns or (
            node.op == "call_method" and node.target in elementwise_methods
        ):
            if not tensors:
                continue
            ref = _elementwise(g, tensors, shape, label)
        elif node.target in (torch.flatten,) or (
            node.op == "call_method" and node.target in ("view", "reshape", "flatten")
        ):
            src, in_shape = tensors[0]
            ref = _flatten(g, src, in_shape, shape, label)
        elif node.target in (nn.functional.softmax, torch.softmax) or (
            node.op == "call_method" and node.target == "softmax"
        ):
            src, in_shape = tensors[0]
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else -1)
            ref = g.softmax(src, in_shape, axis=int(dim), name=label)
        elif node.target in (torch.matmul, operator.matmul) and len(tensors) == 2:
            ref = _matmul(g, tensors, label)
        elif node.op == "call_method" and node.target in ("size", "dim"):
            continue
        else:
            raise GraphError(f"{label}: operation {node.target!r} is not supported; describe it in YAML")
        refs[node.name] = (ref, g.shape(ref) if ref else shape)
    if last is None or last[0] is None:
        raise GraphError("the traced model has no layers")
    g.softmax_xent(last[0], last[1], name="loss")
    return g.build()


def _takes_ids(model: Any) -> bool:
    from torch import nn

    first = next((m for m in model.modules() if not list(m.children())), None)
    return isinstance(first, nn.Embedding)


def _shape(node: Any) -> Shape:
    meta = node.meta.get("tensor_meta")
    return tuple(int(s) for s in meta.shape) if meta is not None and hasattr(meta, "shape") else ()


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, tuple | list) else (int(value), int(value))


def _elementwise(g: GraphBuilder, tensors: list[tuple[str | None, Shape]], shape: Shape, label: str) -> str:
    """Operands of the output's shape are the inputs; one broadcast over the last (feature) axis, such as
    a bias parameter, is not shown, so that axis is fixed (it cannot run on a feature shard)."""
    same = [ref for ref, s in tensors if s == shape]
    broadcast = any(s != shape and s and s[-1] > 1 for _, s in tensors)
    fixed = (-1,) if broadcast and shape else ()
    return g.elementwise(same or [tensors[0][0]], shape, pointwise=1, name=label, fixed=fixed)


def _flatten(g: GraphBuilder, src: str | None, in_shape: Shape, shape: Shape, label: str) -> str:
    if shape == in_shape:
        if src is None:
            raise GraphError(f"{label}: reshape of a graph input is not supported")
        return src
    if len(shape) != 2 or shape[0] != in_shape[0] or src is None:
        raise GraphError(
            f"{label}: only reshapes to (batch, features) are supported, got {in_shape} -> {shape}"
        )
    return g.flatten(src, name=label)


def _matmul(g: GraphBuilder, tensors: list[tuple[str | None, Shape]], label: str) -> str:
    (a, sa), (b, sb) = tensors
    if len(sa) != len(sb) or len(sa) < 2:
        raise GraphError(f"{label}: matmul needs operands of equal rank >= 2, got {sa} and {sb}")
    lead = "bcdf"[: len(sa) - 2]
    eq = f"{lead}mk,{lead}kn->{lead}mn"
    return g.einsum(eq, (a, sa), (b, sb), name=label)
