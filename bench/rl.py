"""Reinforcement benchmark: relaxed dependencies (TianJi-style) vs the strict lock-step actor–learner layout.

Run: .venv/bin/python bench/rl.py [--seeds 5] [--budget-s 60] [--quick]
     (progress on stderr; last stdout line: one JSON object)

Every mode runs the same code (paceline_worker.reinforcement, real processes on loopback), the same
hyperparameters and the same process count: strict (lock-step), relaxed (actors bounded to actorRunAhead
batches per policy version: production balanced against consumption) and relaxed_unbounded (actors never
wait). Main layout: 1 learner + 1 actor × 16 environments (one process per core); then 1 learner + 2
actors × 8. Each run stops at the target (mean return over the last 20 episodes ≥ 475 on CartPole-v1) or
at the wall-clock budget; an unreached run counts as the budget. time_to_target_s is the learner's
training clock (from its first batch), so process start-up is not counted. Medians over seeds. The machine
is shared: the load average is recorded.
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
RUN_AHEAD = 2  # relaxed: batches an actor ships per policy version before it waits (production ≈ consumption)
COMMON = {
    "env": ENV,
    "targetReturn": TARGET,
    "returnEpisodes": 20,
    "learners": 1,
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


MODES = {  # name → settings that differ; everything else is the same in every mode
    "relaxed": {"dependencies": "Relaxed", "actorRunAhead": RUN_AHEAD},
    "strict": {"dependencies": "Strict"},
    "relaxed_unbounded": {"dependencies": "Relaxed", "actorRunAhead": 0},
}


def compare(
    algorithm: str, seeds: list[int], budget_s: float, workdir: Path, layout: dict[str, Any]
) -> dict[str, Any]:
    """Every mode on every seed, interleaved (seed by seed) so that they see the same machine load."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for seed in seeds:
        for mode, overrides in MODES.items():
            settings = settings_from_mapping(
                {**COMMON, **layout, **overrides, "algorithm": algorithm, "maxPolicyLag": 2, "seed": seed}
            )
            tag = f"{algorithm}-{layout['actors']}a-{mode}-{seed}"
            run = run_once(settings, budget_s, workdir / tag)
            runs[mode].append(run)
            log(
                f"{tag}: {'reached' if run['reached'] else 'UNREACHED'} "
                f"t={run['time_to_target_s']:.1f}s steps/s={run['env_steps_per_s']:.0f} "
                f"updates/s={run['updates_per_s']:.0f} lag={run['mean_policy_lag']:.2f} "
                f"load={run['load_avg_1m']}"
            )
    results: dict[str, Any] = {mode: summarise(runs[mode]) for mode in MODES}
    results["reached"] = {mode: sum(r["reached"] for r in runs[mode]) for mode in MODES}
    strict = results["strict"]
    for mode in ("relaxed", "relaxed_unbounded"):
        suffix = "" if mode == "relaxed" else "_unbounded"
        results[f"speedup_time_to_target{suffix}"] = round(
            strict["time_to_target_s"]["median"] / max(results[mode]["time_to_target_s"]["median"], 1e-9), 3
        )
        results[f"speedup_throughput{suffix}"] = round(
            results[mode]["env_steps_per_s"] / max(strict["env_steps_per_s"], 1e-9), 3
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--budget-s", type=float, default=60.0, help="per run, from the learner's first batch"
    )
    parser.add_argument("--quick", action="store_true", help="3 seeds, the main layout only")
    args = parser.parse_args()
    seeds = list(range(1, (3 if args.quick else max(3, args.seeds)) + 1))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="paceline-bench-rl-") as tmp:
        workdir = Path(tmp)
        main_layout = {"actors": 1, "envsPerActor": 16}  # one process per core
        ppo = compare("PPO", seeds, args.budget_s, workdir, main_layout)
        result: dict[str, Any] = {
            "env": ENV,
            "target_return": TARGET,
            "seeds": seeds,
            "algorithm": "PPO",
            "processes": {"learners": 1, "actors": 1, "envs_per_actor": 16},
            "max_policy_lag": 2,
            "actor_run_ahead": RUN_AHEAD,
            "budget_s": args.budget_s,
            **ppo,
        }
        if not args.quick:  # three processes on two cores: 1 learner + 2 actors × 8 environments
            three = compare("PPO", seeds[:3], args.budget_s, workdir, {"actors": 2, "envsPerActor": 8})
            result["three_processes"] = three
    result["cpu_count"] = os.cpu_count()
    result["bench_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
