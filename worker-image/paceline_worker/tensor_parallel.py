"""Execute a plan's tensor-parallel splits with torch.distributed.tensor on a (data x tensor) device mesh.

Splits are Megatron style: a colwise module splits its output features (weight dim 0 of a Linear), a rowwise
module its input features; a colwise output stays sharded only when it feeds a rowwise module directly.
Parameters of split modules become DTensors; the user's optimizer is re-pointed at them. Checkpoints stay
full (unsharded) tensors, so they load into any layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    RowwiseParallel,
    parallelize_module,
)

from .execution_plan import ExecutionPlan, ModuleShard, PlanError
from .topology import Topology

_MODULE_TYPES = {"linear": nn.Linear, "embedding": nn.Embedding}


def check_module(model: nn.Module, plan: ExecutionPlan) -> None:
    """Fail before any collective when the plan does not match the running model (names, types, shapes)."""
    for shard in plan.modules:
        try:
            sub = model.get_submodule(shard.module)
        except AttributeError:
            known = [n for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Embedding)]
            raise PlanError(
                f"the plan splits module {shard.module!r} (layer {shard.layer!r}) but the model has no such "
                f"module; its Linear/Embedding modules are {known[:12]}: regenerate the graph with "
                "`paceline graph` from this model"
            ) from None
        expected = _MODULE_TYPES[shard.kind]
        if not isinstance(sub, expected):
            raise PlanError(
                f"module {shard.module!r} is a {type(sub).__name__}, the plan expects {expected.__name__}"
            )
        weight = sub.weight
        assert isinstance(weight, torch.Tensor)
        shape = tuple(weight.shape)
        if shape != shard.shape:
            raise PlanError(
                f"module {shard.module!r}: weight shape {list(shape)} differs from the planned "
                f"{list(shard.shape)}: the model graph in spec.model was traced from a different model"
            )


def build_mesh(topology: Topology, device_type: str) -> DeviceMesh:
    """The 2-D mesh ("dp", "tp"); every rank must call it (it creates process groups)."""
    return init_device_mesh(
        device_type,
        (topology.data_parallel_size, topology.tensor_parallel),
        mesh_dim_names=("dp", "tp"),
    )


def _style(shard: ModuleShard) -> ParallelStyle:
    if shard.style == "colwise":
        out = Shard(-1) if shard.output == "shard" else Replicate()
        return ColwiseParallel(output_layouts=out, use_local_output=True)
    given = Shard(-1) if shard.input == "shard" else Replicate()
    return RowwiseParallel(input_layouts=given, output_layouts=Replicate(), use_local_output=True)


def broadcast_module(model: nn.Module, *, src: int = 0) -> None:
    """Make every rank's parameters and buffers equal to rank `src`'s (before splitting)."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=src)


def apply_plan(
    model: nn.Module, plan: ExecutionPlan, mesh: DeviceMesh, optimizer: torch.optim.Optimizer
) -> None:
    """Split the planned modules across mesh["tp"] in place and re-point `optimizer` at the new parameters.

    Optimizer state that already exists (a resumed checkpoint) is split like its parameter.
    """
    before = {id(p): name for name, p in model.named_parameters()}
    full = {name: p for name, p in model.named_parameters()}
    parallelize_module(model, mesh["tp"], {s.module: _style(s) for s in plan.modules})
    after = dict(model.named_parameters())
    for group in optimizer.param_groups:
        group["params"] = [after[before[id(p)]] for p in group["params"]]
        kinds = {isinstance(p, DTensor) for p in group["params"]}
        if len(kinds) > 1 and "foreach" in group:
            # one multi-tensor kernel cannot take DTensors and plain tensors together (the default on
            # CUDA): step this group parameter by parameter
            group["foreach"] = False
    moved: dict[Any, Any] = {}
    for old, state in optimizer.state.items():
        name = before.get(id(old))
        if name is None:
            continue
        new = after[name]
        moved[new] = {k: _like(v, full[name], new) for k, v in state.items()}
    optimizer.state.clear()
    optimizer.state.update(moved)


def _like(value: Any, full_param: torch.Tensor, param: torch.Tensor) -> Any:
    """Split a full-size optimizer state tensor the way its parameter is split."""
    if not isinstance(param, DTensor) or not isinstance(value, torch.Tensor):
        return value
    if value.shape != full_param.shape:
        return value
    return _distribute_local(value, param)


def _distribute_local(value: torch.Tensor, like: DTensor) -> DTensor:
    """`value` (full, equal on every rank) as a DTensor laid out like `like`, sliced locally (no comm)."""
    local = value
    mesh = like.device_mesh
    for placement in like.placements:
        if isinstance(placement, Shard):
            size = mesh.size()
            local = local.chunk(size, dim=placement.dim)[mesh.get_local_rank()]
    return DTensor.from_local(local.clone().to(like.device), mesh, like.placements, run_check=False)


def full_tensors(values: Mapping[str, Any]) -> dict[str, Any]:
    """Replace DTensors by their full tensors (a collective over their mesh: call on every rank)."""
    return {k: (full_tensor(v) if isinstance(v, DTensor) else v) for k, v in values.items()}


def full_tensor(value: DTensor) -> torch.Tensor:
    """The whole tensor on every rank. Even shards are gathered with c10d's all_gather over the mesh
    dimension's group: DTensor's own redistribution waits on functional collectives, which crash (SIGSEGV,
    seen with torch 2.11 on an H200) under gloo with CUDA tensors — ranks that share one GPU."""
    local = value.to_local()
    mesh = value.device_mesh
    for mesh_dim, placement in reversed(list(enumerate(value.placements))):  # innermost shard first
        if isinstance(placement, Replicate):
            continue
        size = mesh.size(mesh_dim)
        if not isinstance(placement, Shard) or value.shape[placement.dim] % size:
            return value.full_tensor()  # partial or uneven: DTensor's own path
        parts = [torch.empty_like(local) for _ in range(size)]
        dist.all_gather(parts, local.contiguous(), group=mesh.get_group(mesh_dim))
        local = torch.cat(parts, dim=placement.dim)
    return local


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """optimizer.state_dict() with full tensors (collective)."""
    state = optimizer.state_dict()
    state["state"] = {i: full_tensors(s) for i, s in state["state"].items()}
    return state


def local_gradients(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Each parameter's gradient as a plain local tensor (zeros where no gradient was produced)."""
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        g = p.grad
        grads.append(g.to_local() if isinstance(g, DTensor) else g)
    return grads


def sum_across(grads: list[torch.Tensor], group: dist.ProcessGroup | None) -> None:
    """Sum gradients over `group` in one flat all-reduce, in place."""
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def local_parameter_bytes(model: nn.Module, names: Iterable[str]) -> tuple[int, int]:
    """(bytes this rank holds, bytes of the full tensors) of the named modules' parameters."""
    held = full = 0
    for name in names:
        for p in model.get_submodule(name).parameters():
            local = p.to_local() if isinstance(p, DTensor) else p
            held += local.numel() * local.element_size()
            full += p.numel() * p.element_size()
    return held, full


def placements(model: nn.Module, names: Iterable[str]) -> dict[str, str]:
    """How each named module's weight is actually laid out on this rank, e.g. {"fc1": "shard(0)/2"}."""
    out = {}
    for name in names:
        w = model.get_submodule(name).weight
        if isinstance(w, DTensor):
            parts = [f"shard({p.dim})" if isinstance(p, Shard) else "replicate" for p in w.placements]
            out[name] = f"{'/'.join(parts)}/{w.device_mesh.size()}"
        else:
            out[name] = "replicate"
    return out
