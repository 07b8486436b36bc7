"""Resizing in place: pods keep running while the job shrinks (a pod's node is lost) and grows (a pod joins).

Three pods train data parallel under the launcher. Pod 2 is killed (its node is gone): the others' ranks
fail, their launchers restart them with the new generation (2 pods) that comes over PUT /generation, and
they resume from the last checkpoint. Then a third pod joins: the survivors' ranks keep their processes, join
the new generation's rendezvous while they train, and switch at one step once the new pod's rank is there.
The surviving launchers are never restarted, every sample of every epoch is in the model exactly once, and
the parameters equal single-process SGD on the batches that made it into the model.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from paceline_dev.control_token import CONTROL_TOKEN
from paceline_worker.wire import authorization

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from _tp_pods import (
    free_port,
    global_batches,
    logs,
    pod_env,
    relative_difference,
    replay,
    start_pod,
    step_records,
    stop,
)

SIZES, SAMPLES, STEPS = [6, 16, 12, 4], 240, 60  # B = 24: 10 steps per epoch
DP = {"tensorParallel": 1, "modules": {}}


def put_generation(port: int, doc: dict) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/generation",
        data=json.dumps(doc).encode(),
        method="PUT",
        headers=authorization(CONTROL_TOKEN),
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def get_generation(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/generation", timeout=10) as response:
        return dict(json.loads(response.read()))


def wait_until(what: str, check, out: Path, timeout_s: float = 240) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{logs(out)}")


def trained_steps(out: Path, generation: int) -> int:
    return max(
        (
            r["step"] + 1
            for rank in step_records(out)
            for r in rank["records"]
            if r["generation"] == generation
        ),
        default=0,
    )


def generation(number: int, pods: int, rank: int, port: int, shares: list[int]) -> dict:
    return {
        "generation": number,
        "nnodes": pods,
        "nodeRank": rank,
        "masterAddr": "127.0.0.1",
        "masterPort": port,
        "assignment": {"version": 10 + number, "batchSizes": shares},
        "plan": DP,
    }


@pytest.mark.integration
def test_shrink_on_node_loss_and_grow_keep_pods_and_samples(tmp_path: Path) -> None:
    out = tmp_path / "run"
    ports = [free_port() for _ in range(4)]
    env = pod_env(
        shares=[8, 8, 8],
        ranks_per_pod=1,
        plan=DP,
        checkpoint=tmp_path / "ckpt",
        extra_env={"PACELINE_CHECKPOINT_INTERVAL_STEPS": "4", "PACELINE_RESIZE_GRACE_S": "120"},
    )
    args = ["--sizes", ",".join(map(str, SIZES)), "--samples", str(SAMPLES), "--max-steps", str(STEPS)]
    args += ["--step-sleep", "0.3"]
    pods = [start_pod(out, i, {**env, "PACELINE_LAUNCHER_PORT": str(ports[i])}, args) for i in range(3)]
    try:
        wait_until("step 9 in generation 0", lambda: trained_steps(out, 0) >= 9, out)
        os.killpg(pods[2].pid, signal.SIGKILL)  # pod 2's node is gone
        pods[2].wait(timeout=30)
        shrink_port = free_port()
        for rank in (0, 1):
            assert put_generation(ports[rank], generation(1, 2, rank, shrink_port, [12, 12])) == 202
        wait_until("step 18 in generation 1", lambda: trained_steps(out, 1) >= 18, out)

        # as the operator does: the joining pod is created with the new generation, the survivors are told
        grow_port = free_port()
        joined = {**env, **{k: v for k, v in _env_of(generation(2, 3, 2, grow_port, [8, 8, 8])).items()}}
        pods.append(start_pod(out, 3, {**joined, "PACELINE_LAUNCHER_PORT": str(ports[3])}, args))
        joiner_log = out / "pod3.log"
        wait_until("the joining pod's rank started", lambda: "serving http" in joiner_log.read_text(), out)
        for rank in (0, 1):
            assert put_generation(ports[rank], generation(2, 3, rank, grow_port, [8, 8, 8])) == 202
        for rank in (0, 1):
            launcher = get_generation(ports[rank])  # one restart (the shrink); the growth needed none
            assert launcher["restarts"] == 1 and launcher["generation"] == 2, launcher
        codes = [pods[i].wait(timeout=300) for i in (0, 1, 3)]
        assert codes == [0, 0, 0], logs(out)
    finally:
        stop(pods)

    records = step_records(out)
    # the survivors' ranks (0 and 1 in both generations) trained on in the same processes
    pids = {(r["generation"], r["dataRank"]): r["pid"] for rank in records for r in rank["records"]}
    assert pids[(1, 0)] == pids[(2, 0)] and pids[(1, 1)] == pids[(2, 1)]
    batches = global_batches(records)
    assert len(batches) == STEPS
    epochs = [batches[e * 10 : (e + 1) * 10] for e in range(STEPS // 10)]
    for e, steps in enumerate(epochs):
        seen = sorted(i for step in steps for i in step)
        assert seen == list(range(SAMPLES)), f"epoch {e}: samples skipped or seen twice"
    assert {r["generation"] for rank in records for r in rank["records"]} == {0, 1, 2}
    final, _ = replay(batches, sizes=SIZES, samples=SAMPLES)
    assert relative_difference(torch.load(out / "final.pt"), final) <= 1e-5


def _env_of(doc: dict) -> dict[str, str]:
    from paceline_worker.wire import generation_from_mapping

    return generation_from_mapping(doc).env()


@pytest.mark.integration
def test_a_ranks_own_failure_fails_its_pod_at_once_while_the_peers_wait(tmp_path: Path) -> None:
    """Elastic pods hold a lost peer's failure for a new generation, but not their own rank's bug."""
    out = tmp_path / "run"
    ports = [free_port() for _ in range(2)]
    env = pod_env(
        shares=[12, 12],
        ranks_per_pod=1,
        plan=DP,
        extra_env={"PACELINE_RESIZE_GRACE_S": "300"},
    )
    args = ["--sizes", ",".join(map(str, SIZES)), "--samples", str(SAMPLES), "--max-steps", str(STEPS)]
    args += ["--step-sleep", "0.1", "--fail-at", "5", "--fail-rank", "1"]
    pods = [start_pod(out, i, {**env, "PACELINE_LAUNCHER_PORT": str(ports[i])}, args) for i in range(2)]
    try:
        assert pods[1].wait(timeout=240) == 1, logs(out)  # its own bug: no waiting out the 300 s grace
        wait_until(
            "pod 0's ranks gave up on their lost peer", lambda: not get_generation(ports[0])["running"], out
        )
        assert pods[0].poll() is None, "pod 0 waits for the operator's next generation"
        assert "a peer was lost" in (out / "pod0.log").read_text()
    finally:
        stop(pods)
