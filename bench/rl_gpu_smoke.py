"""GPU smoke for reinforcement learners (run where the `device` tool lends a GPU; never in CI).

Run: .venv/bin/python bench/rl_gpu_smoke.py   (last stdout line: one JSON object; exit 2 without CUDA)

The same PPO and DQN rounds (same seed, same batches) on the CPU and on CUDA: the parameters after the rounds
must agree (float tolerance), and each round's time is reported. `make test` covers the same code on the CPU
(tests/unit/test_rl_trainers.py).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "worker-image"), str(ROOT / "tests" / "unit")]
from test_rl_trainers import bandit_segment  # noqa: E402

from paceline_worker.reinforcement.dqn import DqnTrainer  # noqa: E402
from paceline_worker.reinforcement.lag import LagHistogram  # noqa: E402
from paceline_worker.reinforcement.learner import learner_device  # noqa: E402
from paceline_worker.reinforcement.ppo import PpoTrainer  # noqa: E402

ROUNDS = 5


def run(kind: str, device: str) -> tuple[dict[str, torch.Tensor], float]:
    rng = np.random.default_rng(0)
    trainer: Any
    if kind == "PPO":
        trainer = PpoTrainer(obs_dim=2, n_actions=2, max_lag=2, round_samples=256, seed=0, device=device)
    else:
        trainer = DqnTrainer(obs_dim=2, n_actions=2, max_lag=1000, round_samples=256, seed=0, device=device)
    lags = LagHistogram()
    started = time.perf_counter()
    for version in range(ROUNDS):
        trainer.ingest(bandit_segment(version, rng))
        trainer.train(trainer.select(version=version, relaxed=False, lags=lags))
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / ROUNDS
    return {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}, seconds


def main() -> None:
    if learner_device() != "cuda":
        print(json.dumps({"cuda": False, "message": "no CUDA device: nothing to smoke-test"}))
        sys.exit(2)
    result: dict[str, Any] = {"cuda": True, "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for kind in ("PPO", "DQN"):
        cpu, cpu_s = run(kind, "cpu")
        gpu, gpu_s = run(kind, "cuda")
        worst = max(float((cpu[k] - gpu[k]).abs().max()) for k in cpu)
        result[kind] = {
            "max_param_diff": worst,
            "ok": worst < 1e-3,
            "cpu_round_s": cpu_s,
            "gpu_round_s": gpu_s,
        }
    print(json.dumps(result))
    sys.exit(0 if all(result[k]["ok"] for k in ("PPO", "DQN")) else 1)


if __name__ == "__main__":
    main()
