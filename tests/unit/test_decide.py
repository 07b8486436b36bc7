"""The reconcile decision, driven through a job's life on plain data."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from jobs import job

from paceline import api
from paceline.controller.apply import status_patch
from paceline.controller.decide import Decision, Observed, decide, needs_plan
from paceline.controller.planning import PlanningError
from paceline.plan_types import JobPlan, WorkerPlacement
from paceline.reasons import ConditionType, EventReason

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
PLAN = JobPlan(
    strategy="data-parallel x3",
    summary="dp x3 (2×H100, 1×T4)",
    reason="3 workers by speed",
    workers=(
        WorkerPlacement(rank=0, node="gpu-h100-0", pool="h100", gpu_product="H100", gpus=1, batch_share=56),
        WorkerPlacement(rank=1, node="gpu-h100-0", pool="h100", gpu_product="H100", gpus=1, batch_share=56),
        WorkerPlacement(rank=2, node="gpu-t4-0", pool="t4", gpu_product="Tesla-T4", gpus=1, batch_share=16),
    ),
)


class World:
    """The objects a real API server would hold, updated by applying decisions."""

    def __init__(self, tj: dict[str, Any]) -> None:
        self.job = tj
        self.pods: dict[str, dict[str, Any]] = {}
        self.service: dict[str, Any] | None = None
        self.control: dict[str, Any] | None = None
        self.events: list[Any] = []

    def step(
        self,
        now: datetime,
        plan: JobPlan | PlanningError | None = PLAN,
        usable: frozenset[str] | None = None,
        acked: dict[str, int] | None = None,
    ) -> Decision:
        spec = api.parsed(self.job["spec"])
        new_plan = plan if needs_plan(self.job, spec, self.control, usable) else None
        d = decide(
            Observed(
                job=self.job,
                spec=spec,
                pods=list(self.pods.values()),
                service=self.service,
                control=self.control,
                now=now,
                new_plan=new_plan,
                usable_nodes=usable,
                generations_acked=acked or {},
            )
        )
        self.events += d.events
        if d.status is not None:
            self.job["status"] = copy.deepcopy(d.status)
        for obj in d.create:
            if obj["kind"] == "Pod":
                made = copy.deepcopy(obj)
                made["metadata"].setdefault("uid", f"uid-{obj['metadata']['name']}")  # as the API server
                self.pods.setdefault(obj["metadata"]["name"], made)
            elif obj["kind"] == "Service":
                self.service = obj
            else:
                self.control = obj
        if d.patch_control is not None:
            self.control = d.patch_control
        for name in d.delete_pods:
            self.pods.pop(name, None)
        return d

    def run_all(self, phase: str = "Running") -> None:
        for pod in self.pods.values():
            pinned = pod["spec"].get("affinity", {}).get("nodeAffinity")  # workers are pinned by the plan
            pod["spec"]["nodeName"] = (
                pinned["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
                    "matchFields"
                ][-1]["values"][0]
                if pinned
                else "gpu-a100-0"  # parameter servers go wherever the scheduler puts them
            )
            pod["status"] = {"phase": phase, "podIP": "127.16.0.5"}

    def fail(self, rank: int, code: int, at: datetime) -> None:
        pod = self.pods[f"demo-worker-{rank}"]
        pod["status"] = {
            "phase": "Failed",
            "containerStatuses": [
                {"state": {"terminated": {"exitCode": code, "reason": "Error", "finishedAt": at.isoformat()}}}
            ],
        }


def condition(tj: dict[str, Any], ctype: ConditionType) -> dict[str, Any]:
    return next(c for c in tj["status"]["conditions"] if c["type"] == str(ctype))


def test_new_job_gets_control_service_and_one_pinned_pod_per_rank() -> None:
    world = World(job())
    d = world.step(T0)
    kinds = sorted(o["kind"] for o in d.create)
    assert kinds == ["ConfigMap", "Pod", "Pod", "Pod", "Service"]
    pod = world.pods["demo-worker-2"]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    # torchrun's launcher contract (as Kubeflow's PyTorchJob): pods, this pod, processes per pod, pod 0
    assert env["PET_NODE_RANK"] == "2" and env["PET_NNODES"] == "3" and env["PET_NPROC_PER_NODE"] == "1"
    assert env["PET_MASTER_ADDR"] == "demo-worker-0.demo.ml.svc.cluster.local"
    assert "RANK" not in env and "WORLD_SIZE" not in env  # torchrun sets them per process
    assert pod["spec"]["containers"][0]["command"] == [
        "python",
        "-m",
        "paceline_worker.launch",
        "--",
        "python",
        "train.py",
    ]
    assert json.loads(env["PACELINE_PLAN"]) == {"tensorParallel": 1, "modules": {}}
    assert env["EPOCHS"] == "3"  # the user's env survives
    assert '"batchSizes":[56,56,16]' in env["PACELINE_ASSIGNMENT"]
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchFields"][-1] == {
        "key": "metadata.name",
        "operator": "In",
        "values": ["gpu-t4-0"],
    }
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "uid-1234"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert condition(world.job, ConditionType.PLANNED)["status"] == "True"
    assert [e.reason for e in d.events] == [EventReason.PLANNED]
    assert world.job["status"]["phase"] == "Pending"


def test_running_job_is_stable_and_idempotent() -> None:
    world = World(job())
    world.step(T0)
    world.run_all()
    d = world.step(T0 + timedelta(seconds=1))
    assert world.job["status"]["phase"] == "Running"
    assert world.job["status"]["workersReady"] == "3/3"
    assert EventReason.PLACED in [e.reason for e in d.events]
    again = world.step(T0 + timedelta(seconds=2))
    assert again.create == [] and again.delete_pods == [] and again.events == []
    assert again.status is not None and status_patch(world.job["status"], again.status) == {}  # no write


def test_retryable_failure_restarts_all_workers_after_backoff() -> None:
    world = World(job())
    world.step(T0)
    world.run_all()
    world.step(T0)
    world.fail(1, 137, T0 + timedelta(seconds=5))
    world.fail(0, 1, T0 + timedelta(seconds=6))  # a peer dying makes the others exit 1 shortly after
    d = world.step(T0 + timedelta(seconds=7))
    assert world.job["status"]["restarts"] == 1 and world.job["status"]["attempt"] == 1
    assert sorted(d.delete_pods) == ["demo-worker-0", "demo-worker-1", "demo-worker-2"]
    assert EventReason.WORKER_FAILED in [e.reason for e in d.events]
    assert "exited with code 137" in condition(world.job, ConditionType.RESTARTING)["message"]
    # still inside the 5 s backoff: nothing is created
    d = world.step(T0 + timedelta(seconds=9))
    assert not [o for o in d.create if o["kind"] == "Pod"]
    assert world.job["status"]["phase"] == "Restarting"
    d = world.step(T0 + timedelta(seconds=13))
    new_pods = [o for o in d.create if o["kind"] == "Pod"]
    assert len(new_pods) == 3
    assert all(p["metadata"]["labels"][api.LABEL_ATTEMPT] == "1" for p in new_pods)


def test_permanent_exit_code_fails_the_job_and_stops_running_workers() -> None:
    world = World(job())
    world.step(T0)
    world.run_all()
    world.step(T0)
    world.fail(2, 2, T0)
    d = world.step(T0 + timedelta(seconds=1))
    failed = condition(world.job, ConditionType.FAILED)
    assert failed["status"] == "True" and failed["reason"] == "PermanentFailure"
    assert "rank 2" in failed["message"] and "code 2" in failed["message"]
    assert sorted(d.delete_pods) == ["demo-worker-0", "demo-worker-1"]
    # terminal: nothing is re-created afterwards
    d = world.step(T0 + timedelta(seconds=30))
    assert d.create == []


def test_backoff_limit_exhausted_marks_failed() -> None:
    world = World(job(runPolicy={"restartPolicy": "OnFailure", "backoffLimit": 1, "backoffSeconds": 0}))
    world.step(T0)
    for attempt in range(2):
        world.run_all()
        world.step(T0)
        world.fail(0, 1, T0)
        world.step(T0 + timedelta(seconds=1 + attempt))
        world.step(T0 + timedelta(seconds=2 + attempt))
    failed = condition(world.job, ConditionType.FAILED)
    assert failed["reason"] == "BackoffLimitExceeded"
    assert world.job["status"]["phase"] == "Failed"


def test_all_workers_exit_zero_means_succeeded() -> None:
    world = World(job())
    world.step(T0)
    world.run_all("Succeeded")
    d = world.step(T0 + timedelta(seconds=60))
    assert world.job["status"]["phase"] == "Succeeded"
    assert EventReason.SUCCEEDED in [e.reason for e in d.events]
    assert world.job["status"]["completionTime"] == "2026-11-23T12:01:00Z"


def test_invalid_update_keeps_running_workers() -> None:
    world = World(job())
    world.step(T0)
    world.run_all()
    world.step(T0)
    world.job["spec"]["optimizer"]["learningRate"] = "NaN"
    world.job["metadata"]["generation"] = 2
    d = world.step(T0 + timedelta(seconds=1))
    failed = condition(world.job, ConditionType.FAILED)
    assert failed["reason"] == "InvalidSpec" and "3 running worker(s) left untouched" in failed["message"]
    assert d.delete_pods == [] and len(world.pods) == 3
    assert [e.reason for e in d.events] == [EventReason.INVALID_SPEC]
    # fixing the spec clears the failure and the job carries on
    world.job["spec"]["optimizer"]["learningRate"] = "0.05"
    world.job["metadata"]["generation"] = 3
    world.step(T0 + timedelta(seconds=2))
    assert condition(world.job, ConditionType.FAILED)["status"] == "False"
    assert world.job["status"]["phase"] == "Running"


def test_unschedulable_plan_is_reported_and_retried() -> None:
    world = World(job())
    d = world.step(T0, plan=PlanningError("only 1 worker slot free; spec.replicas.min is 2"))
    planned = condition(world.job, ConditionType.PLANNED)
    assert planned["status"] == "False" and planned["reason"] == "Unschedulable"
    assert d.requeue_after is not None and not d.create
    assert [e.reason for e in d.events] == [EventReason.UNSCHEDULABLE]


def test_spec_change_replans_and_replaces_stale_pods() -> None:
    world = World(job())
    world.step(T0)
    world.run_all()
    world.step(T0)
    world.job["spec"]["globalBatchSize"] = 256
    smaller = JobPlan(strategy="dp x2", summary="dp x2", reason="r", workers=PLAN.workers[:2])
    d = world.step(T0 + timedelta(seconds=1), plan=smaller)
    assert d.patch_control is not None
    assert '"version":2' in d.patch_control["data"]["assignment.json"]
    assert sorted(d.delete_pods) == ["demo-worker-0", "demo-worker-1", "demo-worker-2"]
    assert EventReason.RESIZED in [e.reason for e in d.events]


def test_asynchronous_job_gets_parameter_servers_and_compensated_momentum() -> None:
    world = World(job(mode="Asynchronous", asynchronous={"parameterServers": 2}))
    d = world.step(T0)
    ps = sorted(
        o["metadata"]["name"] for o in d.create if o["kind"] == "Pod" and "-ps-" in o["metadata"]["name"]
    )
    assert ps == ["demo-ps-0", "demo-ps-1"]
    server = world.pods["demo-ps-1"]
    container = server["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["command"] == ["python", "-m", "paceline_worker.asynchronous.ps"]
    assert "nvidia.com/gpu" not in (container.get("resources") or {}).get("limits", {})
    assert env["PACELINE_ROLE"] == "ps" and env["PACELINE_PS_SHARD"] == "1" and env["WORLD_SIZE"] == "3"
    # no staleness measured yet: the prior for M = 3 (implicit 1 − 1/3) composes to 0.7, lowered to what the
    # delayed recursion keeps stable up to half the target's own edge (no curvature measured yet)
    assert '"momentum":0.371' in env["PACELINE_HYPERPARAMETERS"]
    worker = {e["name"]: e.get("value") for e in world.pods["demo-worker-0"]["spec"]["containers"][0]["env"]}
    assert worker["PACELINE_ROLE"] == "worker"
    assert worker["PACELINE_PS_ADDRS"] == (
        "demo-ps-0.demo.ml.svc.cluster.local:29600,demo-ps-1.demo.ml.svc.cluster.local:29600"
    )
    # a parameter server failing stops everyone: all pods of the attempt are re-created
    world.run_all()
    world.step(T0)
    world.pods["demo-ps-0"]["status"] = {
        "phase": "Failed",
        "containerStatuses": [{"state": {"terminated": {"exitCode": 137, "finishedAt": T0.isoformat()}}}],
    }
    d = world.step(T0 + timedelta(seconds=1))
    assert sorted(d.delete_pods) == [
        "demo-ps-0",
        "demo-ps-1",
        "demo-worker-0",
        "demo-worker-1",
        "demo-worker-2",
    ]


def test_a_lost_node_keeps_the_other_pods_and_tells_them_their_new_generation() -> None:
    """Elastic job (replicas 2..4): gpu-h100-0 is lost. Its two pods are deleted, two new ones are made on
    the node the new plan picks (names no pod holds, generation 1), and the T4 pod stays: it becomes rank 0
    and its launcher is PUT generation 1 until it acknowledges."""
    from dataclasses import replace

    world = World(job())
    world.step(T0)
    world.run_all()
    world.step(T0 + timedelta(seconds=1))
    survivor_uid = world.pods["demo-worker-2"]["metadata"].get("uid") or "uid-demo-worker-2"
    world.pods["demo-worker-2"]["metadata"]["uid"] = survivor_uid
    world.pods["demo-worker-2"]["status"]["podIP"] = "127.16.3.7"
    moved = replace(
        PLAN,
        workers=(
            replace(PLAN.workers[0], node="gpu-a100-1"),
            replace(PLAN.workers[1], node="gpu-a100-1"),
            PLAN.workers[2],
        ),
    )
    usable = frozenset({"gpu-t4-0", "gpu-a100-1"})
    d = world.step(T0 + timedelta(seconds=2), plan=moved, usable=usable)
    assert sorted(d.delete_pods) == ["demo-worker-0", "demo-worker-1"]
    made = {o["metadata"]["name"]: o for o in d.create if o["kind"] == "Pod"}
    assert sorted(made) == ["demo-worker-3", "demo-worker-4"]
    env = {e["name"]: e.get("value") for e in made["demo-worker-4"]["spec"]["containers"][0]["env"]}
    assert env["PET_NODE_RANK"] == "2" and env["PET_NNODES"] == "3" and env["PACELINE_GENERATION"] == "1"
    assert env["PET_MASTER_ADDR"] == "demo-worker-2.demo.ml.svc.cluster.local"
    assert env["PET_MASTER_PORT"] == str(api.master_port("uid-1234", 1))
    assert made["demo-worker-4"]["metadata"]["annotations"]["paceline.dev/generation"] == "1"
    assert "demo-worker-2" not in d.delete_pods
    (put,) = d.generation_puts
    body = json.loads(put.body)
    assert put.url == "http://127.16.3.7:9401/generation" and put.pod == survivor_uid
    assert (body["generation"], body["nodeRank"], body["nnodes"]) == (1, 0, 3)
    assert body["masterAddr"] == "127.16.3.7" and body["masterPort"] == api.master_port("uid-1234", 1)
    assert body["assignment"]["batchSizes"] == [16, 56, 56]
    assert any(e.reason is EventReason.RESIZED for e in world.events)
    again = world.step(T0 + timedelta(seconds=3), usable=usable)
    assert [p.pod for p in again.generation_puts] == [survivor_uid], "pushed until acknowledged"
    acked = world.step(T0 + timedelta(seconds=4), usable=usable, acked={survivor_uid: 1})
    assert acked.generation_puts == [] and acked.create == [] and acked.delete_pods == []


def test_a_job_with_a_fixed_size_recreates_its_pods_on_a_lost_node() -> None:
    """replicas.min = max: no launcher waits for a new generation, so every pod is new (fresh names, so
    nothing waits for the old pods to go) and nothing is pushed."""
    from dataclasses import replace

    world = World(job(replicas={"min": 3, "max": 3}))
    world.step(T0)
    world.run_all()
    world.step(T0 + timedelta(seconds=1))
    moved = replace(
        PLAN, workers=(*(replace(w, node="gpu-a100-1") for w in PLAN.workers[:2]), PLAN.workers[2])
    )
    d = world.step(T0 + timedelta(seconds=2), plan=moved, usable=frozenset({"gpu-t4-0", "gpu-a100-1"}))
    assert sorted(d.delete_pods) == ["demo-worker-0", "demo-worker-1", "demo-worker-2"]
    assert sorted(o["metadata"]["name"] for o in d.create if o["kind"] == "Pod") == [
        "demo-worker-3",
        "demo-worker-4",
        "demo-worker-5",
    ]
    assert d.generation_puts == []


def test_a_worker_no_node_takes_is_planned_without_after_the_timeout() -> None:
    """Gang rule: an elastic job whose rank-2 pod stays unscheduled past elastic.pendingTimeoutSeconds
    re-plans without that node (Warning event, status.unschedulableNodes); the running pods stay."""
    from dataclasses import replace

    world = World(job(elastic={"pendingTimeoutSeconds": 60}))
    world.step(T0)
    world.run_all()
    stuck = world.pods["demo-worker-2"]
    stuck["spec"]["nodeName"], stuck["status"] = None, {"phase": "Pending"}
    stuck["metadata"]["creationTimestamp"] = T0.isoformat()
    world.step(T0 + timedelta(seconds=30))
    assert "unschedulableNodes" not in world.job["status"]
    d = world.step(T0 + timedelta(seconds=61))
    assert world.job["status"]["unschedulableNodes"] == ["gpu-t4-0"]
    assert any(e.reason is EventReason.UNSCHEDULABLE and "gpu-t4-0" in e.message for e in d.events)
    spec = api.parse_spec(world.job["spec"])
    assert needs_plan(world.job, spec, world.control, frozenset({"gpu-h100-0", "gpu-t4-0"}))
    smaller = replace(PLAN, workers=PLAN.workers[:2])
    d = world.step(T0 + timedelta(seconds=62), plan=smaller)
    assert d.delete_pods == ["demo-worker-2"] and d.create == []
    assert world.job["status"]["workersReady"] == "2/2"
