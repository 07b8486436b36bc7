"""Planner benchmark: PaSE's four graphs x p in {8, 32, 64} under PaSE's cost model, and mixed-GPU scenarios.

Run: .venv/bin/python bench/planner.py   (progress on stderr; the last stdout line is one JSON object)

graphs[]: search_s = time to enumerate configurations and run the DP; cost = predicted step seconds of the
  best strategy; dp_cost = the same for plain data parallelism (PaSE cost model, 10 TFLOP/s, 16 GB/s).
hetero[]: paceline_cost = Paceline's strategy with batch shares by speed under the heterogeneous model;
  each graph at the paper's batch and at 64 samples per GPU (a modern per-GPU batch);
  weakest_device_cost = the strategy PaSE picks when it assumes every GPU is the weakest one, run with
  PaSE's equal shares, costed under the same heterogeneous model (PaSE ignores memory, so
  weakest_fits_memory says whether that strategy would fit); dp_equal_cost = plain equal-share DDP.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import paceline.planner  # noqa: F401
except ImportError:  # not pip-installed yet: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

import json
import time
from typing import Any

from paceline.planner.cost_models import (
    Device,
    HeteroCostModel,
    PaseCostModel,
    order_devices,
    weakest_device_model,
)
from paceline.planner.devices import DeviceCatalog
from paceline.planner.graph import with_batch
from paceline.planner.presets import PRESETS
from paceline.planner.strategy import build_space, data_parallel_choice, evaluate, plan_strategy

PROCS = (8, 32, 64)
SCENARIOS: dict[str, list[tuple[str, int]]] = {
    # (GPU product, GPUs); 8 GPUs per node
    "8fast+8slow": [("NVIDIA-H100-80GB-HBM3", 8), ("NVIDIA-A100-SXM4-80GB", 8)],
    "3types:8h100+8a100+8t4": [("NVIDIA-H100-80GB-HBM3", 8), ("NVIDIA-A100-SXM4-80GB", 8), ("Tesla-T4", 8)],
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_graphs() -> list[dict[str, Any]]:
    rows = []
    for name, make in PRESETS.items():
        graph = make()
        for p in PROCS:
            start = time.perf_counter()
            space = build_space(graph, p)
            model = PaseCostModel(procs=p)
            best = plan_strategy(space, model)
            search_s = time.perf_counter() - start
            dp = evaluate(space, data_parallel_choice(space), model)
            rows.append(
                {
                    "graph": name,
                    "p": p,
                    "search_s": round(search_s, 3),
                    "cost": best.total_seconds,
                    "dp_cost": dp.total_seconds,
                    "speedup": round(dp.total_seconds / best.total_seconds, 3),
                    "max_dependent_set": best.max_dependent,
                }
            )
            rel = best.total_seconds / dp.total_seconds
            log(f"{name:12s} p={p:2d} search {search_s:6.2f}s  cost/dp {rel:.3f}")
    return rows


def bench_hetero() -> list[dict[str, Any]]:
    catalog = DeviceCatalog()
    rows = []
    for scenario, pools in SCENARIOS.items():
        devices = order_devices(
            [
                Device(node=f"{product}-{i // 8}", type=catalog.lookup(product))
                for product, count in pools
                for i in range(count)
            ]
        )
        p = len(devices)
        paceline_model = HeteroCostModel(devices=devices, catalog=catalog, proportional=True)
        equal_model = HeteroCostModel(devices=devices, catalog=catalog, proportional=False)
        weakest_model = weakest_device_model(devices, catalog)
        speeds = sorted({d.type.peak_tflops for d in devices})
        for name, make in PRESETS.items():
            for batch in (None, 64 * p):
                graph = make() if batch is None else with_batch(make(), batch)
                space = build_space(graph, p)
                start = time.perf_counter()
                ours = plan_strategy(space, paceline_model)
                search_s = time.perf_counter() - start
                # PaSE's cost function has no memory term: plan as it would, then check the result
                pase_choice = plan_strategy(space, weakest_model, respect_memory=False).choice
                weakest = evaluate(space, pase_choice, equal_model)
                dp = evaluate(space, data_parallel_choice(space), equal_model)
                rows.append(
                    {
                        "scenario": scenario,
                        "graph": name,
                        "p": p,
                        "batch": graph.batch_size,
                        "speed_ratio": round(speeds[-1] / speeds[0], 2),
                        "paceline_cost": ours.total_seconds,
                        "weakest_device_cost": weakest.total_seconds,
                        "dp_equal_cost": dp.total_seconds,
                        "ratio": round(weakest.total_seconds / ours.total_seconds, 3),
                        "weakest_fits_memory": (weakest.peak_memory_fraction or 0.0) <= 1.0,
                        "search_s": round(search_s, 3),
                    }
                )
                ratio = weakest.total_seconds / ours.total_seconds
                log(f"{scenario:24s} {name:12s} batch {graph.batch_size:5d} weakest/paceline {ratio:.2f}")
    return rows


def main() -> None:
    result = {"graphs": bench_graphs(), "hetero": bench_hetero()}
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
