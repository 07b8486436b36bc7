"""The executed strategy a rank receives (PACELINE_PLAN): tensor-parallel degree and per-module splits.

Wire form (part of the operator↔worker contract; the operator writes it with `ExecutionPlan.to_json`):

    {"tensorParallel": 2,
     "modules": {"fc1": {"layer": "fc1", "kind": "linear", "style": "colwise", "shape": [4096, 1024],
                         "input": "replicate", "output": "shard"}, ...}}

Keys of `modules` are qualified module names of the user's `nn.Module`. Pure: no torch here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("linear", "embedding")
STYLES = ("colwise", "rowwise")
LAYOUTS = ("replicate", "shard")
_QUALIFIED = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


class PlanError(ValueError):
    """A plan this runtime cannot execute; the message names the module and what to fix."""


@dataclass(frozen=True, kw_only=True)
class ModuleShard:
    """How one module is split across its tensor-parallel group."""

    module: str
    layer: str
    kind: str  # linear | embedding
    style: str  # colwise | rowwise
    shape: tuple[int, int]  # weight shape the plan was made for
    input: str = "replicate"
    output: str = "replicate"

    @property
    def weight_dim(self) -> int:
        """The weight dim split across the group (Linear weight is (out, in), Embedding is (vocab, dim))."""
        if self.kind == "linear":
            return 0 if self.style == "colwise" else 1
        return 1 if self.style == "colwise" else 0

    @property
    def bias_sharded(self) -> bool:
        """A colwise Linear's bias is split with its output features; a rowwise bias is replicated."""
        return self.kind == "linear" and self.style == "colwise"


@dataclass(frozen=True, kw_only=True)
class ExecutionPlan:
    tensor_parallel: int = 1
    modules: tuple[ModuleShard, ...] = field(default_factory=tuple)

    @property
    def hybrid(self) -> bool:
        return self.tensor_parallel > 1 and bool(self.modules)

    def to_mapping(self) -> dict[str, Any]:
        """The wire form `parse_plan` reads (the operator writes it from its plan)."""
        return {
            "tensorParallel": self.tensor_parallel,
            "modules": {
                s.module: {
                    "layer": s.layer,
                    "kind": s.kind,
                    "style": s.style,
                    "shape": list(s.shape),
                    "input": s.input,
                    "output": s.output,
                }
                for s in self.modules
            },
        }

    def to_json(self) -> str:
        """PACELINE_PLAN's value: `to_mapping` as compact JSON."""
        return json.dumps(self.to_mapping(), separators=(",", ":"), sort_keys=True)

    def check_world(self, *, local_world_size: int) -> None:
        """The tensor-parallel group must fit inside one pod."""
        if local_world_size % self.tensor_parallel:
            raise PlanError(
                f"tensorParallel={self.tensor_parallel} does not divide the {local_world_size} "
                "ranks of a pod (LOCAL_WORLD_SIZE); a tensor-parallel group must stay inside one pod"
            )


DATA_PARALLEL = ExecutionPlan()


def _shard(name: str, doc: Any, tp: int) -> ModuleShard:
    where = f"plan module {name!r}"
    if not _QUALIFIED.match(name):
        raise PlanError(f"{where}: not a qualified module name like 'encoder.fc1'")
    if not isinstance(doc, Mapping):
        raise PlanError(f"{where}: must be an object")
    kind, style = doc.get("kind"), doc.get("style")
    if kind not in KINDS:
        raise PlanError(f"{where}: kind {kind!r}; use one of {list(KINDS)}")
    if style not in STYLES:
        raise PlanError(f"{where}: style {style!r}; use one of {list(STYLES)}")
    shape = doc.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise PlanError(f"{where}: shape must be two positive integers, got {shape!r}")
    layouts = {k: doc.get(k, "replicate") for k in ("input", "output")}
    if any(v not in LAYOUTS for v in layouts.values()):
        raise PlanError(f"{where}: input/output must be one of {list(LAYOUTS)}, got {layouts}")
    if (style == "colwise" and layouts["input"] != "replicate") or (
        style == "rowwise" and layouts["output"] != "replicate"
    ):
        raise PlanError(
            f"{where}: a {style} module may shard only its {'output' if style == 'colwise' else 'input'}"
        )
    shard = ModuleShard(
        module=name,
        layer=str(doc.get("layer") or name),
        kind=kind,
        style=style,
        shape=(shape[0], shape[1]),
        input=layouts["input"],
        output=layouts["output"],
    )
    if shard.shape[shard.weight_dim] % tp:
        raise PlanError(
            f"{where} (layer {shard.layer!r}): {style} split of weight dim {shard.weight_dim} "
            f"(size {shard.shape[shard.weight_dim]}) does not divide by tensorParallel={tp}"
        )
    return shard


def plan_from_mapping(doc: Mapping[str, Any]) -> ExecutionPlan:
    """Validate the wire form; raises PlanError naming the offending module."""
    tp = doc.get("tensorParallel", 1)
    if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
        raise PlanError(f"tensorParallel must be an integer >= 1, got {tp!r}")
    modules = doc.get("modules") or {}
    if not isinstance(modules, Mapping):
        raise PlanError("modules must map qualified module names to their split")
    if modules and tp == 1:
        raise PlanError("modules are split but tensorParallel is 1")
    return ExecutionPlan(
        tensor_parallel=tp, modules=tuple(_shard(str(n), d, tp) for n, d in sorted(modules.items()))
    )


def parse_plan(text: str | None) -> ExecutionPlan:
    """PACELINE_PLAN's value; empty or unset means plain data parallel."""
    if not text:
        return DATA_PARALLEL
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"PACELINE_PLAN is not valid JSON: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise PlanError("PACELINE_PLAN must be a JSON object")
    return plan_from_mapping(doc)
