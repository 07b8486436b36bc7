"""Reinforcement benchmark: relaxed dependencies (TianJi-style) vs the strict lock-step actor–learner layout.

Run: .venv/bin/python bench/rl.py [--seeds 5] [--budget-s 90] [--quick] [--dqn]
     (progress on stderr; last stdout line: one JSON object)

Both modes run the same code (paceline_worker.reinforcement, real processes on loopback), the same
hyperparameters and the same process count (1 learner + ACTORS actors): only `dependencies` differs. Each run
stops at the target (mean return over the last 20 episodes ≥ 475 on CartPole-v1) or at the wall-clock budget;
an unreached run counts as the budget. time_to_target_s is the learner's training clock (from its first
batch), so process start-up is not counted. Medians over seeds. The machine is shared: the load average is
recorded.
Profile: where the learner's and actors' time goes (train/wait; environment/policy/exchange).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
try:
    from paceline_dev.rl_local import LocalRlJob
    from paceline_worker.rl_settings import RlSettings, settings_from_mapping
except ImportError:  # not pip-installed: use the source tree
    sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "worker-image")]
    from paceline_dev.rl_local import LocalRlJob
    from paceline_worker.rl_settings import RlSettings, settings_from_mapping

ENV = "CartPole-v1"
TARGET = 475
ACTORS = 2
COMMON = {
    "env": ENV,
    "targetReturn": TARGET,
    "returnEpisodes": 20,
    "actors": ACTORS,
    "learners": 1,
    "envsPerActor": 8,
    "exchangeSteps": 64,
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_once(settings: RlSettings, budget_s: float, workdir: Path) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    job = LocalRlJob(settings=settings, log_dir=workdir).start()
    # the budget counts from the learner's first batch; allow process start-up on top
    status = job.wait(budget_s + 20.0)[0]
    if not status:  # the bench's deadline stopped it before it printed: treat as unreached
        status = {"reachedAfterSeconds": None, "elapsedSeconds": budget_s}
    actors = [job.final_line("actor", i) for i in range(settings.actors)]
    reached = status.get("reachedAfterSeconds")
    elapsed = max(float(status.get("elapsedSeconds", 0.0)), 1e-9)
    trained = sum(int(n) for n in status.get("policyLag", {}).get("counts", {}).values())
    return {
        "reached": reached is not None and reached <= budget_s,
        "time_to_target_s": min(reached, budget_s) if reached is not None else budget_s,
        "env_steps": status.get("envSteps", 0),
        "env_steps_per_s": status.get("envStepsPerSecond", 0.0),
        "updates_per_s": status.get("updatesPerSecond", 0.0),
        "trained_samples_per_s": trained / elapsed,
        "mean_policy_lag": status.get("policyLag", {}).get("mean", 0.0),
        "rounds": status.get("rounds", 0),
        "profile": profile(status, actors, elapsed),
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def profile(status: dict[str, Any], actors: list[dict[str, Any]], elapsed: float) -> dict[str, float]:
    """Fractions of the run's wall time: the learner's, and the actors' averaged."""
    learner = status.get("profile", {})
    out = {
        "learner_train": learner.get("trainSeconds", 0.0) / elapsed,
        "learner_wait": learner.get("waitSeconds", 0.0) / elapsed,
    }
    for key in ("env_s", "policy_s", "exchange_s"):
        values = [a.get(key, 0.0) for a in actors if a]
        out[f"actor_{key[:-2]}"] = (sum(values) / len(values) / elapsed) if values else 0.0
    return {k: round(v, 3) for k, v in out.items()}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 3)

    profiles = [r["profile"] for r in runs]
    return {
        "time_to_target_s": {
            "median": median("time_to_target_s"),
            "runs": [r["time_to_target_s"] for r in runs],
        },
        "env_steps_per_s": median("env_steps_per_s"),
        "updates_per_s": median("updates_per_s"),
        "trained_samples_per_s": median("trained_samples_per_s"),
        "mean_policy_lag": median("mean_policy_lag"),
        "env_steps_to_target": median("env_steps"),
        "profile": {k: round(statistics.median(p[k] for p in profiles), 3) for k in profiles[0]},
        "load_avg_1m": [r["load_avg_1m"] for r in runs],
    }


def compare(
    algorithm: str, seeds: list[int], budget_s: float, workdir: Path, extra: dict[str, Any]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    runs: dict[str, list[dict[str, Any]]] = {"relaxed": [], "strict": []}
    for seed in seeds:
        for mode, dependencies in (("relaxed", "Relaxed"), ("strict", "Strict")):  # interleaved: same load
            settings = settings_from_mapping(
                {**COMMON, **extra, "algorithm": algorithm, "dependencies": dependencies, "seed": seed}
            )
            run = run_once(settings, budget_s, workdir / f"{algorithm}-{mode}-{seed}")
            runs[mode].append(run)
            log(
                f"{algorithm} {mode:7s} seed {seed}: {'reached' if run['reached'] else 'UNREACHED'} "
                f"t={run['time_to_target_s']:.1f}s steps/s={run['env_steps_per_s']:.0f} "
                f"updates/s={run['updates_per_s']:.0f} lag={run['mean_policy_lag']:.2f} "
                f"load={run['load_avg_1m']}"
            )
    for mode in runs:
        results[mode] = summarise(runs[mode])
    results["reached"] = {mode: sum(r["reached"] for r in runs[mode]) for mode in runs}
    relaxed, strict = results["relaxed"], results["strict"]
    results["speedup_time_to_target"] = round(
        strict["time_to_target_s"]["median"] / max(relaxed["time_to_target_s"]["median"], 1e-9), 3
    )
    results["speedup_throughput"] = round(
        relaxed["env_steps_per_s"] / max(strict["env_steps_per_s"], 1e-9), 3
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--budget-s", type=float, default=60.0, help="per run, from the learner's first batch"
    )
    parser.add_argument("--quick", action="store_true", help="3 seeds, PPO only")
    parser.add_argument(
        "--dqn", action="store_true", help="also DQN rows (slower, less reliable on CartPole)"
    )
    args = parser.parse_args()
    seeds = list(range(1, (3 if args.quick else max(3, args.seeds)) + 1))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="paceline-bench-rl-") as tmp:
        workdir = Path(tmp)
        ppo = compare("PPO", seeds, args.budget_s, workdir, {"maxPolicyLag": 2})
        result: dict[str, Any] = {
            "env": ENV,
            "target_return": TARGET,
            "seeds": seeds,
            "algorithm": "PPO",
            "processes": {"learners": 1, "actors": ACTORS},
            "budget_s": args.budget_s,
            "max_policy_lag": 2,
            **ppo,
            "cpu_count": os.cpu_count(),
        }
        if args.dqn and not args.quick:
            dqn = compare("DQN", seeds[:3], args.budget_s, workdir, {})
            result["dqn"] = {
                k: dqn[k]
                for k in ("relaxed", "strict", "reached", "speedup_time_to_target", "speedup_throughput")
            }
    result["bench_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
