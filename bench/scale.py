"""Scale benchmark: one local cluster with 500 fake GPU nodes; 100 TrainingJobs x 16 workers applied at once
through the operator, then the same 1600 pods (same names, same nodes, built by the same code) created
directly in groups of 16 without the operator — the baseline. Then everything is deleted. Before both, one
unmeasured round of 1600 plain pods grows the API server's watch cache (see `Bench.warm_up`), so neither
run pays for a cold cluster alone.

Run (takes the local-cluster lock other cluster users take too):
    flock /tmp/paceline-e2e.lock .venv/bin/python bench/scale.py
Progress goes to stderr; the second-to-last stdout line is the breakdown (where the time goes), the last
line the result:

apply_to_all_running_s: per job, seconds from the moment all 100 jobs were applied until its 16th pod
  was Running; direct_pods_to_all_running_s: the same per group of 16 pods created directly (the same
  8 client threads as the operator's pass threads, each group's pods side by side as the operator
  creates a job's pods, in its pool of 16). operator_overhead_ratio: p99 with ÷ p99 without.
delete_to_gone_s: per job, from `delete` until its last pod is gone (garbage collection).
operator_cpu_s_per_job_hour_idle, api_requests_per_s_idle: over 60 s with every job Running and nothing
  changing (requests from the apiserver's audit log of the operator's ServiceAccount).
operator_rss_mb: the operator's peak resident memory. duplicate_pods: pod names created more than once.
orphans_after_delete: pods, Services and ConfigMaps of the jobs left once the jobs are gone.
Breakdown: per run the stage percentiles of the pods, the CPU seconds of every component and of the rest
of the machine ("other": a shared machine's other users), and cluster_cpu_ratio, the cluster's CPU with the
operator ÷ without (what a CPU-bound machine of its own would show as the ratio).
Pods carry paceline.dev/no-process: kwok marks them Running and the process runtime starts nothing;
jobs use balancing policy Static, so no worker is scraped.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import paceline_dev  # noqa: F401
except ImportError:  # not pip-installed yet: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worker-image"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

import argparse
import contextlib
import json
import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config, watch

from _local_cluster import throwaway_cluster
from paceline import api
from paceline.adapters import kube
from paceline.builders import JobRef, build_worker_pod, plan_from_json
from paceline.controller.apply import side_by_side
from paceline.plan_types import sharding_json
from paceline_dev.localcluster import processes
from paceline_dev.localcluster.cluster import LocalCluster
from paceline_dev.localcluster.config import NO_PROCESS_ANNOTATION
from paceline_worker.wire import parse_assignment

NAMESPACE = "scale"
THREADS = 8  # the operator runs passes in 8 threads; the baseline creates with 8 too
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-scheduler",
    "kube-controller-manager",
    "kwok",
    "process-runtime",
)
CLUSTER = {
    "pools": [
        {
            "name": "h100",
            "gpuProduct": "NVIDIA-H100-80GB-HBM3",
            "gpuMemoryMiB": 81559,
            "instanceType": "p5.48xlarge",
            "nodes": 100,
            "gpusPerNode": 8,
            "relativeSpeed": 4,
        },
        {
            "name": "a100",
            "gpuProduct": "NVIDIA-A100-SXM4-40GB",
            "gpuMemoryMiB": 40960,
            "instanceType": "p4d.24xlarge",
            "nodes": 200,
            "gpusPerNode": 4,
            "relativeSpeed": 2,
        },
        {
            "name": "t4",
            "gpuProduct": "Tesla-T4",
            "gpuMemoryMiB": 15360,
            "instanceType": "g4dn.12xlarge",
            "nodes": 200,
            "gpusPerNode": 4,
            "relativeSpeed": 1,
        },
    ],
    # tuned like a real cluster of this size, the same for both runs: client QPS of scheduler and
    # controller-manager, kwok's workers, and node leases renewed every minute instead of every 10 s
    # (500 leases renewed every 10 s would be a constant 50 writes/s on this 2-core machine)
    "controlPlane": {"clientQPS": 500, "kwokParallelism": 16, "nodeLeaseSeconds": 240},
}


def log(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 2), "p99": round(percentile(values, 0.99), 2)}


def job_of(pod: str) -> str:
    return pod.rsplit("-worker-", 1)[0]


@dataclass
class PodTimes:
    created: float | None = None
    bound: float | None = None
    running: float | None = None
    gone: float | None = None
    uids: set[str] = field(default_factory=set)


class PodWatch:
    """Every pod of the namespace: when it was created, bound, Running and gone (monotonic seconds)."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self.core = core
        self.pods: dict[str, PodTimes] = {}
        self.events = 0  # pod events seen: what every watcher of pods receives
        self.lock, self.stop = threading.Lock(), threading.Event()
        listed = json.loads(core.list_namespaced_pod(NAMESPACE, _preload_content=False).data)
        self.version = listed["metadata"]["resourceVersion"]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._follow()
            except Exception as err:  # e.g. 410 Gone (the client raises KeyError on raw ERROR events)
                if self.stop.is_set():
                    return
                log(f"pod watch restarts after {err!r}")
                time.sleep(0.5)
                with contextlib.suppress(Exception):  # the next round retries
                    listed = json.loads(self.core.list_namespaced_pod(NAMESPACE, _preload_content=False).data)
                    self.version = listed["metadata"]["resourceVersion"]

    def _follow(self) -> None:
        while not self.stop.is_set():
            stream = watch.Watch()
            for event in stream.stream(
                self.core.list_namespaced_pod,
                NAMESPACE,
                resource_version=self.version,
                timeout_seconds=600,
                deserialize=False,
            ):
                now, pod = time.monotonic(), event["object"]  # deserialize=False: the object as sent
                self.version = pod["metadata"]["resourceVersion"]
                with self.lock:
                    self._record(event["type"], pod, now)

    def _record(self, kind: str, pod: dict[str, Any], now: float) -> None:
        self.events += 1
        times = self.pods.setdefault(pod["metadata"]["name"], PodTimes())
        times.uids.add(pod["metadata"]["uid"])
        times.created = times.created or now
        if (pod.get("spec") or {}).get("nodeName"):
            times.bound = times.bound or now
        if (pod.get("status") or {}).get("phase") == "Running":
            times.running = times.running or now
        if kind == "DELETED":
            times.gone = now

    def reset(self) -> None:
        with self.lock:
            self.pods = {}

    def count(self, what: Callable[[PodTimes], bool]) -> int:
        with self.lock:
            return sum(1 for t in self.pods.values() if what(t))

    def snapshot(self) -> dict[str, PodTimes]:
        with self.lock:
            return dict(self.pods)


def wait_until(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout_s:.0f} s")
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all processes, all cores), from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def audit_requests(path: Path, start: datetime, end: datetime) -> dict[str, int]:
    """The operator's requests received in [start, end), by verb and resource (one per audit ID)."""
    seen: dict[str, str] = {}
    for line in path.read_text().splitlines() if path.exists() else ():
        event = json.loads(line)
        received = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if start <= received < end:
            ref = event.get("objectRef") or {}
            resource = "/".join(r for r in (ref.get("resource"), ref.get("subresource")) if r)
            seen[event["auditID"]] = f"{event['verb']} {resource}"
    counts: dict[str, int] = {}
    for kind in seen.values():
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def audit_latency_s(path: Path, start: datetime, end: datetime, verb: str, resource: str) -> dict[str, float]:
    """How long the API server took to answer the operator's `verb resource` requests received in
    [start, end): received until the response was complete, as the audit log records it."""
    took: dict[str, float] = {}
    for line in path.read_text().splitlines() if path.exists() else ():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if event["verb"] != verb or ref.get("resource") != resource or ref.get("subresource"):
            continue
        received = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
        complete = datetime.fromisoformat(event["stageTimestamp"].replace("Z", "+00:00"))
        if start <= received < end and event.get("stage") == "ResponseComplete":
            took[event["auditID"]] = (complete - received).total_seconds()
    return summary(list(took.values())) if took else {}


def training_job(index: int, workers: int) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": f"job-{index:03d}", "namespace": NAMESPACE},
        "spec": {
            "replicas": {"min": workers, "max": workers},
            "globalBatchSize": 16 * workers,
            "balancing": {"policy": "Static"},
            "template": {
                "metadata": {"annotations": {NO_PROCESS_ANNOTATION: "true"}},
                "spec": {
                    "containers": [{"name": "trainer", "image": "paceline/worker:dev", "command": ["train"]}]
                },
            },
        },
    }


class Bench:
    def __init__(self, cluster: LocalCluster, jobs: int, workers: int) -> None:
        self.cluster, self.jobs, self.workers = cluster, jobs, workers
        api_client = config.new_client_from_config(str(cluster.paths.kubeconfig))
        api_client.configuration.connection_pool_maxsize = THREADS * 2
        self.core, self.custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
        self.pids = {
            name: proc.pid
            for name in (*COMPONENTS, "operator")
            if (proc := processes.running(cluster.paths.state, name)) is not None
        }
        os.environ["KUBECONFIG"] = str(
            cluster.paths.kubeconfig
        )  # kube.create (warm-up, baseline) as the admin
        self.core.create_namespace({"metadata": {"name": NAMESPACE}})
        self.watch = PodWatch(self.core)
        self.breakdown: dict[str, Any] = {}

    def cpu(self) -> dict[str, float]:
        alive = {name: pid for name, pid in self.pids.items() if Path(f"/proc/{pid}").exists()}
        return {
            **{name: cpu_seconds(pid) for name, pid in alive.items()},
            "bench": cpu_seconds(os.getpid()),
            "machine": machine_busy_s(),
        }

    @staticmethod
    def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """CPU seconds per component between two readings; `other` is what the machine spent on everything
        else (other users of a shared machine), `capacity` what its cores could have given."""
        used = {k: after[k] - before.get(k, 0.0) for k in after if k != "machine"}
        used["other"] = after["machine"] - before["machine"] - sum(used.values())
        return {k: round(v, 1) for k, v in used.items()}

    def ramp(self, label: str, create: Callable[[int], None]) -> list[float]:
        """Create everything (8 threads), wait until every pod runs; per job/group seconds to all Running."""
        total = self.jobs * self.workers
        before, start, events = self.cpu(), datetime.now(UTC), self.watch.events
        t0 = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(create, range(self.jobs)))
        created = time.monotonic() - t0
        wait_until(
            f"{total} pods Running ({label})",
            lambda: self.watch.count(lambda t: t.running is not None) >= total,
            600,
        )
        done, end = time.monotonic(), datetime.now(UTC)
        pods = self.watch.snapshot()
        per_job: dict[str, float] = {}
        for name, times in pods.items():
            assert times.running is not None
            per_job[job_of(name)] = max(per_job.get(job_of(name), 0.0), times.running - t0)
        after = self.cpu()
        stages = {
            "create_s": summary([t.created - t0 for t in pods.values() if t.created]),
            "schedule_s": summary([t.bound - t.created for t in pods.values() if t.bound and t.created]),
            "kwok_running_s": summary([t.running - t.bound for t in pods.values() if t.running and t.bound]),
        }
        self.breakdown[label] = {
            "wall_s": round(done - t0, 1),
            "pod_events": self.watch.events - events,
            "client_calls_done_s": round(created, 1),
            "pod_stages": stages,
            "cpu_s": self.cpu_used(before, after),
            "cpu_capacity_s": round((done - t0) * (os.cpu_count() or 1), 1),
        }
        if label == "operator":
            self.breakdown[label]["operator_requests"] = audit_requests(self.cluster.audit_log, start, end)
            self.breakdown[label]["pod_create_server_s"] = audit_latency_s(
                self.cluster.audit_log, start, end, "create", "pods"
            )
        log(f"{label}: {total} pods Running in {done - t0:.1f} s ({self.breakdown[label]})")
        return list(per_job.values())

    def warm_up(self) -> None:
        """Run the same load once, unmeasured (plain pods of one GPU, 8 threads), then delete it: an API
        server's watch cache starts small and hands its first watchers (scheduler, kwok, operator, ...)
        10-event buffers, closing any that falls behind a burst; a cluster that has seen a burst has grown
        them. Without this the first measured run, whichever it is, pays for that alone."""
        total = self.jobs * self.workers
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": NAMESPACE, "annotations": {NO_PROCESS_ANNOTATION: "true"}},
            "spec": {
                "containers": [
                    {"name": "c", "image": "none", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
                ],
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
        }

        def create(index: int) -> None:
            names = [f"warm-{index:03d}-worker-{rank}" for rank in range(self.workers)]
            side_by_side(kube.create, [{**pod, "metadata": {**pod["metadata"], "name": n}} for n in names])

        t0 = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(create, range(self.jobs)))
        wait_until(
            "warm-up pods Running", lambda: self.watch.count(lambda t: t.running is not None) >= total, 600
        )
        self.core.delete_collection_namespaced_pod(NAMESPACE, grace_period_seconds=0)
        wait_until("warm-up pods gone", lambda: self.watch.count(lambda t: t.gone is not None) >= total, 600)
        self.watch.reset()
        self.breakdown["warm_up"] = {"wall_s": round(time.monotonic() - t0, 1)}
        log(f"warm-up: {total} pods Running and gone in {time.monotonic() - t0:.1f} s")

    def with_operator(self) -> tuple[list[float], int]:
        def apply(index: int) -> None:
            doc = training_job(index, self.workers)
            self.custom.create_namespaced_custom_object(api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, doc)

        latencies = self.ramp("operator", apply)
        duplicates = sum(len(t.uids) - 1 for t in self.watch.snapshot().values())
        wait_until("every job reports Running", self.all_jobs_running, 300)
        return latencies, duplicates

    def all_jobs_running(self) -> bool:
        jobs = self.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, NAMESPACE, api.PLURAL)[
            "items"
        ]
        return len(jobs) == self.jobs and all((j.get("status") or {}).get("phase") == "Running" for j in jobs)

    def idle(self, seconds: float) -> tuple[float, float, float]:
        """(operator CPU s per job-hour, API requests/s, peak RSS MB) with everything Running, unchanged."""
        time.sleep(5)  # the last status writes of the ramp land
        pid = self.pids["operator"]
        before, cpu0, start = self.cpu(), cpu_seconds(pid), datetime.now(UTC)
        time.sleep(seconds)
        cpu1, end, after = cpu_seconds(pid), datetime.now(UTC), self.cpu()
        requests = audit_requests(self.cluster.audit_log, start, end)
        self.breakdown["idle"] = {
            "seconds": seconds,
            "operator_cpu_s": round(cpu1 - cpu0, 2),
            "operator_requests": requests,
            "cpu_s": self.cpu_used(before, after),  # the cluster's background: leases, controllers
        }
        per_job_hour = (cpu1 - cpu0) / self.jobs * 3600 / seconds
        return per_job_hour, sum(requests.values()) / seconds, peak_rss_mb(pid)

    def plans(self) -> dict[str, tuple[JobRef, api.JobSpec, dict[str, str]]]:
        """Each job's identity, spec and control ConfigMap (plan, assignment): what its pods came from."""
        jobs = self.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, NAMESPACE, api.PLURAL)[
            "items"
        ]
        controls = {
            cm.metadata.labels[api.LABEL_JOB]: cm.data
            for cm in self.core.list_namespaced_config_map(
                NAMESPACE, label_selector=f"{api.LABEL_ROLE}=control"
            ).items
        }
        return {
            j["metadata"]["name"]: (
                JobRef(name=j["metadata"]["name"], namespace=NAMESPACE, uid=j["metadata"]["uid"]),
                api.parse_spec(j["spec"]),
                controls[j["metadata"]["name"]],
            )
            for j in jobs
        }

    def delete_jobs(self) -> tuple[list[float], int]:
        total = self.jobs * self.workers
        t0 = time.monotonic()
        names = [f"job-{i:03d}" for i in range(self.jobs)]
        with ThreadPoolExecutor(THREADS) as pool:
            list(
                pool.map(
                    lambda n: self.custom.delete_namespaced_custom_object(
                        api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, n
                    ),
                    names,
                )
            )
        wait_until("every pod gone", lambda: self.watch.count(lambda t: t.gone is not None) >= total, 600)
        per_job: dict[str, float] = {}
        for name, times in self.watch.snapshot().items():
            assert times.gone is not None
            per_job[job_of(name)] = max(per_job.get(job_of(name), 0.0), times.gone - t0)
        selector = api.LABEL_JOB
        left = lambda: (  # noqa: E731
            len(self.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items)
            + len(self.core.list_namespaced_service(NAMESPACE, label_selector=selector).items)
            + len(self.core.list_namespaced_config_map(NAMESPACE, label_selector=selector).items)
        )
        with contextlib.suppress(TimeoutError):
            wait_until("children garbage-collected", lambda: left() == 0, 120)
        self.breakdown["delete"] = {"wall_s": round(time.monotonic() - t0, 1)}
        return list(per_job.values()), left()

    def direct(self, plans: dict[str, tuple[JobRef, api.JobSpec, dict[str, str]]]) -> list[float]:
        """The baseline: the operator's pods for each job, built by the same code, created directly."""
        self.cluster.stop_component("operator")
        self.watch.reset()
        groups: list[list[dict[str, Any]]] = []
        for ref, spec, data in plans.values():
            plan, plan_hash = plan_from_json(data["plan.json"]), data["planHash"]
            assignment = parse_assignment(data["assignment.json"], world_size=len(plan.workers))
            group = []
            for placement in plan.workers:
                pod = build_worker_pod(
                    ref,
                    spec=spec,
                    placement=placement,
                    world_size=len(plan.workers),
                    attempt=0,
                    plan_hash=plan_hash,
                    assignment=assignment,
                    port=api.master_port(ref.uid),
                    sharding=sharding_json(plan),
                )
                del pod["metadata"]["ownerReferences"]  # the job is gone: nothing owns them
                group.append(pod)
            groups.append(group)

        def create(index: int) -> None:  # the operator's own client code, so only the operator's work differs
            side_by_side(kube.create, groups[index])

        latencies = self.ramp("direct", create)
        self.core.delete_collection_namespaced_pod(NAMESPACE, grace_period_seconds=0)
        wait_until(
            "baseline pods gone",
            lambda: self.watch.count(lambda t: t.gone is not None) >= len(self.watch.snapshot()),
            600,
        )
        return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of the idle measurement")
    parser.add_argument("--cold", action="store_true", help="no warm-up round before the measured runs")
    parser.add_argument("--keep", action="store_true", help="keep the state directory (logs) afterwards")
    args = parser.parse_args()
    started = time.monotonic()
    bench: Bench | None = None
    with throwaway_cluster(CLUSTER, prefix="paceline-scale-", keep=args.keep, report=log) as cluster:
        try:
            bench = Bench(cluster, args.jobs, args.workers)
            nodes = sum(p["nodes"] for p in CLUSTER["pools"])
            log(f"cluster with {nodes} nodes up in {time.monotonic() - started:.0f} s")
            if not args.cold:
                bench.warm_up()
            applied, duplicates = bench.with_operator()
            cpu_per_job_hour, requests_per_s, rss_mb = bench.idle(args.idle)
            plans = bench.plans()
            gone, orphans = bench.delete_jobs()
            direct = bench.direct(plans)
        finally:
            if bench is not None:
                bench.watch.stop.set()  # the API server goes away: no restarts
    log(f"done in {time.monotonic() - started:.0f} s")
    with_op, without = summary(applied), summary(direct)
    result = {
        "jobs": args.jobs,
        "pods": args.jobs * args.workers,
        "apply_to_all_running_s": with_op,
        "direct_pods_to_all_running_s": without,
        "operator_overhead_ratio": round(with_op["p99"] / without["p99"], 2),
        "delete_to_gone_s": {"p99": summary(gone)["p99"]},
        "operator_cpu_s_per_job_hour_idle": round(cpu_per_job_hour, 2),
        "operator_rss_mb": round(rss_mb, 1),
        "api_requests_per_s_idle": round(requests_per_s, 3),
        "duplicate_pods": duplicates,
        "orphans_after_delete": orphans,
    }
    assert bench is not None
    work = {  # CPU seconds this cluster spent (not other users of the machine): the ratio a CPU-bound,
        # unshared machine would show
        run: sum(v for k, v in bench.breakdown[run]["cpu_s"].items() if k != "other")
        for run in ("operator", "direct")
    }
    bench.breakdown["cluster_cpu_ratio"] = round(work["operator"] / work["direct"], 2)
    print(json.dumps({"breakdown": bench.breakdown}, separators=(",", ":")))
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
