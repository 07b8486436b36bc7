"""Fault benchmark: jobs survive faults, bad specs are refused, control writes need the job's token.

On a throwaway local cluster (the default node pools), one after another:
  * a job while the operator is SIGKILLed 10 times at random points (and started again each time);
  * a job while kube-apiserver and then etcd are restarted, unauthenticated and wrong-token writes are sent
    to its workers' control endpoints, and its control ConfigMap is deleted by hand;
  * a job one of whose worker processes is SIGKILLed (it restarts from its checkpoint);
  * every spec of the bad-spec catalogue (paceline_dev.bad_specs), applied as a user would.
Each job's ranks record the samples of every step on the job's checkpoint volume; pod creations are counted
by a watch that survives the control-plane restarts.

    flock /tmp/paceline-e2e.lock .venv/bin/python bench/faults.py

Progress goes to stderr; the last stdout line is one JSON object:
  operator_kills, apiserver_restarts, etcd_restarts, worker_kills   faults injected
  jobs_completed / jobs_total        jobs that reached Succeeded
  samples_lost                       samples of whole epochs skipped in the final model (+ steps missing ×
                                     global batch); samples_duplicated likewise
  extra_pod_creations                pods created beyond the plan's workers and the pods each restart needs
                                     (a synchronous job restarts as a gang: its workers once more)
  bad_specs_refused / bad_specs_total   refused by the expected layer with the catalogued message
  unauthenticated_writes_refused / unauthenticated_writes   PUTs without or with a wrong token answered
                                     401/403 (a stale body: one that got through would change nothing)
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
import json
import os
import random
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from _local_cluster import throwaway_cluster
from _tp_pods import global_batches, sample_accounting, step_records
from paceline_dev import bad_specs, faults, jobs
from paceline_dev.localcluster.cluster import LocalCluster
from paceline_dev.localcluster.config import default_config_text
from paceline_worker.wire import LAUNCHER_PORT, METRICS_PORT, Route

SAMPLES, BATCH, WORKERS = 240, 24, 2
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # pod IPs are loopback: no proxy


def log(message: str) -> None:
    print(f"[faults] {message}", file=sys.stderr, flush=True)


def wait(what: str, check: Callable[[], Any], timeout_s: float = 300, interval_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@dataclass
class Tally:
    operator_kills: int = 0
    apiserver_restarts: int = 0
    etcd_restarts: int = 0
    worker_kills: int = 0
    jobs_completed: int = 0
    jobs_total: int = 0
    samples_lost: int = 0
    samples_duplicated: int = 0
    extra_pod_creations: int = 0
    control_configmaps_recreated: int = 0
    bad_specs_refused: int = 0
    bad_specs_total: int = 0
    unauthenticated_writes_refused: int = 0
    unauthenticated_writes: int = 0
    notes: list[str] = field(default_factory=list)


class Job:
    """One recorded job in its own namespace, and the pods created for it."""

    def __init__(self, cluster: LocalCluster, name: str, steps: int, tally: Tally) -> None:
        self.cluster, self.name, self.steps, self.tally = cluster, name, steps, tally
        self.namespace = f"faults-{name}"
        cluster.kubectl("create", "namespace", self.namespace)
        self.creations = faults.PodCreations(cluster.paths.kubeconfig, self.namespace).start()
        doc = jobs.recorded_job(name, steps=steps, samples=SAMPLES, batch=BATCH, workers=WORKERS)
        cluster.kubectl("apply", "-n", self.namespace, "-f", "-", input_text=json.dumps(doc))
        tally.jobs_total += 1

    def status(self) -> dict[str, Any]:
        proc = self.cluster.run_kubectl(
            "get", "tj", self.name, "-n", self.namespace, "-o", "json", check=False
        )
        return dict(json.loads(proc.stdout).get("status") or {}) if proc.returncode == 0 else {}

    def records(self) -> list[dict[str, Any]]:
        volume = self.cluster.paths.state / "volumes" / self.namespace / f"{self.name}-checkpoint"
        return step_records(volume / self.name / "records")

    def steps_done(self) -> int:
        return max((r["step"] + 1 for rank in self.records() for r in rank["records"]), default=0)

    def pod_ips(self) -> list[str]:
        pods = json.loads(self.cluster.kubectl("get", "pods", "-n", self.namespace, "-o", "json"))["items"]
        return [p["status"]["podIP"] for p in pods if (p.get("status") or {}).get("podIP")]

    def finish(self) -> None:
        """Wait for the end; add completion, sample accounting and extra pod creations to the tally."""
        try:
            final = wait(
                f"{self.name} finished", lambda: self.status().get("phase") in ("Succeeded", "Failed"), 600
            )
            status = self.status() if final else {}
        except TimeoutError as err:
            status = {}
            self.tally.notes.append(str(err))
        finally:
            self.creations.stop()
        if status.get("phase") == "Succeeded":
            self.tally.jobs_completed += 1
        else:
            self.tally.notes.append(f"{self.name}: {status.get('phase')} {status.get('conditions')}")
        ranks = self.records()
        done = len(global_batches(ranks)) if ranks else 0
        skipped, duplicated = sample_accounting(ranks, samples=SAMPLES, batch=BATCH) if ranks else (0, 0)
        self.tally.samples_lost += skipped + (self.steps - done) * BATCH
        self.tally.samples_duplicated += duplicated
        needed = WORKERS * (1 + int(status.get("restarts") or 0))
        self.tally.extra_pod_creations += max(0, len(self.creations.created) - needed)
        log(
            f"{self.name}: {status.get('phase')}, {done}/{self.steps} steps, {skipped} skipped, "
            f"{duplicated} duplicated, {len(self.creations.created)} pod creations ({needed} needed)"
        )


def kill_operator_repeatedly(cluster: LocalCluster, tally: Tally, rng: random.Random) -> None:
    job = Job(cluster, "kills", 200, tally)
    for _ in range(10):
        time.sleep(rng.uniform(0.0, 3.0))
        faults.kill_operator(cluster)
        tally.operator_kills += 1
        cluster.start_operator()
    log(f"10 operator kills done at step {job.steps_done()}")
    job.finish()


def unauthenticated_writes(job: Job, tally: Tally) -> None:
    """PUT a stale assignment and generation to every worker pod, without a token and with a wrong one."""
    stale = json.dumps({"version": 0, "batchSizes": [1], "learningRate": 0.1, "momentum": 0.0}).encode()
    for ip in job.pod_ips():
        for port, route in ((METRICS_PORT, Route.ASSIGNMENT), (LAUNCHER_PORT, Route.GENERATION)):
            for headers in ({}, {"Authorization": "Bearer not-the-job-token"}):
                request = urllib.request.Request(
                    f"http://{ip}:{port}{route.value}", data=stale, method="PUT", headers=headers
                )
                tally.unauthenticated_writes += 1
                try:
                    with _DIRECT.open(request, timeout=5) as resp:
                        code = resp.status
                except urllib.error.HTTPError as err:
                    code = err.code
                except OSError as err:
                    tally.notes.append(f"PUT {route.value} on {ip}:{port}: {err}")
                    continue
                tally.unauthenticated_writes_refused += code in (401, 403)


def restart_control_plane(cluster: LocalCluster, tally: Tally) -> None:
    job = Job(cluster, "restarts", 100, tally)
    wait("restarts: 8 steps", lambda: job.steps_done() >= 8, 300)
    unauthenticated_writes(job, tally)
    for component in ("kube-apiserver", "etcd"):
        cluster.restart_control_plane(component)
        tally.apiserver_restarts += component == "kube-apiserver"
        tally.etcd_restarts += component == "etcd"
        done = job.steps_done()
        wait(f"training goes on after the {component} restart", lambda d=done: job.steps_done() >= d + 4, 300)
        log(f"{component} restarted; training at step {job.steps_done()}")
    control = f"{job.name}-control"
    old = json.loads(cluster.kubectl("get", "configmap", control, "-n", job.namespace, "-o", "json"))
    cluster.kubectl("delete", "configmap", control, "-n", job.namespace)

    def recreated() -> bool:
        proc = cluster.run_kubectl(
            "get", "configmap", control, "-n", job.namespace, "-o", "json", check=False
        )
        return proc.returncode == 0 and json.loads(proc.stdout)["metadata"]["uid"] != old["metadata"]["uid"]

    try:
        wait("the control ConfigMap recreated", recreated, 120)
        tally.control_configmaps_recreated += 1
    except TimeoutError as err:
        tally.notes.append(str(err))
    job.finish()


def kill_a_worker(cluster: LocalCluster, tally: Tally) -> None:
    job = Job(cluster, "crash", 60, tally)
    wait("crash: 10 steps", lambda: job.steps_done() >= 10, 300)
    os.killpg(faults.pod_process(cluster, job.namespace, f"{job.name}-worker-1"), signal.SIGKILL)
    tally.worker_kills += 1
    job.finish()


def refuse_bad_specs(cluster: LocalCluster, tally: Tally) -> None:
    for i, spec in enumerate(bad_specs.BAD_SPECS):
        namespace = f"bad-{i}"
        cluster.kubectl("create", "namespace", namespace)
        verdict = bad_specs.judge(cluster, spec, namespace)
        tally.bad_specs_total += 1
        tally.bad_specs_refused += verdict.refused
        if not verdict.refused:
            tally.notes.append(f"bad spec {spec.case!r} not refused as expected: {verdict.said}")
        cluster.run_kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    log(f"{tally.bad_specs_refused}/{tally.bad_specs_total} bad specs refused")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the state directory (logs) afterwards")
    parser.add_argument("--seed", type=int, default=12, help="seed of the operator kill times")
    args = parser.parse_args()
    started, tally = time.monotonic(), Tally()
    config = yaml.safe_load(default_config_text())
    with throwaway_cluster(config, prefix="paceline-faults-", keep=args.keep, report=log) as cluster:
        kill_operator_repeatedly(cluster, tally, random.Random(args.seed))
        restart_control_plane(cluster, tally)
        kill_a_worker(cluster, tally)
        refuse_bad_specs(cluster, tally)
    for note in tally.notes:
        log(f"note: {note}")
    log(f"done in {time.monotonic() - started:.0f} s")
    result = {k: v for k, v in vars(tally).items() if k != "notes"}
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
