"""Elastic benchmark: a job that follows the cluster, on a local cluster with Karpenter.

One TrainingJob (replicas 1..4, 4 GPUs per worker, A100 or T4 allowed, a budget) starts on the two static
A100 nodes, asks Karpenter for two more workers' GPUs (placeholder pods), grows into the added nodes, then
loses a static node mid-training and shrinks onto the rest, and trains to the end. Its workers (the
torchrun launcher running bench/_tp_worker.py) log every step with the samples it trained on.

    flock /tmp/paceline-e2e.lock .venv/bin/python bench/elastic.py

Progress goes to stderr; the last stdout line is one JSON object:
  provision_to_training_s   the first placeholder created → the first step trained on an added node
  resize_pause_s            per resize (generation change): last step before it → first step after it
                            (p50, max; node provisioning is not in it: training goes on meanwhile)
  survivor_pods_recreated   worker pods replaced on a node that stayed (0: kept pods stay)
  rank_processes            rank processes that trained a step (16 for the 4 first workers' ranks plus 4 per
                            replacement pod when kept ranks keep their processes across resizes)
  samples_skipped / samples_duplicated   per epoch, over every step in the final model
  throughput_per_price_vs_best_single_type   predicted throughput (the planner's peak-FLOP/s scale for
                            data parallel) per dollar of the mix the operator grew to, ÷ the same for the
                            single GPU type that buys the most throughput with the same budget (prices:
                            the NodePools', i.e. the cluster's pricePerHour per GPU)
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
import itertools
import json
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from kubernetes import client, config

from _local_cluster import throwaway_cluster
from _tp_pods import sample_accounting
from paceline.capacity import Offer, best_single_type, hourly_cost
from paceline.planner.devices import DeviceCatalog
from paceline_dev.localcluster.cluster import LocalCluster

NAMESPACE, JOB = "elastic", "follow"
SAMPLES, BATCH, STEPS, SLEEP_S = 240, 24, 160, 0.3  # 10 steps per epoch
A100, T4 = "NVIDIA-A100-SXM4-40GB", "Tesla-T4"
LOST = "gpu-a100-1"
BUDGET = 80.0
CLUSTER = {
    "pools": [
        {
            "name": "a100",
            "gpuProduct": A100,
            "gpuMemoryMiB": 40960,
            "instanceType": "p4d.24xlarge",
            "nodes": 2,
            "gpusPerNode": 4,
            "relativeSpeed": 2,
            "pricePerHour": 32.77,
            "autoscale": {"maxNodes": 2, "consolidateAfter": "5s"},
        },
        {
            "name": "t4",
            "gpuProduct": T4,
            "gpuMemoryMiB": 15360,
            "instanceType": "g4dn.12xlarge",
            "nodes": 0,
            "gpusPerNode": 4,
            "relativeSpeed": 1,
            "pricePerHour": 3.91,
            "autoscale": {"maxNodes": 4, "consolidateAfter": "5s"},
        },
    ]
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait(what: str, check: Callable[[], Any], timeout_s: float = 300, interval_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def job_doc() -> dict[str, Any]:
    command = ["python", "bench/_tp_worker.py", "--out", "$(PACELINE_CHECKPOINT_DIR)/records"]
    command += ["--sizes", "6,16,12,4", "--samples", str(SAMPLES), "--max-steps", str(STEPS)]
    command += ["--step-sleep", str(SLEEP_S)]
    return {
        "apiVersion": "paceline.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": JOB, "namespace": NAMESPACE},
        "spec": {
            "replicas": {"min": 1, "max": 4},
            "gpusPerWorker": 4,
            "globalBatchSize": BATCH,
            "balancing": {"policy": "Static"},
            "checkpoint": {
                "volumeClaimTemplate": {
                    "accessModes": ["ReadWriteMany"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
                "intervalSteps": 4,
            },
            "elastic": {"provision": {"gpuProducts": [A100, T4], "budgetPerHour": f"{BUDGET:g}"}},
            "template": {
                "spec": {
                    "containers": [{"name": "trainer", "image": "paceline/worker:dev", "command": command}]
                }
            },
        },
    }


class Pods:
    """Every worker and placeholder pod of the job seen, sampled twice a second: uid → (name, node)."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self.core = core
        self.workers: dict[str, tuple[str, str]] = {}
        self.first_placeholder: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for pod in self.core.list_namespaced_pod(
                NAMESPACE, label_selector=f"paceline.dev/job={JOB}"
            ).items:
                role = (pod.metadata.labels or {}).get("paceline.dev/role")
                if role == "capacity" and self.first_placeholder is None:
                    self.first_placeholder = pod.metadata.creation_timestamp.timestamp()
                if role == "worker" and pod.spec.node_name:
                    self.workers[pod.metadata.uid] = (pod.metadata.name, pod.spec.node_name)
            self.stop.wait(0.5)


def records(state: Path) -> list[dict[str, Any]]:
    root = state / "volumes" / NAMESPACE / f"{JOB}-checkpoint" / JOB / "records"
    return [
        {"records": [json.loads(line) for line in p.read_text().splitlines() if line.strip()]}
        for p in sorted(root.glob("rank*.steps.jsonl"))
    ]


def steps_done(state: Path) -> int:
    return max((r["step"] + 1 for rank in records(state) for r in rank["records"]), default=0)


def pauses(ranks: list[dict[str, Any]]) -> list[float]:
    """Per generation change: the last step of the old generation → the first step of the new one."""
    by_generation: dict[int, list[float]] = defaultdict(list)
    for rank in ranks:
        for r in rank["records"]:
            by_generation[r["generation"]].append(r["time"])
    gens = sorted(by_generation)
    return [min(by_generation[b]) - max(by_generation[a]) for a, b in itertools.pairwise(gens)]


def price_per_gpu_hour() -> dict[str, float]:
    """What the NodePools charge per GPU-hour (the cluster's pricePerHour per node ÷ its GPUs)."""
    return {p["gpuProduct"]: p["pricePerHour"] / p["gpusPerNode"] for p in CLUSTER["pools"]}


def per_price_vs_single(products: list[str]) -> tuple[float, str]:
    """Throughput per dollar of the workers' GPU types ÷ the same for the single GPU type that buys the most
    throughput within the budget (up to replicas.max workers, within what the cluster can hold). Throughput
    is the planner's data-parallel scale: the summed catalog peak FLOP/s."""
    catalog, prices = DeviceCatalog(), price_per_gpu_hour()

    def flops(product: str) -> float:
        return catalog.lookup(product).peak_flops

    offers = [
        Offer(
            pool=p["name"],
            gpu_product=p["gpuProduct"],
            gpus_left=(p["nodes"] + p["autoscale"]["maxNodes"]) * p["gpusPerNode"],
            price_per_gpu_hour=prices[p["gpuProduct"]],
        )
        for p in CLUSTER["pools"]
    ]
    mix = sum(flops(p) for p in products) * 4 / hourly_cost(products, 4, prices.get)
    single = best_single_type(
        offers=offers, workers=4, gpus_per_worker=4, flops=flops, budget_per_hour=BUDGET
    )
    assert single is not None
    return mix / (single[1] / single[2]), single[0]


def run(cluster: LocalCluster) -> tuple[list[dict[str, Any]], Pods, list[str]]:
    """Apply the job, let it grow, delete a node, wait for the end: every rank's step records, the pods
    seen, and the GPU types of the workers it grew to."""
    api_client = config.new_client_from_config(str(cluster.paths.kubeconfig))
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    pods = Pods(core)
    pods.thread.start()
    where = ("paceline.dev", "v1alpha1", NAMESPACE, "trainingjobs")
    try:
        custom.create_namespaced_custom_object(*where, job_doc())

        def status() -> dict[str, Any]:
            return dict(custom.get_namespaced_custom_object(*where, JOB).get("status") or {})

        wait("2 workers on the static nodes", lambda: status().get("workersReady") == "2/2", 300)
        log(f"running on the static nodes; scale-out: {status().get('scaleOut')}")
        grown = wait("grown to 4 workers", lambda: (s := status()).get("workersReady") == "4/4" and s, 420)
        products = [w["gpuProduct"] for w in grown["workers"]]
        log(f"grown to 4 workers: {[w['node'] for w in grown['workers']]}")
        done = steps_done(cluster.paths.state)
        wait("4 more steps", lambda: steps_done(cluster.paths.state) >= done + 4, 120, 0.5)
        core.delete_node(LOST)
        log(f"deleted node {LOST} at step {steps_done(cluster.paths.state)}")
        final = wait("Succeeded", lambda: (s := status()).get("phase") == "Succeeded" and s, 600, 2)
        log(f"Succeeded on {[w['node'] for w in final['workers']]}")
    finally:
        pods.stop.set()
    return records(cluster.paths.state), pods, products


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the state directory (logs) afterwards")
    args = parser.parse_args()
    started = time.monotonic()
    with throwaway_cluster(CLUSTER, prefix="paceline-elastic-", keep=args.keep, report=log) as cluster:
        ranks, pods, products = run(cluster)
    per_node: dict[str, set[str]] = defaultdict(set)
    for uid, (_, node) in pods.workers.items():
        per_node[node].add(uid)
    recreated = sum(len(uids) - 1 for node, uids in per_node.items() if node != LOST)
    on_added = [
        r["time"] for rank in ranks for r in rank["records"] if r["worldSize"] > 8
    ]  # 3 or 4 pods x 4 ranks: an added node is training
    assert pods.first_placeholder is not None and on_added
    skipped, duplicated = sample_accounting(ranks, samples=SAMPLES, batch=BATCH)
    gaps = pauses(ranks)
    ratio, single_type = per_price_vs_single(products)
    log(f"done in {time.monotonic() - started:.0f} s; {len(gaps)} resizes")
    result = {
        "provision_to_training_s": round(min(on_added) - pods.first_placeholder, 1),
        "resize_pause_s": {"p50": round(statistics.median(gaps), 1), "max": round(max(gaps), 1)},
        "resizes": len(gaps),
        "survivor_pods_recreated": recreated,
        "rank_processes": len({r["pid"] for rank in ranks for r in rank["records"]}),
        "samples_skipped": skipped,
        "samples_duplicated": duplicated,
        "throughput_per_price_vs_best_single_type": round(ratio, 3),
        "mix": sorted(products),
        "best_single_type": single_type,
    }
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
