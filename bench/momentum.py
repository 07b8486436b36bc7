"""Momentum benchmark: Paceline's automatic momentum retuning vs fixed explicit momentum, asynchronous SGD.

Run: .venv/bin/python bench/momentum.py [--quick] [--plot curves.png]
     (progress on stderr; last stdout line: one JSON object; --plot draws loss vs updates per policy)

Asynchrony acts as momentum (Mitliagkas et al., 2016). For M ∈ {1, 2, 4, 8} asynchronous workers this
counts the parameter-server updates needed to bring the full training loss of a real model on scikit-learn's
digits below a target, for a grid of explicit momentum values and for Paceline's automatic compensation
(paceline.momentum's StalenessEstimator + policy, fed with the measured staleness of every update, retuning
the explicit momentum live) — see docs/benchmarks.md.

Asynchrony is simulated in ONE process (8 real processes × a grid do not fit 2 cores in minutes): M workers
with exponentially distributed step times; each worker reads the current parameters (model version v),
computes a real gradient on its own mini-batch at those parameters, and its update is applied when its step
ends, with staleness τ = (version at the write) − v, exactly as the parameter server measures it; the update
rule is the parameter server's (heavy ball: buf = μ·buf + g; w −= lr·buf). A short run of real processes
(one PS, 4 workers with exponential simulated step times) checks the simulator's staleness distribution
against the PS's measurement ("validation" in the JSON).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
try:
    from paceline.api import parse_momentum_tuning
    from paceline.momentum import MomentumController, StalenessEstimator
except ImportError:  # not pip-installed: use the source tree
    sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "worker-image")]
    from paceline.api import parse_momentum_tuning
    from paceline.momentum import MomentumController, StalenessEstimator

WORKER_COUNTS = (1, 2, 4, 8)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_data() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled digits (1797 8×8 images), scaled to [0, 1]; the first 80 % for training."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target)
    split = int(0.8 * len(labels))
    return images[:split], labels[:split]


def make_model() -> nn.Module:
    """A 64-64-10 MLP: ten times cheaper per update than the CNN of examples/train_digits.py."""
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


@dataclass(frozen=True, kw_only=True)
class Problem:
    inputs: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    learning_rate: float
    max_updates: int
    eval_every: int


@dataclass(frozen=True, kw_only=True)
class RunResult:
    updates: int | None  # updates to reach the target (None: not within max_updates)
    clock: float  # simulated time at the target (or at the end); a worker's mean step time is 1
    final_loss: float
    seconds: float
    staleness: list[int]
    explicit_trace: list[tuple[int, float]]
    loss_trace: list[tuple[int, float]]  # (updates, full training loss) at every evaluation


class AutoMomentum:
    """Plays the operator: measured τ → MomentumController → new explicit momentum, every `period` updates."""

    def __init__(self, *, workers: int, target: float, period: int, half_life: int) -> None:
        settings = parse_momentum_tuning(
            {"policy": "Auto", "floor": "-0.3", "minChange": "0.02", "halfLifeUpdates": half_life},
            target=Decimal(f"{target}"),
        )
        estimator = StalenessEstimator(half_life_updates=float(half_life), workers=workers)
        self.controller = MomentumController(settings=settings, estimator=estimator)
        self.speeds = {f"w{m}": 1.0 for m in range(workers)}
        self.period = period
        self.pending: list[int] = []
        self.explicit = self.controller.decide(worker_speeds=self.speeds).explicit

    def observe(self, staleness: int) -> float:
        self.pending.append(staleness)
        if len(self.pending) >= self.period:
            self.controller.observe_staleness(self.pending)
            self.pending = []
            self.explicit = self.controller.decide(worker_speeds=self.speeds).explicit
        return self.explicit


def simulate(
    problem: Problem,
    *,
    workers: int,
    momentum: float | None,
    target_loss: float,
    seed: int,
    auto: AutoMomentum | None = None,
) -> RunResult:
    """One asynchronous run; `momentum` is the fixed explicit momentum, or None with `auto`."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = make_model()
    params = list(model.parameters())
    weights = torch.nn.utils.parameters_to_vector(params).detach().clone()
    buffer = torch.zeros_like(weights)
    loss_fn = nn.CrossEntropyLoss()
    rng = random.Random(seed)
    batch_gen = torch.Generator().manual_seed(seed)
    n = len(problem.labels)

    def gradient_at(vector: torch.Tensor) -> torch.Tensor:
        torch.nn.utils.vector_to_parameters(vector, params)
        index = torch.randint(0, n, (problem.batch_size,), generator=batch_gen)
        model.zero_grad(set_to_none=True)
        loss_fn(model(problem.inputs[index]), problem.labels[index]).backward()
        return torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])

    def full_loss() -> float:
        torch.nn.utils.vector_to_parameters(weights, params)
        with torch.no_grad():
            return float(loss_fn(model(problem.inputs), problem.labels))

    version = 0
    events: list[tuple[float, int]] = []
    pending: dict[int, tuple[int, torch.Tensor]] = {}
    for worker in range(workers):
        pending[worker] = (version, gradient_at(weights))
        heapq.heappush(events, (rng.expovariate(1.0), worker))
    staleness: list[int] = []
    mu = momentum if momentum is not None else (auto.explicit if auto else 0.0)
    trace: list[tuple[int, float]] = [(0, mu)] if auto is not None else []  # the explicit μ from the start
    loss = full_loss()
    losses = [(0, loss)]
    reached: int | None = None
    now = 0.0
    while version < problem.max_updates:
        now, worker = heapq.heappop(events)
        read_version, grad = pending.pop(worker)
        tau = version - read_version
        staleness.append(tau)
        buffer.mul_(mu).add_(grad)
        weights.add_(buffer, alpha=-problem.learning_rate)
        version += 1
        if auto is not None:
            new_mu = auto.observe(tau)
            if new_mu != mu:
                trace.append((version, new_mu))
                mu = new_mu
        if version % problem.eval_every == 0:
            loss = full_loss()
            losses.append((version, loss))
            if not math.isfinite(loss) or loss > 1e3:
                break
            if loss <= target_loss:
                reached = version
                break
        pending[worker] = (version, gradient_at(weights))
        heapq.heappush(events, (now + rng.expovariate(1.0), worker))
    return RunResult(
        updates=reached,
        clock=now,
        final_loss=loss,
        seconds=time.perf_counter() - started,
        staleness=staleness,
        explicit_trace=trace,
        loss_trace=losses,
    )


@dataclass(frozen=True, kw_only=True)
class Mode:
    seeds: int
    grid: tuple[float, ...]
    max_updates: int
    real_steps: int


SETTINGS = {
    "quick": Mode(seeds=2, grid=(-0.3, 0.0, 0.3, 0.6, 0.8, 0.9), max_updates=2000, real_steps=60),
    "full": Mode(
        seeds=3, grid=(-0.3, -0.1, 0.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9), max_updates=2500, real_steps=120
    ),
}
TARGET_MOMENTUM = 0.9
LEARNING_RATE = 0.1  # with μ = 0.9 this is the best (μ, lr) pair of the M = 1 grid: "tuned synchronously"
TARGET_LOSS = 0.05


def median_updates(runs: list[RunResult], cap: int) -> float:
    """Median updates to target; a run that never reached it counts as `cap` + 1 (so a median of it is a
    lower bound on that configuration's true cost)."""
    return float(statistics.median(r.updates if r.updates is not None else cap + 1 for r in runs))


def staleness_histogram(values: list[int], top: int = 12) -> list[float]:
    counts = Counter(min(v, top) for v in values)
    return [counts.get(t, 0) / max(len(values), 1) for t in range(top + 1)]


def real_staleness(*, workers: int, steps: int, workdir: Path) -> list[int]:
    """τ measured by a real PS for `workers` real processes with exponential simulated step times."""
    import shutil
    import signal
    import socket
    import subprocess
    import urllib.request

    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    port, http_port = free_port(), free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("PACELINE_")}
    base.update(
        {
            "PYTHONPATH": str(ROOT / "worker-image"),
            "PACELINE_PS_ADDRS": f"127.0.0.1:{port}",
            "WORLD_SIZE": str(workers),
            "OMP_NUM_THREADS": "1",
            "PACELINE_METRICS_PORT": "0",
        }
    )
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(workdir / f"{name}.log", "wb") as out:
            proc = subprocess.Popen(args, env={**base, **env}, stdout=out, stderr=out, cwd=ROOT)
        procs.append(proc)
        return proc

    try:
        ps = spawn(
            "ps",
            [sys.executable, "-m", "paceline_worker.asynchronous.ps"],
            {"PACELINE_ROLE": "ps", "PACELINE_METRICS_PORT": str(http_port), "PACELINE_PS_LINGER_S": "60"},
        )
        sim = {
            "PACELINE_SIM_SPEED": "1",
            "PACELINE_SIM_SAMPLE_COST_S": "0.005",  # mean step 80 ms at batch 16, ≫ the real compute
            "PACELINE_SIM_DISTRIBUTION": "exponential",
        }
        ranks = [
            spawn(
                f"worker{r}",
                [
                    sys.executable,
                    "examples/train_digits_async.py",
                    "--max-steps",
                    str(steps),
                    "--batch-size",
                    "16",
                ],
                {"RANK": str(r), "PACELINE_SEED": str(r), **sim},
            )
            for r in range(workers)
        ]
        for proc in ranks:
            if proc.wait(timeout=300) != 0:
                raise RuntimeError(f"worker failed; see {workdir}")
        url = f"http://127.0.0.1:{http_port}/staleness?after=0"
        with urllib.request.urlopen(url, timeout=10) as response:
            updates = json.loads(response.read())["updates"]
        ps.send_signal(signal.SIGTERM)
        ps.wait(timeout=20)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)
    # keep the steady state: after every worker's 3rd update, before the first worker's last update
    by_worker: dict[str, list[int]] = {}
    for update in updates:
        by_worker.setdefault(update["worker"], []).append(update["index"])
    start = max(indices[2] for indices in by_worker.values())
    end = min(indices[-1] for indices in by_worker.values())
    return [u["staleness"] for u in updates if start < u["index"] <= end]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer seeds, coarser grid (≤ 3 min)")
    parser.add_argument("--no-real", action="store_true", help="skip the real multi-process validation run")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="draw loss vs updates per momentum policy")
    args = parser.parse_args()
    mode = SETTINGS["quick" if args.quick else "full"]
    seeds, grid, cap, real_steps = mode.seeds, mode.grid, mode.max_updates, mode.real_steps
    torch.set_num_threads(1)
    started = time.perf_counter()
    inputs, labels = load_data()
    problem = Problem(
        inputs=inputs,
        labels=labels,
        batch_size=16,
        learning_rate=LEARNING_RATE,
        max_updates=cap,
        eval_every=10,
    )
    log(
        f"{'quick' if args.quick else 'full'}: lr {LEARNING_RATE}, target loss {TARGET_LOSS}, grid {grid}, "
        f"{seeds} seeds, at most {cap} updates per run"
    )
    table: dict[int, dict[str, float]] = {}
    best: dict[str, float] = {}
    auto_runs: dict[int, list[RunResult]] = {}
    fixed_runs: dict[int, list[RunResult]] = {}
    sim_staleness: dict[int, list[int]] = {}
    for workers in WORKER_COUNTS:
        table[workers] = {}
        for mu in grid:
            runs = [
                simulate(problem, workers=workers, momentum=mu, target_loss=TARGET_LOSS, seed=s)
                for s in range(seeds)
            ]
            table[workers][f"{mu:g}"] = median_updates(runs, cap)
            sim_staleness.setdefault(workers, []).extend(t for r in runs for t in r.staleness)
            if mu == TARGET_MOMENTUM:
                fixed_runs[workers] = runs
            log(f"M={workers} μ={mu:+.1f}: updates {[r.updates for r in runs]}")
        auto_runs[workers] = [
            simulate(
                problem,
                workers=workers,
                momentum=None,
                target_loss=TARGET_LOSS,
                seed=s,
                auto=AutoMomentum(workers=workers, target=TARGET_MOMENTUM, period=20, half_life=200),
            )
            for s in range(seeds)
        ]
        finals = [r.explicit_trace[-1][1] if r.explicit_trace else None for r in auto_runs[workers]]
        log(f"M={workers} auto: updates {[r.updates for r in auto_runs[workers]]}, final explicit {finals}")
        mu_best = min(table[workers], key=lambda k: (table[workers][k], float(k)))
        best[str(workers)] = float(mu_best)
    if args.plot is not None:
        from _plots import momentum_curves

        curves = {}
        for m in WORKER_COUNTS:
            mu_best = best[str(m)]
            best_run = simulate(problem, workers=m, momentum=mu_best, target_loss=TARGET_LOSS, seed=0)
            curves[m] = {
                "target": TARGET_MOMENTUM,
                "best_mu": mu_best,
                "target_loss": TARGET_LOSS,
                "fixed": fixed_runs[m][0].loss_trace,
                "best": best_run.loss_trace,
                "auto": auto_runs[m][0].loss_trace,
                "explicit": auto_runs[m][0].explicit_trace,
            }
        momentum_curves(args.plot, curves)
        log(f"curves drawn: {args.plot}")
    auto_updates = {m: median_updates(auto_runs[m], cap) for m in WORKER_COUNTS}
    best_updates = {m: min(table[m].values()) for m in WORKER_COUNTS}
    fixed8 = median_updates(fixed_runs[8], cap)
    auto_time8 = statistics.median(r.clock for r in auto_runs[8])
    fixed_time8 = statistics.median(r.clock for r in fixed_runs[8])
    result: dict[str, object] = {
        "target_loss": TARGET_LOSS,
        "best_explicit": best,
        "auto_vs_fixed_updates_ratio": round(auto_updates[8] / fixed8, 3),
        "auto_vs_fixed_time_ratio": round(auto_time8 / fixed_time8, 3),
        "auto_vs_best_updates_ratio": {
            str(m): round(auto_updates[m] / best_updates[m], 3) for m in WORKER_COUNTS
        },
        "fixed_0.9_reached_at_8": sum(r.updates is not None for r in fixed_runs[8]) / seeds,
        "max_updates": cap,
        "learning_rate": LEARNING_RATE,
        "updates_table": {str(m): table[m] | {"auto": auto_updates[m]} for m in WORKER_COUNTS},
        "mean_staleness_sim": {str(m): round(statistics.mean(sim_staleness[m]), 3) for m in WORKER_COUNTS},
    }
    if not args.no_real:
        workers = 4
        log(f"validation: real PS + {workers} worker processes, exponential step times")
        workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"paceline-bench-momentum-{os.getpid()}"
        real = real_staleness(workers=workers, steps=real_steps, workdir=workdir)
        sim_hist, real_hist = staleness_histogram(sim_staleness[workers]), staleness_histogram(real)
        result["validation"] = {
            "workers": workers,
            "real_updates": len(real),
            "real_mean_staleness": round(statistics.mean(real), 3),
            "sim_mean_staleness": round(statistics.mean(sim_staleness[workers]), 3),
            "theory_mean_staleness": workers - 1,
            "tv_distance": round(0.5 * sum(abs(a - b) for a, b in zip(sim_hist, real_hist, strict=True)), 3),
        }
        log(f"validation: {result['validation']}")
    result["seconds"] = round(time.perf_counter() - started, 1)
    log(f"done in {result['seconds']}s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
