"""The operator↔worker contract, end to end on both sides: what the operator writes into pods, ConfigMaps and
HTTP requests is what the worker runtime, torchrun and the parameter servers read — and back."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jobs import PLAN, job

from paceline import api
from paceline.adapters.workers import put_momentum, read_dropped, read_staleness
from paceline.builders import build_control, build_ps_pod, build_worker_pod
from paceline.controller.decide.plan import job_ref, stored_assignment
from paceline.plan_types import sharding_json
from paceline_worker.asynchronous.config import ps_config_from_env, worker_config_from_env
from paceline_worker.asynchronous.ps import ParameterServer
from paceline_worker.config import config_from_env
from paceline_worker.wire import Assignment, Env

REPO = Path(__file__).resolve().parents[2]
ASSIGNMENT = Assignment(version=3, batch_sizes=(56, 56, 16), learning_rate=0.05, momentum=0.9)


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    """The container env with literal values (the kubelet would fill in the downward-API ones)."""
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"] if "value" in e}


def worker(spec: api.JobSpec, rank: int, gpus: int = 1) -> dict[str, Any]:
    placement = PLAN.workers[rank]
    return build_worker_pod(
        job_ref(job()),
        spec=spec,
        placement=placement,
        world_size=len(PLAN.workers),
        attempt=0,
        plan_hash="h",
        assignment=ASSIGNMENT,
        port=29511,
        sharding=sharding_json(PLAN),
    )


def test_synchronous_pods_are_what_torchrun_and_each_rank_read() -> None:
    from torch.distributed.run import parse_args  # torchrun's own reading of PET_* variables

    spec = api.parse_spec(job(gpusPerWorker=2)["spec"])
    env = env_of(worker(spec, rank=2))
    saved = {k: v for k, v in env.items() if k.startswith("PET_")}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in saved.items():
            mp.setenv(key, value)
        args = parse_args(["--no-python", "--", "python", "train.py"])
    assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("3", 2, "2")
    assert (args.master_addr, args.master_port) == ("demo-worker-0.demo.ml.svc.cluster.local", 29511)
    # torchrun adds RANK/WORLD_SIZE/LOCAL_*; the rest of the pod's env is the worker's contract
    rank = config_from_env(
        {**env, "RANK": "5", "WORLD_SIZE": "6", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    )
    assert rank.assignment == ASSIGNMENT and rank.topology.worker == 2
    assert (rank.job, rank.namespace, rank.metrics_port) == ("demo", "ml", api.METRICS_PORT)


def test_asynchronous_worker_and_server_pods_are_what_their_runtimes_read() -> None:
    spec = api.parse_spec(job(mode="Asynchronous", asynchronous={"parameterServers": 2})["spec"])
    config = worker_config_from_env(env_of(worker(spec, rank=1)))
    assert (config.base.rank, config.base.world_size, config.batch_size) == (1, 3, 56)
    assert [a.host for a in config.ps_addrs] == [f"demo-ps-{i}.demo.ml.svc.cluster.local" for i in (0, 1)]
    server = build_ps_pod(
        job_ref(job()), spec=spec, shard=1, workers=3, attempt=0, plan_hash="h", momentum=0.15
    )
    ps = ps_config_from_env(env_of(server))
    assert (ps.shard, ps.shards, ps.workers, ps.port) == (1, 2, 3, api.PS_PORT)
    assert ps.hyperparameters is not None
    assert (ps.hyperparameters.learning_rate, ps.hyperparameters.momentum) == (0.05, 0.15)


def test_the_control_configmaps_assignment_is_what_workers_accept() -> None:
    control = build_control(job_ref(job()), plan=PLAN, plan_hash="h", assignment=ASSIGNMENT)
    assert stored_assignment(control) == ASSIGNMENT
    text = control["data"]["assignment.json"]
    assert (
        config_from_env({Env.ASSIGNMENT: text, Env.WORLD_SIZE: "3", Env.RANK: "0"}).assignment == ASSIGNMENT
    )


TOKEN = "s3cret-token"


@pytest.fixture
def shard(tmp_path: Path) -> Iterator[tuple[ParameterServer, str]]:
    spec = api.parse_spec(job(mode="Asynchronous")["spec"])
    pod = build_ps_pod(job_ref(job()), spec=spec, shard=0, workers=2, attempt=0, plan_hash="h", momentum=0.2)
    # what the kubelet does with the pod's token volume: the Secret's key as a file at the mount path
    (volume,) = [v for v in pod["spec"]["volumes"] if v.get("secret")]
    assert volume["secret"]["secretName"] == api.token_secret_name(job()["metadata"]["name"])
    (mount,) = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    token_file = env_of(pod)[Env.TOKEN_FILE]
    assert token_file.startswith(mount["mountPath"] + "/") and mount["readOnly"]
    local = tmp_path / token_file.removeprefix(mount["mountPath"] + "/")
    local.write_text(TOKEN)
    overrides = {
        "PACELINE_BIND_ADDRESS": "127.0.0.1",
        "PACELINE_PS_PORT": "0",
        Env.METRICS_PORT: "0",
        Env.TOKEN_FILE: str(local),
        Env.CHECKPOINT_DIR: str(tmp_path / "checkpoints"),
    }
    server = ParameterServer(ps_config_from_env({**env_of(pod), **overrides})).start()
    host, port = server.http_address
    try:
        yield server, f"http://{host}:{port}"
    finally:
        server.stop()


def test_the_operator_reads_a_real_shards_staleness_and_sets_its_momentum(
    shard: tuple[ParameterServer, str],
) -> None:
    server, url = shard
    values = np.zeros(4, dtype=np.float32)
    server.shard.initialise(fingerprint="f", values=values, learning_rate=0.1, momentum=0.0)
    for read in (
        0,
        0,
        1,
    ):  # w0 reads v0 writes v1 (τ 0), w1 read v0 writes v2 (τ 1), w0 read v1 writes v3 (τ 1)
        server.shard.apply(worker="w", read_version=read, gradient=values)
    assert read_staleness(url, 0) == ([0, 1, 1], 3)
    assert read_staleness(url, 2) == ([1], 3)
    assert not put_momentum(url, token="another-jobs-token", version=2, momentum=0.0)  # 403
    assert server.shard.hyperparameters is not None and server.shard.hyperparameters.version == 1
    assert put_momentum(url, token=TOKEN, version=2, momentum=0.0)
    hyper = server.shard.hyperparameters
    assert hyper is not None and (hyper.version, hyper.momentum, hyper.learning_rate) == (2, 0.0, 0.05)
    assert put_momentum(url, token=TOKEN, version=2, momentum=0.3)  # holds version 2 (409): fine, level-based
    assert not put_momentum("http://127.0.0.1:9", token=TOKEN, version=3, momentum=0.3)  # nothing listens


def test_the_operator_reads_the_updates_a_real_shard_dropped_for_staleness(
    shard: tuple[ParameterServer, str],
) -> None:
    server, url = shard
    values = np.zeros(2, dtype=np.float32)
    server.shard.initialise(fingerprint="f", values=values, learning_rate=0.1, momentum=0.0)
    assert read_dropped(url) == 0
    server.shard.max_staleness = 1
    for read in (0, 1, 0, 0, 2):  # τ 0, 0, 2 (dropped), 2 (dropped), 0
        server.shard.apply(worker=f"w{read}", read_version=read, gradient=values)
    assert read_dropped(url) == 2 == server.status()["droppedUpdates"]  # summed over the workers
    assert read_dropped("http://127.0.0.1:9") is None  # nothing listens


def test_the_operator_runs_without_torch() -> None:
    probe = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "import paceline.kopf_app, paceline.cli, paceline.controller.reconcile, paceline_worker.wire\n"
        "import paceline_worker.execution_plan\n"
        "print('ok')"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / d) for d in ("operator", "worker-image"))}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
