"""`paceline plan` and `paceline graph` subcommands (registered into the main CLI by `add_commands`)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from paceline.plan_types import JobPlan, NodeCapacity, sharding_map
from paceline.planner.cost_models import PaseCostModel
from paceline.planner.devices import GIB, DeviceCatalog, load_catalog
from paceline.planner.executable import PASE
from paceline.planner.graph import GraphError, LayerGraph, with_batch
from paceline.planner.graph_io import dump_graph_yaml, load_graph_file
from paceline.planner.job import layer_rows, load_graph, plan_job, strategy_text
from paceline.planner.placement import PlacementError
from paceline.planner.presets import preset
from paceline.planner.strategy import DoesNotFit, build_space, data_parallel_choice, evaluate, plan_strategy

GPUS_PER_NODE = 8
PASE_NOTE = "PaSE full space (not all executable)"
EXECUTABLE_NOTE = "executable (what the workers run: data parallel, tensor parallel inside pods)"
_POOL = re.compile(r"^(?:(?P<name>[\w.-]+)=)?(?P<type>[\w.-]+):(?P<count>\d+)(?:/(?P<per_node>\d+))?$")


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `plan` and `graph` on the main `paceline` parser."""
    plan = subparsers.add_parser(
        "plan",
        help="plan a parallelization strategy and placement",
        description="Plan a per-layer strategy and worker placement. Example: "
        "paceline plan --model transformer --pool h100:8 --pool t4:8 --batch 64",
    )
    plan.add_argument(
        "-f", "--file", help="TrainingJob YAML (uses spec.model, globalBatchSize, replicas.max, ...)"
    )
    plan.add_argument("--model", help="preset: alexnet, inceptionv3, rnnlm, transformer")
    plan.add_argument("--graph-file", help="layer-graph YAML/JSON file")
    plan.add_argument(
        "--pool",
        action="append",
        default=[],
        metavar="[NAME=]GPU:COUNT[/PER_NODE]",
        help="GPUs available, e.g. h100:8 or fast=NVIDIA-H100-80GB-HBM3:16/8 (repeatable; 8 per node; "
        "default: the GPU nodes of the cluster $KUBECONFIG points at)",
    )
    plan.add_argument("--batch", type=int, help="global batch size (default: the job's or the graph's)")
    plan.add_argument("--workers", type=int, help="worker ranks (default: every GPU, or spec.replicas.max)")
    plan.add_argument("--gpus-per-worker", type=int, help="GPUs per rank (default 1, or spec.gpusPerWorker)")
    plan.add_argument(
        "--cost-model",
        choices=("hetero", "pase"),
        default="hetero",
        help="hetero (default): the strategies the workers can execute, on the given GPUs; "
        "pase: PaSE's full space on identical devices (not all executable)",
    )
    plan.add_argument(
        "-p", "--procs", type=int, help="devices for --cost-model pase (default: GPUs in --pool, or 8)"
    )
    plan.add_argument(
        "--flops", type=float, default=10.0, help="pase: peak TFLOP/s per device (PaSE default 10)"
    )
    plan.add_argument("--bw", type=float, default=16.0, help="pase: bandwidth in GB/s (PaSE default 16)")
    plan.add_argument("--catalog", help="YAML overriding the GPU catalog")
    plan.add_argument("--json", action="store_true", help="print machine-readable JSON")
    plan.set_defaults(func=run_plan)

    graph = subparsers.add_parser(
        "graph",
        help="trace a torch.nn.Module into the layer-graph format",
        description="Trace module:Class (built with no arguments) with torch.fx; print its layer graph.",
    )
    graph.add_argument("target", help="module:Class, e.g. mypkg.models:Net (or a preset name)")
    graph.add_argument("--input-shape", help="comma-separated input shape, batch first, e.g. 32,3,224,224")
    graph.add_argument("-o", "--output", help="write the YAML here instead of stdout")
    graph.set_defaults(func=run_graph)


def run_plan(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        job = _read_job(args.file) if args.file else {}
        graph = _graph_from_args(args, job)
        if args.cost_model == "pase":
            return _plan_pase(args, graph)
        catalog = load_catalog(args.catalog) if args.catalog else DeviceCatalog()
        nodes = parse_pools(args.pool, catalog) if args.pool else _cluster_nodes()
        spec = job.get("spec", {}) if job else {}
        gpw = args.gpus_per_worker or int(spec.get("gpusPerWorker", 1))
        workers = (
            args.workers
            or int((spec.get("replicas") or {}).get("max", 0))
            or sum(n.gpus_free // gpw for n in nodes)
        )
        batch = (
            args.batch or int(spec.get("globalBatchSize", 0)) or (graph.batch_size if graph else 0) or workers
        )
        pools = list((spec.get("placement") or {}).get("pools") or [])
        plan = plan_job(
            graph=graph,
            nodes=nodes,
            workers=workers,
            gpus_per_worker=gpw,
            global_batch=batch,
            allowed_pools=pools,
            catalog=catalog,
        )
    except (GraphError, PlacementError, DoesNotFit, ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    if args.json:
        print(json.dumps(_plan_json(plan, graph), indent=2))
    else:
        _print_plan(plan, graph)
    return 0


def _plan_pase(args: argparse.Namespace, graph: LayerGraph | None) -> int:
    if graph is None:
        raise GraphError("--cost-model pase needs a model: --model, --graph-file or spec.model")
    if args.batch:
        graph = with_batch(graph, args.batch)
    procs = args.procs or (
        sum(n.gpus_free for n in parse_pools(args.pool, DeviceCatalog())) if args.pool else 8
    )
    space = build_space(graph, procs)
    model = PaseCostModel(procs=procs, tflops=args.flops, gbps=args.bw)
    best = plan_strategy(space, model)
    dp = evaluate(space, data_parallel_choice(space), model)
    rows = layer_rows(space, best)
    result = {
        "graph": graph.name,
        "cost_model": "pase",
        "searchSpace": PASE,
        "note": PASE_NOTE,
        "procs": procs,
        "strategy": strategy_text(space, best),
        "cost_s": best.total_seconds,
        "dp_cost_s": dp.total_seconds,
        "pase_cost_flop": best.total_seconds * args.flops * 1e12,
        "speedup": dp.total_seconds / best.total_seconds,
        "search_s": best.search_seconds,
        "layers": list(rows),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    console = Console()
    console.print(_layer_table(rows, f"{graph.name} on {procs} identical devices (PaSE cost model)"))
    console.print(
        f"search space: {PASE_NOTE}\n"
        f"strategy: {result['strategy']}\n"
        f"predicted {best.total_seconds * 1e3:.2f} ms/step vs data parallel "
        f"{dp.total_seconds * 1e3:.2f} ms/step ({result['speedup']:.2f}x); "
        f"PaSE cost {result['pase_cost_flop']:.4g} FLOP; search {best.search_seconds:.2f} s"
    )
    return 0


def _cluster_nodes() -> list[NodeCapacity]:
    """GPU nodes and free GPUs of the cluster $KUBECONFIG points at (what the operator would plan against)."""
    from kubernetes.config import ConfigException

    from paceline.adapters import kube
    from paceline.controller.inventory import gpu_node, gpu_pod, node_inventory

    try:
        gpu_nodes = [n for n in map(gpu_node, kube.list_nodes()) if n is not None]
        nodes = node_inventory(gpu_nodes, [p for p in map(gpu_pod, kube.list_pods()) if p is not None])
    except ConfigException:
        raise PlacementError(
            "no --pool given and no cluster to read nodes from: set KUBECONFIG, or give --pool h100:8"
        ) from None
    if not nodes:
        raise PlacementError("the cluster has no Ready GPU node; give pools with --pool h100:8 --pool t4:8")
    return nodes


def parse_pools(specs: list[str], catalog: DeviceCatalog) -> list[NodeCapacity]:
    """`[NAME=]GPU:COUNT[/PER_NODE]` -> nodes of PER_NODE (default 8) GPUs each."""
    if not specs:
        raise PlacementError("give at least one --pool, e.g. --pool h100:8 --pool t4:8")
    nodes = []
    for spec in specs:
        match = _POOL.match(spec.strip())
        if not match:
            raise PlacementError(f"--pool {spec!r}: expected [NAME=]GPU:COUNT[/PER_NODE], e.g. h100:8")
        kind = catalog.find(match["type"])
        if kind is None:
            known = ", ".join(sorted(t.short for t in catalog.types.values()))
            raise PlacementError(f"--pool {spec!r}: unknown GPU {match['type']!r}; known: {known}")
        count, per_node = int(match["count"]), int(match["per_node"] or GPUS_PER_NODE)
        name = match["name"] or kind.short
        for i in range(0, count, per_node):
            gpus = min(per_node, count - i)
            nodes.append(
                NodeCapacity(
                    name=f"{name}-{i // per_node}",
                    pool=name,
                    gpu_product=kind.product,
                    gpus_allocatable=gpus,
                    gpus_free=gpus,
                )
            )
    return nodes


def _read_job(path: str) -> dict[str, Any]:
    doc = yaml.safe_load(Path(path).read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict):
        raise GraphError(f"{path}: expected a TrainingJob with a `spec` mapping")
    return doc


def _graph_from_args(args: argparse.Namespace, job: dict[str, Any]) -> LayerGraph | None:
    if args.model:
        return preset(args.model)
    if args.graph_file:
        return load_graph_file(args.graph_file)
    model = job.get("spec", {}).get("model") if job else None
    if not model:
        return None
    if "configMapRef" in model:
        raise GraphError(
            "spec.model.configMapRef is read by the operator; locally pass the graph with --graph-file"
        )
    return load_graph(model)


def _layer_table(rows: tuple[dict[str, str], ...] | list[dict[str, str]], title: str) -> Table:
    table = Table(title=title)
    for col in ("layer", "op", "split", "kind", "gpus", "ms"):
        table.add_column(col, justify="right" if col in ("gpus", "ms") else "left")
    for row in rows:
        table.add_row(*(row[c] for c in ("layer", "op", "split", "kind", "gpus", "ms")))
    return table


def _print_plan(plan: JobPlan, graph: LayerGraph | None) -> None:
    console = Console()
    if plan.layers:
        console.print(_layer_table(plan.layers, f"{graph.name if graph else 'model'}: per-layer strategy"))
    if plan.splits:
        console.print(_splits_table(plan))
    workers = Table(title="placement")
    for col in ("rank", "node", "pool", "gpu", "gpus", "batch"):
        workers.add_column(col)
    for w in plan.workers:
        workers.add_row(str(w.rank), w.node, w.pool, w.gpu_product, str(w.gpus), str(w.batch_share))
    console.print(workers)
    console.print(f"search space: {EXECUTABLE_NOTE}")
    console.print(f"executed: {plan.executed} (tensor parallel {plan.tensor_parallel})")
    console.print(f"strategy: {plan.strategy}")
    if plan.predicted_step_s is not None and plan.baseline_step_s is not None:
        console.print(
            f"predicted {plan.predicted_step_s * 1e3:.2f} ms/step vs plain data parallel "
            f"{plan.baseline_step_s * 1e3:.2f} ms/step ({plan.baseline_step_s / plan.predicted_step_s:.2f}x)"
        )
    if plan.predicted_memory_bytes_per_gpu is not None:
        console.print(f"memory: at most {plan.predicted_memory_bytes_per_gpu / GIB:.3g} GiB per GPU")
    console.print(f"summary: {plan.summary}\nreason: {plan.reason}")


def _splits_table(plan: JobPlan) -> Table:
    table = Table(title=f"tensor-parallel modules (TP{plan.tensor_parallel}, in every pod)")
    for col in ("module", "layer", "kind", "style", "shape", "input", "output"):
        table.add_column(col)
    for s in plan.splits:
        shape = "x".join(str(n) for n in s.shape)
        table.add_row(s.module, s.layer, s.kind, str(s.style), shape, str(s.input), str(s.output))
    return table


def _plan_json(plan: JobPlan, graph: LayerGraph | None) -> dict[str, Any]:
    out = asdict(plan)
    out["graph"] = graph.name if graph else None
    out["cost_model"] = "hetero"
    out["searchSpace"] = out.pop("search_space")
    out["tensorParallel"] = out.pop("tensor_parallel")
    out["sharding"] = sharding_map(plan)
    if plan.predicted_step_s and plan.baseline_step_s:
        out["speedup"] = plan.baseline_step_s / plan.predicted_step_s
    return out


def run_graph(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        if ":" in args.target:
            from paceline.planner.fx_trace import trace_target

            shape = tuple(int(x) for x in args.input_shape.split(",")) if args.input_shape else None
            graph = trace_target(args.target, input_shape=shape)
        else:
            graph = preset(args.target)
    except (GraphError, ImportError, AttributeError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    text = dump_graph_yaml(graph)
    if args.output:
        Path(args.output).write_text(text)
        console.print(f"wrote {len(graph.layers)} layers to {args.output}")
    else:
        sys.stdout.write(text)
    return 0
