"""GPU smoke test of the worker runtime (run by bench/gpu_smoke.sh on a machine with an NVIDIA GPU).

1. NCCL, world size 1: one pod, one rank, on CUDA.
2. gloo, 2 ranks on one GPU: one pod of 2 ranks sharing GPU 0, running the planner's tensor-parallel split of
   an MLP; its gradients are compared with single-process SGD on the same batches (on the CPU).
3. NVML: the worker's paceline_worker_gpu_* metrics exist; 4. CUDA-event timing of the compute phase.
Last stdout line: one JSON object. Without CUDA it says so ({"cuda": false}) and exits 0.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch

from _tp_pods import global_batches, logs, relative_difference, replay, results, run_pods
from execution import SIZES, plan

SAMPLES = 2048


def scenario(out: Path, *, ranks: int, sharding: dict[str, Any], env: dict[str, str], record: bool) -> dict:
    args = ["--sizes", ",".join(map(str, SIZES)), "--samples", str(SAMPLES), "--max-steps", "30"]
    codes = run_pods(
        out,
        shares=[64],
        ranks_per_pod=ranks,
        plan=sharding,
        args=[*args, *(["--record-grads"] if record else [])],
        extra_env=env,
    )
    if codes != [0]:
        return {"ok": False, "exit_codes": codes, "log_tail": logs(out)[-2000:]}
    ranks_out = results(out, ranks)
    first = ranks_out[0]
    summary = {
        "ok": True,
        "devices": sorted({r["device"] for r in ranks_out}),
        "backend": first["backend"],
        "step_s": statistics.median(first["stepSeconds"][5:]),
        "last_compute_s": first["lastComputeSeconds"],
        "nvml_metrics": first["gpuMetrics"],
        "placements": first["placements"],
    }
    if record:
        _, expected = replay(global_batches(ranks_out), sizes=SIZES, samples=SAMPLES)
        recorded = torch.load(out / "grads.pt", map_location="cpu")
        summary["grad_rel_diff"] = max(
            relative_difference(g, e) for g, e in zip(recorded, expected, strict=True)
        )
    return summary


def main() -> None:
    if not torch.cuda.is_available():
        print(
            json.dumps(
                {"cuda": False, "torch": torch.__version__, "note": "no CUDA device: nothing to smoke"}
            )
        )
        return
    planned = plan()
    from paceline.plan_types import sharding_map

    with tempfile.TemporaryDirectory(prefix="paceline-gpu-smoke-") as tmp:
        root = Path(tmp)
        nccl = scenario(
            root / "nccl",
            ranks=1,
            sharding={"tensorParallel": 1, "modules": {}},
            env={"PACELINE_BACKEND": "nccl"},
            record=False,
        )
        shared = scenario(
            root / "gloo",
            ranks=2,
            sharding=sharding_map(planned),
            env={"PACELINE_BACKEND": "gloo", "PACELINE_DEVICE": "cuda"},
            record=True,
        )
    print(
        json.dumps(
            {
                "cuda": True,
                "gpu": torch.cuda.get_device_name(0),
                "gpus": torch.cuda.device_count(),
                "torch": torch.__version__,
                "nccl_world_size_1": nccl,
                "gloo_2_ranks_1_gpu": shared,
                "nvml_metrics_present": bool(nccl.get("nvml_metrics")),
                "cuda_event_timing": bool(nccl.get("last_compute_s")),
            }
        )
    )


if __name__ == "__main__":
    main()
