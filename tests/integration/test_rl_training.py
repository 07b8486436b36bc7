"""Reinforcement mode with real processes: learners and actors on loopback reach CartPole's target.

The step budget bounds every run: a job that misses the target stops at maxEnvSteps and fails the test.
Deadlines are generous (a loaded 2-core machine); speed is measured in bench/rl.py, not here.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paceline_dev.rl_local import LocalRlJob
from paceline_worker.rl_settings import RlSettings, settings_from_mapping

pytestmark = pytest.mark.integration

TARGET = 475
BUDGET = 1_500_000  # env steps; PPO needs well under 300k here
DEADLINE_S = 600.0


def ppo(**overrides: Any) -> RlSettings:
    base = {"targetReturn": TARGET, "maxEnvSteps": BUDGET, "actors": 2, "envsPerActor": 8, "seed": 3}
    return settings_from_mapping({**base, **overrides})


@pytest.fixture
def jobs() -> Iterator[list[LocalRlJob]]:
    started: list[LocalRlJob] = []
    yield started
    for job in started:
        job.terminate()


def learner_status(job: LocalRlJob, index: int = 0) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://{job.addresses[index]}/status", timeout=10) as response:
            status: dict[str, Any] = json.load(response)
            return status
    except OSError:
        return None


def wait_for(condition: Any, deadline_s: float = DEADLINE_S, what: str = "condition") -> Any:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def assert_reached(job: LocalRlJob, statuses: list[dict[str, Any]]) -> dict[str, Any]:
    status = statuses[0]
    assert status["stopReason"] == "TargetReturnReached", status
    assert status["meanReturn"] >= TARGET
    assert status["envSteps"] < BUDGET
    assert [p.returncode for p in job.learners + job.actors] == [0] * len(job.learners + job.actors)
    return status


def test_relaxed_ppo_reaches_the_target_with_bounded_policy_lag(
    jobs: list[LocalRlJob], tmp_path: Path
) -> None:
    job = LocalRlJob(settings=ppo(maxPolicyLag=2), log_dir=tmp_path).start()
    jobs.append(job)
    status = assert_reached(job, job.wait(DEADLINE_S))
    lag = status["policyLag"]
    assert 0 < lag["max"] <= 2  # actors ran ahead of the learner, and never beyond the bound in training
    assert status["relaxedDependencies"] == ["actorWaitsForPolicy", "learnerWaitsForFreshBatch"]


def test_relaxed_ppo_with_bounded_run_ahead_reaches_the_target(
    jobs: list[LocalRlJob], tmp_path: Path
) -> None:
    job = LocalRlJob(settings=ppo(actors=1, envsPerActor=16, actorRunAhead=1), log_dir=tmp_path).start()
    jobs.append(job)
    status = assert_reached(job, job.wait(DEADLINE_S))
    assert status["policyLag"]["max"] <= 2
    actor = job.final_line("actor", 0)
    # one batch per policy version at most: the actor shipped no more batches than versions it saw
    assert 0 < actor["batches_sent"] <= actor["policy_switches"] + 1


@pytest.mark.parametrize("dependencies", ["Relaxed", "Strict"])
def test_dqn_trains_from_its_replay_until_the_step_budget(
    jobs: list[LocalRlJob], tmp_path: Path, dependencies: str
) -> None:
    settings = settings_from_mapping(
        {
            "algorithm": "DQN",
            "dependencies": dependencies,
            "actors": 1,
            "envsPerActor": 4,
            "actorRunAhead": 2,
            "targetReturn": None,
            "maxEnvSteps": 20_000,
        }
    )
    job = LocalRlJob(settings=settings, log_dir=tmp_path).start()
    jobs.append(job)
    status = job.wait(DEADLINE_S)[0]
    assert status["stopReason"] == "EnvStepBudgetSpent", status
    assert status["updates"] > 1000  # past the warm-up (1000 samples) it trains every round
    assert status["episodes"] >= 20 and status["bestReturn"] is not None  # episodes counted from the batches
    assert [p.returncode for p in job.learners + job.actors] == [0, 0]


def test_strict_ppo_reaches_the_target_in_lock_step(jobs: list[LocalRlJob], tmp_path: Path) -> None:
    job = LocalRlJob(settings=ppo(dependencies="Strict"), log_dir=tmp_path).start()
    jobs.append(job)
    status = assert_reached(job, job.wait(DEADLINE_S))
    assert status["policyLag"]["counts"] == {"0": status["policyLag"]["counts"]["0"]}  # only fresh data
    assert status["relaxedDependencies"] == []
    # at most one batch from each actor per round (the last round's batches may end the job before it
    # trains); rounds before the second actor's first batch train on one (the learner waits for the actors it
    # has heard from, and a slow start on a loaded machine can take several rounds)
    assert status["rounds"] <= status["batches"] <= 2 * status["rounds"] + 2


def test_strict_rounds_follow_the_live_actors_when_one_goes_away(
    jobs: list[LocalRlJob], tmp_path: Path
) -> None:
    job = LocalRlJob(settings=ppo(dependencies="Strict", seed=6), log_dir=tmp_path).start()
    jobs.append(job)
    wait_for(lambda: (learner_status(job) or {}).get("liveActors", 0) == 2, what="both actors sending")
    job.actors[1].send_signal(signal.SIGKILL)  # removed for good: the strict learner must not wait forever
    assert job.actors[1].wait(timeout=60) == -signal.SIGKILL
    status = job.wait(DEADLINE_S)[0]
    assert status["stopReason"] == "TargetReturnReached", status
    assert status["liveActors"] == 1
    assert [job.learners[0].returncode, job.actors[0].returncode] == [0, 0]


def test_two_learners_averaging_models_reach_the_target(jobs: list[LocalRlJob], tmp_path: Path) -> None:
    job = LocalRlJob(settings=ppo(actors=2, learners=2, averageEvery=5), log_dir=tmp_path).start()
    jobs.append(job)
    statuses = job.wait(DEADLINE_S)
    assert any(s["stopReason"] == "TargetReturnReached" for s in statuses), statuses
    assert [p.returncode for p in job.learners + job.actors] == [0, 0, 0, 0]


def test_a_killed_actor_is_replaced_and_the_job_still_reaches_the_target(
    jobs: list[LocalRlJob], tmp_path: Path
) -> None:
    job = LocalRlJob(settings=ppo(seed=5), log_dir=tmp_path).start()
    jobs.append(job)
    wait_for(lambda: (learner_status(job) or {}).get("rounds", 0) >= 5, what="five learner rounds")
    job.actors[1].send_signal(signal.SIGKILL)
    assert job.actors[1].wait(timeout=60) == -signal.SIGKILL
    job.restart_actor(1)
    status = assert_reached(job, job.wait(DEADLINE_S))
    assert status["batches"] > 0


def test_sigterm_checkpoints_the_learner_and_a_restart_resumes_there(
    jobs: list[LocalRlJob], tmp_path: Path
) -> None:
    job = LocalRlJob(
        settings=ppo(seed=4), log_dir=tmp_path / "logs", checkpoint_dir=tmp_path / "checkpoints"
    ).start()
    jobs.append(job)
    before = wait_for(
        lambda: (s := learner_status(job)) and s["rounds"] >= 10 and not s["done"] and s, what="ten rounds"
    )
    job.learners[0].send_signal(signal.SIGTERM)
    assert job.learners[0].wait(timeout=120) == 0
    stopped = job.learner_status(0)
    assert stopped["stopReason"] is None and stopped["rounds"] >= before["rounds"]
    assert (tmp_path / "checkpoints" / "learner-0" / "paceline-checkpoint.pt").exists()
    job.restart_learner(0)  # the actors keep retrying their learner meanwhile
    resumed = wait_for(lambda: learner_status(job), deadline_s=300, what="the restarted learner")
    assert resumed["version"] >= stopped["version"]
    assert resumed["envSteps"] >= stopped["envSteps"]
    assert_reached(job, job.wait(DEADLINE_S))
