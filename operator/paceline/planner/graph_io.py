"""Reading and writing the layer-graph format (YAML / JSON documents, camelCase keys)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from paceline.planner.graph import GemmRoles, GraphError, Layer, LayerGraph, OpKind, TensorIn, validate

FORMAT = "paceline.dev/layer-graph/v1"
_LAYER_KEYS = {
    "name",
    "op",
    "dims",
    "output",
    "inputs",
    "outputSizes",
    "fixed",
    "gemm",
    "axis",
    "weights",
    "weightScale",
    "pointwise",
    "contiguous",
    "minSplitSize",
    "module",
}
_GRAPH_KEYS = {"format", "name", "layers", "batchDim", "minSplitSize", "description"}
MAX_LAYERS = 2000  # planning time grows about linearly in layers: ~2 s per 1000 on a 2-core machine


def graph_from_dict(doc: Mapping[str, Any]) -> LayerGraph:
    """Parse and validate a layer-graph document; raises GraphError saying what to fix."""
    if not isinstance(doc, Mapping):
        raise GraphError(f"a layer graph must be a mapping with `layers`, got {type(doc).__name__}")
    unknown = set(doc) - _GRAPH_KEYS
    if unknown:
        raise GraphError(f"unknown graph key(s) {sorted(unknown)}; allowed: {sorted(_GRAPH_KEYS)}")
    fmt = doc.get("format", FORMAT)
    if fmt != FORMAT:
        raise GraphError(f"unsupported format {fmt!r}; this planner reads {FORMAT!r}")
    layers_doc = doc.get("layers")
    if not isinstance(layers_doc, list):
        raise GraphError("`layers` must be a list of layer mappings")
    if len(layers_doc) > MAX_LAYERS:
        raise GraphError(
            f"{len(layers_doc)} layers; the planner takes at most {MAX_LAYERS}: describe repeated blocks "
            "once per kind of layer (e.g. one layer per transformer block, not per operation)"
        )
    layers = tuple(_layer_from_dict(item, pos) for pos, item in enumerate(layers_doc))
    graph = LayerGraph(
        name=str(doc.get("name", "model")),
        layers=layers,
        batch_dim=str(doc.get("batchDim", "b")),
        min_split_size=_int(doc.get("minSplitSize", 4), "minSplitSize", "graph"),
        description=str(doc.get("description", "")),
    )
    return validate(graph)


def graph_to_dict(graph: LayerGraph) -> dict[str, Any]:
    """The document form of a graph (round-trips through graph_from_dict)."""
    return {
        "format": FORMAT,
        "name": graph.name,
        **({"description": graph.description} if graph.description else {}),
        "batchDim": graph.batch_dim,
        "minSplitSize": graph.min_split_size,
        "layers": [_layer_to_dict(layer) for layer in graph.layers],
    }


def load_graph_file(path: str | Path) -> LayerGraph:
    """Read a `.yaml`/`.yml`/`.json` layer-graph file."""
    text = Path(path).read_text()
    try:
        doc = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise GraphError(f"{path}: not valid YAML/JSON: {exc}") from exc
    return graph_from_dict(doc)


# Plain scalars that YAML 1.1 readers (kubectl, Go's yaml) take for booleans, e.g. a dim named `n` or `y`.
_YAML11_BOOLEANS = {"y", "yes", "n", "no", "on", "off", "true", "false"}


class _QuotingDumper(yaml.SafeDumper):
    """Quotes strings a YAML 1.1 reader would turn into booleans, so `kubectl apply` keeps them strings."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "'" if value.lower() in _YAML11_BOOLEANS else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_QuotingDumper.add_representer(str, _represent_str)


def dump_yaml(doc: Any) -> str:
    """YAML that reads back the same in YAML 1.1 and 1.2 readers (PyYAML, kubectl)."""
    return yaml.dump(doc, Dumper=_QuotingDumper, sort_keys=False, default_flow_style=None, width=110)


def dump_graph_yaml(graph: LayerGraph) -> str:
    return dump_yaml(graph_to_dict(graph))


def _int(value: Any, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GraphError(f"{where}: `{key}` must be an integer, got {value!r}")
    return value


def _names(value: Any, key: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise GraphError(f"{where}: `{key}` must be a list of axis names, e.g. [b, n]")
    return tuple(str(v) for v in value)


def _layer_from_dict(item: Any, pos: int) -> Layer:
    if not isinstance(item, Mapping):
        raise GraphError(f"layer #{pos}: must be a mapping, got {type(item).__name__}")
    name = item.get("name")
    where = f"layer {name!r} (#{pos})" if name else f"layer #{pos}"
    if not isinstance(name, str) or not name:
        raise GraphError(f"{where}: `name` is required (a unique string)")
    unknown = set(item) - _LAYER_KEYS
    if unknown:
        raise GraphError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_LAYER_KEYS)}")
    try:
        op = OpKind(str(item.get("op")))
    except ValueError:
        raise GraphError(
            f"{where}: `op` is {item.get('op')!r}; use one of {[k.value for k in OpKind]}"
        ) from None
    dims_doc = item.get("dims")
    if isinstance(dims_doc, Mapping):
        dims = tuple((str(k), v) for k, v in dims_doc.items())
    elif isinstance(dims_doc, list) and all(isinstance(d, list) and len(d) == 2 for d in dims_doc):
        dims = tuple((str(d[0]), d[1]) for d in dims_doc)
    else:
        raise GraphError(f"{where}: `dims` must map dim names to sizes, e.g. {{b: 128, n: 4096, k: 9216}}")
    for dim_name, size in dims:
        _int(size, f"dims.{dim_name}", where)
    if "output" not in item:
        raise GraphError(f"{where}: `output` (the output tensor's axes, e.g. [b, n]) is required")
    inputs = []
    for i, t in enumerate(item.get("inputs") or []):
        if not isinstance(t, Mapping) or "axes" not in t:
            raise GraphError(
                f"{where}: input #{i} must be a mapping with `axes` (and `from` for a layer input)"
            )
        source = t.get("from")
        halo = t.get("halo") or []
        if not isinstance(halo, list):
            raise GraphError(f"{where}: input #{i} `halo` must be a list of integers")
        inputs.append(
            TensorIn(
                source=None if source is None else str(source),
                axes=_names(t["axes"], "axes", where),
                halo=tuple(_int(h, "halo", where) for h in halo),
            )
        )
    gemm = None
    if item.get("gemm") is not None:
        g = item["gemm"]
        if not isinstance(g, Mapping) or not {"m", "n", "k"} <= set(g):
            raise GraphError(f"{where}: `gemm` must give m, n and k dim lists (and optionally batch)")
        gemm = GemmRoles(
            batch=_names(g.get("batch"), "gemm.batch", where),
            m=_names(g["m"], "gemm.m", where),
            n=_names(g["n"], "gemm.n", where),
            k=_names(g["k"], "gemm.k", where),
        )
    min_split = item.get("minSplitSize")
    module = item.get("module", "")
    if not isinstance(module, str):
        raise GraphError(f"{where}: `module` must be a string (a qualified module name), got {module!r}")
    return Layer(
        name=name,
        op=op,
        dims=dims,
        output=_names(item["output"], "output", where),
        inputs=tuple(inputs),
        output_sizes=tuple(_int(s, "outputSizes", where) for s in item.get("outputSizes") or []),
        fixed=_names(item.get("fixed"), "fixed", where),
        gemm=gemm,
        axis=_names(item.get("axis"), "axis", where),
        weights=_names(item.get("weights"), "weights", where),
        weight_scale=_int(item.get("weightScale", 1), "weightScale", where),
        pointwise=_int(item.get("pointwise", 0), "pointwise", where),
        contiguous=bool(item.get("contiguous", False)),
        min_split_size=None if min_split is None else _int(min_split, "minSplitSize", where),
        module=module,
    )


def _layer_to_dict(layer: Layer) -> dict[str, Any]:
    out: dict[str, Any] = {"name": layer.name, "op": layer.op.value, "dims": dict(layer.dims)}
    if layer.module:
        out["module"] = layer.module
    if layer.gemm is not None:
        g = layer.gemm
        out["gemm"] = {
            **({"batch": list(g.batch)} if g.batch else {}),
            "m": list(g.m),
            "n": list(g.n),
            "k": list(g.k),
        }
    if layer.inputs:
        out["inputs"] = [
            {
                **({"from": t.source} if t.source is not None else {}),
                "axes": list(t.axes),
                **({"halo": list(t.halo)} if t.halo else {}),
            }
            for t in layer.inputs
        ]
    out["output"] = list(layer.output)
    optional: dict[str, Any] = {
        "outputSizes": list(layer.output_sizes),
        "fixed": list(layer.fixed),
        "axis": list(layer.axis),
        "weights": list(layer.weights),
        "weightScale": layer.weight_scale if layer.weight_scale != 1 else None,
        "pointwise": layer.pointwise or None,
        "contiguous": layer.contiguous or None,
        "minSplitSize": layer.min_split_size,
    }
    out.update({k: v for k, v in optional.items() if v})
    return out
