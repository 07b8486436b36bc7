"""Handing a new generation to running ranks: the control vote, the membership file, the launcher's choice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paceline_worker.assignment import decode_control, encode_control
from paceline_worker.generation_file import (
    GenerationFile,
    data_parallel_only,
    follower_marker,
    rank_env,
    regroups_in_place,
    write_generation,
)
from paceline_worker.launch import Supervisor
from paceline_worker.membership import peer_lost
from paceline_worker.rendezvous import RendezvousError
from paceline_worker.wire import EXIT_TEMPORARY_FAILURE, Assignment, Generation

DP = {"tensorParallel": 1, "modules": {}}
TP = {"tensorParallel": 2, "modules": {"0": {"style": "colwise"}}}


def generation(number: int, *, pods: int = 2, rank: int = 0, plan: dict | None = None) -> Generation:
    return Generation(
        generation=number,
        nnodes=pods,
        node_rank=rank,
        master_addr="127.0.0.1",
        master_port=29500 + number,
        assignment={"version": number, "batchSizes": [4] * pods},
        plan=DP if plan is None else plan,
    )


def summed(vectors: list[list[float]]) -> list[float]:
    return [sum(column) for column in zip(*vectors, strict=True)]


def test_ranks_switch_when_every_voter_names_the_same_generation() -> None:
    rank0 = encode_control(
        Assignment(version=3, batch_sizes=(4, 4)), stop=False, world_size=2, ready_generation=5
    )
    others = [encode_control(None, stop=False, world_size=2, ready_generation=g) for g in (5, None, 5)]
    message = decode_control(summed([rank0, *others]))
    assert message.regroup_generation == 5 and not message.stop_requested
    assert message.assignment.version == 3


@given(st.lists(st.one_of(st.none(), st.integers(0, 10_000)), min_size=1, max_size=64))
def test_a_split_vote_switches_nobody(votes: list[int | None]) -> None:
    message = decode_control(
        summed([encode_control(None, stop=False, world_size=2, ready_generation=g) for g in votes])
    )
    named = {g for g in votes if g is not None}
    assert message.regroup_generation == (named.pop() if len(named) == 1 else None)


def test_rank_env_places_the_pods_ranks_in_the_new_world() -> None:
    env = rank_env(generation(7, pods=3, rank=2), local_rank=1, local_world_size=4)
    assert (env["RANK"], env["WORLD_SIZE"], env["GROUP_RANK"]) == ("9", "12", "2")
    assert (env["MASTER_ADDR"], env["MASTER_PORT"], env["PACELINE_GENERATION"]) == ("127.0.0.1", "29507", "7")
    assert json.loads(env["PACELINE_ASSIGNMENT"])["batchSizes"] == [4, 4, 4]


def test_only_data_parallel_ranks_change_group_in_place() -> None:
    assert data_parallel_only(DP) and data_parallel_only({}) and not data_parallel_only(TP)
    assert regroups_in_place(generation(1), generation(2))
    assert not regroups_in_place(generation(1), generation(2, plan=TP))
    assert not regroups_in_place(generation(1, plan=TP), generation(2))


def test_the_membership_file_shows_newer_generations_only(tmp_path: Path) -> None:
    path = tmp_path / "generation.json"
    write_generation(path, generation(3))
    file = GenerationFile(path)
    assert file.newest().generation == 3 and file.newer_than(3) is None
    write_generation(path, generation(4, pods=3, rank=1))
    newer = file.newer_than(3)
    assert newer is not None and (newer.nnodes, newer.node_rank) == (3, 1)
    assert file.wait_newer(4, timeout_s=0.1, abort=lambda: False) is None
    assert file.wait_newer(3, timeout_s=0, abort=lambda: True) is None  # stopped while waiting
    assert [p.name for p in tmp_path.iterdir()] == ["generation.json"]  # no temporary file left


def test_ranks_that_do_not_follow_generations_are_restarted(tmp_path: Path, running_agent) -> None:  # type: ignore[no-untyped-def]
    """A command that read its rank from the environment once (no Paceline Worker) cannot change group."""
    supervisor = Supervisor(["true"], generation(1), grace_s=60, workdir=tmp_path, local_ranks=2)
    supervisor._agent = running_agent
    follower_marker(supervisor.generation_file, 0).parent.mkdir(exist_ok=True)
    follower_marker(supervisor.generation_file, 0).touch()  # one of the two local ranks only
    assert supervisor.offer(generation(2))[0] == 202
    assert running_agent.wait(timeout=60) == -15 and supervisor.status()["pending"] == 2


@pytest.fixture
def running_agent():  # type: ignore[no-untyped-def]
    """A real child process standing in for torchrun's agent (the supervisor only signals and polls it)."""
    agent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield agent
    agent.kill()
    agent.wait()


def test_launcher_hands_data_parallel_generations_to_running_ranks(tmp_path: Path, running_agent) -> None:  # type: ignore[no-untyped-def]
    supervisor = Supervisor(["true"], generation(1), grace_s=60, workdir=tmp_path, local_ranks=2)
    supervisor._agent = running_agent
    for local_rank in (0, 1):  # what a Paceline Worker does once it trains (Membership.announce)
        follower_marker(supervisor.generation_file, local_rank).parent.mkdir(exist_ok=True)
        follower_marker(supervisor.generation_file, local_rank).touch()
    assert supervisor.offer(generation(2, pods=3))[0] == 202
    assert running_agent.poll() is None  # the ranks were not stopped
    assert GenerationFile(supervisor.generation_file).newest().nnodes == 3
    status = supervisor.status()
    assert (status["generation"], status["pending"], status["handedOver"]) == (2, None, 1)
    assert supervisor.offer(generation(2))[0] == 409  # not newer


def test_launcher_restarts_ranks_whose_modules_are_split(tmp_path: Path, running_agent) -> None:  # type: ignore[no-untyped-def]
    supervisor = Supervisor(["true"], generation(1, plan=TP), grace_s=60, workdir=tmp_path)
    supervisor._agent = running_agent
    assert supervisor.offer(generation(2, plan=TP))[0] == 202
    assert running_agent.wait(timeout=60) == -15  # SIGTERM: the ranks stop at a step and restart
    assert supervisor.status()["pending"] == 2


def test_failed_ranks_restart_with_the_generation_handed_to_them(tmp_path: Path, running_agent) -> None:  # type: ignore[no-untyped-def]
    supervisor = Supervisor(["true"], generation(1), grace_s=60, workdir=tmp_path)
    supervisor._agent = running_agent
    follower_marker(supervisor.generation_file, 0).parent.mkdir(exist_ok=True)
    follower_marker(supervisor.generation_file, 0).touch()
    supervisor.offer(generation(2))
    assert supervisor._next_generation(1) is None  # the ranks' own failure (a bug): the pod fails, now
    next_generation = supervisor._next_generation(EXIT_TEMPORARY_FAILURE)  # a peer was lost meanwhile
    assert next_generation is not None and next_generation.generation == 2


def test_a_lost_peer_is_told_from_a_ranks_own_failure() -> None:
    closed = (
        "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]"
    )
    assert peer_lost(RuntimeError(closed)) and peer_lost(RendezvousError("generation 3: failed to recv"))
    assert not peer_lost(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) and not peer_lost(
        KeyError()
    )


def test_a_rank_gets_its_job_wide_variables_before_the_command_runs(tmp_path: Path) -> None:
    """exec_rank: what a plain script (or `$RANK` in a shell) sees under the launcher."""
    path = tmp_path / "generation.json"
    write_generation(path, generation(3, pods=4, rank=2))
    env = {**os.environ, "PACELINE_GENERATION_FILE": str(path), "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "paceline_worker.exec_rank",
            "--",
            "sh",
            "-c",
            'echo "$RANK $WORLD_SIZE $MASTER_PORT"',
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.split() == ["5", "8", "29503"]
