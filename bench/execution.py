"""Does what runs match the plan? 2 pods x 2 ranks (torchrun via the pod launcher, gloo on CPU) train the
MLP the planner split; the same job runs data parallel for comparison.

Run: .venv/bin/python bench/execution.py   (progress on stderr; the last stdout line is one JSON object)

grad_rel_diff: largest relative difference between the gradient every step of the hybrid job produced
  (gathered from the splits) and single-process SGD's on the same global batches (20 steps, unequal shares).
local_ranks_used: ranks that trained / GPUs the pods asked for.
tp_param_bytes_ratio: bytes of the split modules' parameters one rank holds ÷ their full size (worst rank).
executed_matches_plan: every rank's actual parameter placements (from its modules' DTensors) equal what the
  plan says (colwise Linear → weight shard(0), rowwise → shard(1), over the tensor-parallel group).
step_s: median seconds per step measured here (CPU, 4 processes on this machine's cores) for the planned
  hybrid and for plain data parallel; predicted_step_s: the planner's prediction for the GPUs it planned
  (2 nodes x 2 A100). No goal on CPU speed: CPU cores are not A100s; on GPUs the ratio is the goal.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tp_pods import (
    REPO,
    global_batches,
    logs,
    relative_difference,
    replay,
    results,
    run_pods,
)

sys.path.insert(0, str(REPO / "operator"))
import torch

from _tp_worker import make_model
from paceline.plan_types import JobPlan, NodeCapacity, sharding_map
from paceline.planner import plan_job
from paceline.planner.fx_trace import trace_module

SIZES = [64, 1024, 64, 10]
PODS, RANKS_PER_POD, BATCH, SAMPLES = 2, 2, 128, 4096
A100 = "NVIDIA-A100-SXM4-80GB"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def plan() -> JobPlan:
    graph = trace_module(make_model(SIZES), (BATCH, SIZES[0]), name="mlp")
    nodes = [
        NodeCapacity(name=f"a100-{i}", pool="a100", gpu_product=A100, gpus_allocatable=2, gpus_free=2)
        for i in range(PODS)
    ]
    return plan_job(graph=graph, nodes=nodes, workers=PODS, gpus_per_worker=RANKS_PER_POD, global_batch=BATCH)


def expected_placement(split: dict[str, Any], tp: int) -> str:
    dim = {("linear", "colwise"): 0, ("linear", "rowwise"): 1, ("embedding", "colwise"): 1}.get(
        (split["kind"], split["style"]), 0
    )
    return f"shard({dim})/{tp}"


def run(
    out: Path, sharding: dict[str, Any], *, steps: int, shares: list[int], extra: list[str]
) -> list[dict]:
    args = [
        "--sizes",
        ",".join(map(str, SIZES)),
        "--samples",
        str(SAMPLES),
        "--max-steps",
        str(steps),
        *extra,
    ]
    codes = run_pods(out, shares=shares, ranks_per_pod=RANKS_PER_POD, plan=sharding, args=args)
    if codes != [0] * PODS:
        raise SystemExit(f"pods exited {codes}\n{logs(out)}")
    return results(out, PODS * RANKS_PER_POD)


def median_step(ranks: list[dict], warmup: int = 5) -> float:
    return statistics.median(ranks[0]["stepSeconds"][warmup:])


def main() -> None:
    planned = plan()
    sharding = sharding_map(planned)
    log(f"plan: {planned.strategy} (executed {planned.executed}); sharding {json.dumps(sharding)}")
    tp = planned.tensor_parallel
    with tempfile.TemporaryDirectory(prefix="paceline-execution-") as tmp:
        root = Path(tmp)
        log("hybrid, 20 steps with unequal shares, gradients recorded ...")
        ranks = run(root / "grads", sharding, steps=20, shares=[48, 80], extra=["--record-grads"])
        _, expected = replay(global_batches(ranks), sizes=SIZES, samples=SAMPLES)
        recorded = torch.load(root / "grads" / "grads.pt")
        grad_diff = max(relative_difference(g, e) for g, e in zip(recorded, expected, strict=True))
        trained = sum(1 for r in ranks if r["records"])
        ratio = (
            max(r["splitBytes"]["held"] / r["splitBytes"]["full"] for r in ranks) if planned.splits else 1.0
        )
        want = {m: expected_placement(s, tp) for m, s in sharding["modules"].items()}  # type: ignore[union-attr]
        matches = all(r["placements"] == want for r in ranks)
        log("timing: hybrid and data parallel, 40 steps each ...")
        hybrid = median_step(run(root / "hybrid", sharding, steps=40, shares=[64, 64], extra=[]))
        dp_plan = {"tensorParallel": 1, "modules": {}}
        dp = median_step(run(root / "dp", dp_plan, steps=40, shares=[64, 64], extra=[]))
    summary = {
        "grad_rel_diff": grad_diff,
        "local_ranks_used": f"{trained}/{PODS * RANKS_PER_POD}",
        "tp_param_bytes_ratio": ratio,
        "tensor_parallel": tp,
        "executed": str(planned.executed),
        "executed_matches_plan": matches,
        "step_s": {"dp": dp, "hybrid": hybrid},
        "predicted_step_s": {"dp": planned.baseline_step_s, "hybrid": planned.predicted_step_s},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
