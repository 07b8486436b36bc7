"""Process runtime (dev/test only): runs each pod bound to a fake GPU node as a local CPU process.

It stands in for the kubelet and container runtime, nothing more: kwok marks the pod Running and gives it a
loopback pod IP; this runtime then starts the first container's command with the pod's environment (downward
API and cluster DNS names resolved to loopback pod IPs), reflects the exit code into the pod's status, stops
the process when the pod is deleted, and publishes the node's simulated speed and straggler schedule so that
heterogeneity is real in time (see `paceline_worker`'s simulated device). The container image is ignored.
A pod annotated `paceline.dev/no-process: "true"` stays Running without a process (load tests), and its
deletion is confirmed at once. Pods and nodes are read from watch caches, never listed in a loop.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from paceline_dev.localcluster import podlogs
from paceline_dev.localcluster.config import (
    KWOK_ANNOTATION,
    NO_PROCESS_ANNOTATION,
    POOL_LABEL,
    SPEED_ANNOTATION,
    ClusterConfig,
    Straggler,
    load_config,
)
from paceline_dev.localcluster.karpenter import registration_patches
from paceline_dev.localcluster.volumes import LABEL as VOLUME_LABEL
from paceline_dev.localcluster.volumes import (
    mount_map,
    remap,
    secret_mounts,
    volume_for_claim,
    waiting_claims,
    write_secret,
)
from paceline_dev.localcluster.watchcache import WatchCache

log = logging.getLogger("paceline.runtime")
POLL_S = 1.0  # straggler schedules are published at least this often
BATCH_S = 0.05  # events arriving together are handled in one step
MAX_GRACE_S = 10.0
DNS_NAME = re.compile(r"\b([a-z0-9-]+)\.([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?\b")
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
PASSTHROUGH_ENV = ("HOME", "LANG", "LC_ALL", "TMPDIR", "TERM", "USER", "VIRTUAL_ENV", "PYTHONPATH")


TERMINATION_MESSAGE_BYTES = 4096  # the kubelet's limit
CONFIRM_RETRY_S = 5.0  # a deletion confirmed but still listed is confirmed again after this long


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(kw_only=True)
class Running:
    """A pod's process."""

    key: str  # namespace/name
    uid: str
    node: str
    proc: subprocess.Popen[bytes]
    started: float
    started_at: str
    schedule_file: Path
    grace_s: float
    stopping: bool = False
    stop_deadline: float = field(default=0.0)


def _gpus(container: Mapping[str, Any]) -> int:
    limits = (container.get("resources") or {}).get("limits") or {}
    return max(1, int(str(limits.get("nvidia.com/gpu", "1"))))


def straggler_factor(stragglers: tuple[Straggler, ...], *, node: str, pool: str, elapsed_s: float) -> float:
    """How many times slower a worker on `node` runs `elapsed_s` seconds after it started (pure)."""
    factor = 1.0
    for s in stragglers:
        if s.node not in (None, node) or s.pool not in (None, pool):
            continue
        if elapsed_s >= s.from_seconds and (s.until_seconds is None or elapsed_s < s.until_seconds):
            factor *= s.factor
    return factor


def random_delays(stragglers: tuple[Straggler, ...], *, node: str, pool: str) -> list[dict[str, float | str]]:
    """Per-step random delay distributions that apply to a node (pure)."""
    return [
        {"distribution": s.random_distribution, "meanSeconds": s.random_mean_s, "shape": s.random_shape}
        for s in stragglers
        if s.random_distribution and s.node in (None, node) and s.pool in (None, pool)
    ]


def _pod_ip(match: re.Match[str], namespace: str, lookup_ip: Any) -> str:
    """A pod's DNS name under a headless Service (<hostname>.<subdomain>.<namespace>.svc) → its pod IP."""
    if match.group(3) != namespace:
        return match.group(0)
    return str(lookup_ip(namespace, match.group(1), match.group(2)) or match.group(0))


def resolve_env(
    container: Mapping[str, Any], pod: Mapping[str, Any], *, lookup_ip: Any, configmap_value: Any
) -> dict[str, str]:
    """A container's environment as the kubelet would build it, with cluster DNS names mapped to pod IPs."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    fields = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": status.get("podIP", ""),
        "status.hostIP": status.get("hostIP", ""),
    }
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item:
            value = VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), str(item.get("value") or ""))
        else:
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                if path.startswith("metadata.labels['"):
                    value = (meta.get("labels") or {}).get(path.split("'")[1], "")
                else:
                    value = fields.get(path, "")
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                value = configmap_value(meta["namespace"], ref["name"], ref["key"]) or ""
            else:
                value = ""
        env[name] = DNS_NAME.sub(lambda m: _pod_ip(m, meta["namespace"], lookup_ip), value)
    return env


PAUSE_IMAGE = re.compile(r"(^|/)pause(:|@|$)")  # registry.k8s.io/pause:3.10 and mirrors of it


def idle(pod: Mapping[str, Any]) -> bool:
    """Pods that run Running without a process: annotated `paceline.dev/no-process: "true"` (load tests),
    or whose only container is the pause image (placeholders that hold resources)."""
    meta, containers = pod["metadata"], (pod.get("spec") or {}).get("containers") or []
    if (meta.get("annotations") or {}).get(NO_PROCESS_ANNOTATION) == "true":
        return True
    return len(containers) == 1 and bool(PAUSE_IMAGE.search(str(containers[0].get("image") or "")))


class ProcessRuntime:
    """Polls pods on fake nodes and runs them as processes."""

    def __init__(self, *, kubeconfig: Path, state: Path, workdir: Path) -> None:
        config.load_kube_config(str(kubeconfig))
        self.api = client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.kubelet_ports = podlogs.KubeletPorts()
        self.state = state
        self.workdir = workdir
        self.cluster: ClusterConfig = load_config(
            state / "cluster.yaml" if (state / "cluster.yaml").exists() else None
        )
        self.pod_logs = state / "logs" / "pods"
        self.pod_logs.mkdir(parents=True, exist_ok=True)
        self.schedules = state / "runtime"
        self.schedules.mkdir(parents=True, exist_ok=True)
        self.running: dict[str, Running] = {}
        self.finished: set[str] = set()  # pod UIDs whose process already ended
        self.confirmed: dict[str, float] = {}  # pod UID → when its deletion was last confirmed
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.changed = threading.Event()
        self.rng = np.random.default_rng()
        self.pods = WatchCache(
            self.core.list_pod_for_all_namespaces,
            field_selector="spec.nodeName!=",
            changed=self.changed,
            stop=self.stop,
        )
        self.nodes = WatchCache(self.core.list_node, changed=self.changed, stop=self.stop)
        self.claims = WatchCache(
            self.core.list_persistent_volume_claim_for_all_namespaces, changed=self.changed, stop=self.stop
        )
        self.volumes = WatchCache(
            self.core.list_persistent_volume,
            label_selector=f"{VOLUME_LABEL}=true",
            changed=self.changed,
            stop=self.stop,
        )

    def start_watches(self) -> None:
        """Fill the pod, node, claim and volume caches and keep them current (returns once all are listed)."""
        for cache in [c.start() for c in (self.pods, self.nodes, self.claims, self.volumes)]:
            cache.synced.wait(60)

    # -- helpers ------------------------------------------------------------------------------------------
    def _list(self, items: Any) -> list[dict[str, Any]]:
        return [self.api.sanitize_for_serialization(i) for i in items]

    def _fake_nodes(self) -> dict[str, tuple[float, str]]:
        """Relative speed and pool of every kwok-managed node: the static ones and those Karpenter added."""
        listed = self.nodes.items()
        self._register_joined_nodes(listed)
        pool_speed = {pool.name: pool.relative_speed for pool in self.cluster.pools}
        nodes = {}
        for node in listed:
            meta = node["metadata"]
            ann = meta.get("annotations") or {}
            if ann.get(KWOK_ANNOTATION) == "fake":
                pool = (meta.get("labels") or {}).get(POOL_LABEL, "")
                speed = float(ann.get(SPEED_ANNOTATION) or pool_speed.get(pool, 1.0))
                nodes[meta["name"]] = (speed, pool)
        return nodes

    def _register_joined_nodes(self, nodes: list[dict[str, Any]]) -> None:
        """Give nodes that joined without addresses (Karpenter's) a loopback IP and pod CIDR, as a kubelet
        registering its node and the node IPAM controller would."""
        for reg in registration_patches(nodes):
            try:
                if (patch := reg.spec_patch()) is not None:
                    self.core.patch_node(reg.node, patch)
                if (patch := reg.status_patch()) is not None:
                    self.core.patch_node_status(reg.node, patch)
            except ApiException as err:
                if err.status != 404:
                    log.warning("registering node %s failed: %s", reg.node, err.reason)
                continue
            log.info("node %s joined: InternalIP %s, pod CIDR %s", reg.node, reg.internal_ip, reg.pod_cidr)

    def _lookup_ip(self, namespace: str, hostname: str, subdomain: str) -> str | None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.stop.is_set():
            for pod in self.pods.items():
                spec, ip = pod["spec"], (pod.get("status") or {}).get("podIP")
                same = pod["metadata"]["namespace"] == namespace and spec.get("subdomain") == subdomain
                if same and spec.get("hostname") == hostname and ip:
                    return str(ip)
            time.sleep(0.2)
        return None

    def _configmap_value(self, namespace: str, name: str, key: str) -> str | None:
        try:
            cm = self.core.read_namespaced_config_map(name, namespace)
        except ApiException:
            return None
        return (cm.data or {}).get(key)

    def _claim_paths(self, namespace: str) -> dict[str, str]:
        """Claim name → local directory of its bound volume, for the namespace's bound claims."""
        out = {}
        for claim in self._list(self.core.list_namespaced_persistent_volume_claim(namespace).items):
            name = (claim.get("spec") or {}).get("volumeName")
            if not name:
                continue
            try:
                volume = self.api.sanitize_for_serialization(self.core.read_persistent_volume(name))
            except ApiException:
                continue
            path = ((volume.get("spec") or {}).get("hostPath") or {}).get("path")
            if path:
                Path(path).mkdir(parents=True, exist_ok=True)
                out[claim["metadata"]["name"]] = str(path)
        return out

    def _secret_dir(self, uid: str) -> Path:
        return self.state / "secrets" / uid

    def _secret_paths(self, raw: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str] | None:
        """mountPath → local directory holding each mounted Secret's keys as files (owner-readable only); None
        while a Secret that is not optional is missing. Secrets are written once, when the process starts."""
        meta = raw["metadata"]
        out = {}
        for mount_path, volume, name, optional in secret_mounts(raw, container):
            try:
                secret = self.core.read_namespaced_secret(name, meta["namespace"])
                data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
            except ApiException as err:
                if err.status != 404:
                    log.warning("reading Secret %s/%s failed: %s", meta["namespace"], name, err.reason)
                    return None
                if not optional:
                    log.info("%s/%s waits for Secret %s", meta["namespace"], meta["name"], name)
                    return None
                data = {}
            directory = self._secret_dir(str(meta["uid"])) / volume
            write_secret(directory, data)
            out[mount_path] = str(directory)
        return out

    def provision_volumes(self) -> None:
        """A local volume for every waiting claim; volumes of deleted claims removed (directory kept)."""
        existing = {v["metadata"]["name"] for v in self.volumes.items()}
        for claim in waiting_claims(self.claims.items()):
            volume = volume_for_claim(claim, self.state / "volumes")
            if volume["metadata"]["name"] in existing:
                continue  # created; the volume binder has not bound it yet
            try:
                self.core.create_persistent_volume(volume)  # type: ignore[arg-type]
                log.info(
                    "provisioned a local volume for claim %s/%s",
                    *(claim["metadata"][k] for k in ("namespace", "name")),
                )
            except ApiException as err:
                if err.status != 409:
                    log.warning("provisioning a volume failed: %s", err.reason)
        for volume in self.volumes.items():
            if (volume.get("status") or {}).get("phase") == "Released":
                with contextlib.suppress(ApiException):
                    self.core.delete_persistent_volume(volume["metadata"]["name"])

    def _patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        try:
            self.core.patch_namespaced_pod_status(name, namespace, {"status": status})
        except ApiException as err:
            if err.status != 404:
                log.warning("patching status of %s/%s failed: %s", namespace, name, err.reason)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def _start(self, raw: dict[str, Any], speed: float) -> None:
        meta, spec = raw["metadata"], raw["spec"]
        key = f"{meta['namespace']}/{meta['name']}"
        container = spec["containers"][0]
        command = list(container.get("command") or []) + list(container.get("args") or [])
        if not command:
            self._terminated(
                raw,
                exit_code=128,
                reason="NoCommand",
                started_at=_now(),
                message="the process runtime needs a container command",
            )
            return
        secret_paths = self._secret_paths(raw, container)
        if secret_paths is None:
            return  # a Secret it mounts does not exist yet: the kubelet waits too (the next poll retries)
        pod_env = resolve_env(
            container, raw, lookup_ip=self._lookup_ip, configmap_value=self._configmap_value
        )
        schedule_file = self.schedules / f"{meta['namespace']}_{meta['name']}.json"
        termination_file = self.schedules / f"{meta['namespace']}_{meta['name']}.termination-log"
        termination_file.unlink(missing_ok=True)
        schedule_file.write_text(json.dumps({"factor": 1.0, "randomDelays": []}))
        venv_bin = str(Path(sys.executable).parent)
        env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
        env.update(
            {
                "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "OMP_NUM_THREADS": "1",
                "GLOO_SOCKET_IFNAME": "lo",
                "PYTHONUNBUFFERED": "1",
                "PACELINE_LOCAL_RUNTIME": "1",
                "PACELINE_SIM_SPEED": f"{speed:g}",  # per GPU: each rank is one GPU
                "PACELINE_SIM_SCHEDULE": str(schedule_file),
                "PACELINE_TERMINATION_LOG": str(termination_file),  # the container's terminationMessagePath
            }
        )
        mounts = {**mount_map(raw, container, self._claim_paths(meta["namespace"])), **secret_paths}
        env.update(remap(pod_env, mounts))
        command = [VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), part) for part in command]
        workdir = container.get("workingDir")
        cwd = Path(workdir) if workdir and Path(workdir).is_dir() else self.workdir
        started_at = _now()
        try:
            proc = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as err:
            self._terminated(raw, exit_code=127, reason="StartError", started_at=started_at, message=str(err))
            return
        self._serve_logs(raw, container["name"], proc)
        grace = float(spec.get("terminationGracePeriodSeconds") or 30)
        run = Running(
            key=key,
            uid=meta["uid"],
            node=spec["nodeName"],
            proc=proc,
            started=time.monotonic(),
            started_at=started_at,
            schedule_file=schedule_file,
            grace_s=min(grace, MAX_GRACE_S),
        )
        with self.lock:
            self.running[meta["uid"]] = run
        log.info("started %s on %s (pid %d, speed %g): %s", key, spec["nodeName"], proc.pid, speed, command)
        threading.Thread(target=self._wait, args=(run, raw), daemon=True).start()

    def _serve_logs(self, raw: dict[str, Any], container: str, proc: subprocess.Popen[bytes]) -> None:
        """The process's output into the pod's log files, and the kwok Logs object `kubectl logs` reads."""
        meta = raw["metadata"]
        where = {
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
            "container": container,
        }
        previous = podlogs.previous_log(self.pod_logs, **where)
        cri = podlogs.cri_path(self.pod_logs, **where)
        assert proc.stdout is not None and proc.stderr is not None
        podlogs.pump(
            {"stdout": proc.stdout, "stderr": proc.stderr},
            plain=self.pod_logs / f"{meta['namespace']}_{meta['name']}.log",
            cri=cri,
        )
        body = podlogs.logs_object(raw, logs_file=cri, previous=previous)
        args = (podlogs.GROUP, podlogs.VERSION, meta["namespace"], podlogs.PLURAL)
        try:
            try:
                self.custom.create_namespaced_custom_object(*args, body)
            except ApiException as err:
                if err.status != 409:
                    raise
                # the Logs of an earlier pod with this name, not yet garbage-collected: take it over
                patch = {
                    "metadata": {"ownerReferences": body["metadata"]["ownerReferences"]},
                    "spec": body["spec"],
                }
                self.custom.patch_namespaced_custom_object(*args, meta["name"], patch)
        except ApiException as err:
            log.warning(
                "kubectl logs will not work for %s/%s: %s", meta["namespace"], meta["name"], err.reason
            )

    def _wait(self, run: Running, raw: dict[str, Any]) -> None:
        code = run.proc.wait()
        exit_code = code if code >= 0 else 128 - code  # killed by signal N → 128 + N, like a container
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the pod ends with its main process
            os.killpg(run.proc.pid, signal.SIGKILL)
        with self.lock:
            self.running.pop(run.uid, None)
            self.finished.add(run.uid)
        run.schedule_file.unlink(missing_ok=True)
        shutil.rmtree(self._secret_dir(run.uid), ignore_errors=True)
        log.info("%s exited with %d", run.key, exit_code)
        if not run.stopping:
            reason = "Completed" if exit_code == 0 else "Error"
            message = f"killed by signal {-code} ({signal.Signals(-code).name})" if code < 0 else ""
            written = run.schedule_file.with_suffix(".termination-log")
            if written.exists():
                message = written.read_text(errors="replace")[:TERMINATION_MESSAGE_BYTES]
                written.unlink(missing_ok=True)
            self._terminated(
                raw, exit_code=exit_code, reason=reason, started_at=run.started_at, message=message
            )

    def _terminated(
        self, raw: dict[str, Any], *, exit_code: int, reason: str, started_at: str, message: str = ""
    ) -> None:
        meta = raw["metadata"]
        container = raw["spec"]["containers"][0]
        now = _now()
        status = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
                {
                    "type": "ContainersReady",
                    "status": "False",
                    "reason": "PodCompleted",
                    "lastTransitionTime": now,
                },
            ],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "reason": reason,
                            "message": message,
                            "startedAt": started_at,
                            "finishedAt": now,
                        }
                    },
                }
            ],
        }
        self._patch_status(meta["namespace"], meta["name"], status)

    def _terminate(self, run: Running) -> None:
        if run.stopping:
            if time.monotonic() > run.stop_deadline and run.proc.poll() is None:
                os.killpg(run.proc.pid, signal.SIGKILL)
            return
        run.stopping = True
        run.stop_deadline = time.monotonic() + run.grace_s
        # Like a container runtime: SIGTERM to the main process only (it forwards to its children), SIGKILL
        # to everything in the pod once the grace period is over.
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.kill(run.proc.pid, signal.SIGTERM)

    def _finish_delete(self, pod: dict[str, Any]) -> None:
        """Confirm a graceful deletion once the process is gone (what a kubelet does with grace 0)."""
        meta = pod["metadata"]
        if (
            meta.get("finalizers")
            or time.monotonic() - self.confirmed.get(meta["uid"], -1e9) < CONFIRM_RETRY_S
        ):
            return
        self.confirmed[meta["uid"]] = time.monotonic()
        try:
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                grace_period_seconds=0,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta["uid"])
                ),
            )
        except ApiException as err:
            if err.status not in (404, 409):
                log.warning("deleting %s/%s failed: %s", meta["namespace"], meta["name"], err.reason)

    def _update_schedules(self, nodes: Mapping[str, tuple[float, str]]) -> None:
        with self.lock:
            runs = list(self.running.values())
        for run in runs:
            pool = nodes.get(run.node, (1.0, ""))[1]
            doc = {
                "factor": straggler_factor(
                    self.cluster.stragglers,
                    node=run.node,
                    pool=pool,
                    elapsed_s=time.monotonic() - run.started,
                ),
                "randomDelays": random_delays(self.cluster.stragglers, node=run.node, pool=pool),
            }
            text = json.dumps(doc)
            try:
                if run.schedule_file.read_text() != text:
                    tmp = run.schedule_file.with_suffix(".tmp")
                    tmp.write_text(text)
                    tmp.replace(run.schedule_file)
            except FileNotFoundError:
                pass

    def step(self) -> None:
        """One poll: volumes for waiting claims, processes for new Running pods, stop those of deleted pods,
        publish schedules."""
        self.provision_volumes()
        nodes = self._fake_nodes()
        self.kubelet_ports.ensure(
            podlogs.kubelet_endpoints(
                self.nodes.items(),
                lambda n: (n["metadata"].get("annotations") or {}).get(KWOK_ANNOTATION) == "fake",
            )
        )
        pods = self.pods.items()
        alive: set[str] = set()
        for pod in pods:
            meta, node, status = pod["metadata"], pod["spec"].get("nodeName"), pod.get("status") or {}
            if node not in nodes:
                continue
            uid = str(meta["uid"])
            alive.add(uid)
            with self.lock:
                run = self.running.get(uid)
            if meta.get("deletionTimestamp"):
                if run is not None:
                    self._terminate(run)
                else:
                    self._finish_delete(pod)
                continue
            process = not idle(pod)
            if (
                process
                and run is None
                and uid not in self.finished
                and status.get("phase") == "Running"
                and status.get("podIP")
            ):
                self._start(pod, nodes[node][0])
        with self.lock:
            gone = [r for uid, r in self.running.items() if uid not in alive]
        for run in gone:
            self._terminate(run)
        for uid in [u for u in self.confirmed if u not in alive]:
            del self.confirmed[uid]
        self._update_schedules(nodes)

    def adopt_orphans(self) -> None:
        """Pods marked Running whose process this runtime lost (it restarted) are failed with 137."""
        nodes = self._fake_nodes()
        for pod in self._list(
            self.core.list_pod_for_all_namespaces(field_selector="status.phase=Running").items
        ):
            meta, status = pod["metadata"], pod.get("status") or {}
            if (
                pod["spec"].get("nodeName") in nodes
                and status.get("podIP")
                and not meta.get("deletionTimestamp")
            ):
                state_file = self.schedules / f"{meta['namespace']}_{meta['name']}.json"
                if state_file.exists():  # we had started it before this runtime restarted
                    self._terminated(
                        pod,
                        exit_code=137,
                        reason="Error",
                        started_at=_now(),
                        message="the process runtime restarted and lost this process",
                    )
                    self.finished.add(str(meta["uid"]))
                    state_file.unlink(missing_ok=True)

    def shutdown(self) -> None:
        """Stop every process this runtime started."""
        self.stop.set()
        with self.lock:
            runs = list(self.running.values())
        for run in runs:
            self._terminate(run)
        deadline = time.monotonic() + MAX_GRACE_S
        while time.monotonic() < deadline and any(r.proc.poll() is None for r in runs):
            time.sleep(0.1)
        for run in runs:
            if run.proc.poll() is None:
                os.killpg(run.proc.pid, signal.SIGKILL)


def run_runtime(*, kubeconfig: Path, state: Path, workdir: Path) -> int:
    """Run the process runtime until SIGTERM/SIGINT."""
    runtime = ProcessRuntime(kubeconfig=kubeconfig, state=state, workdir=workdir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime.adopt_orphans()
    runtime.start_watches()
    log.info("process runtime running (state %s, workdir %s)", state, runtime.workdir)
    while not stop.is_set():
        if runtime.changed.wait(POLL_S):  # a pod or node event, or the next straggler-schedule update
            stop.wait(BATCH_S)
        runtime.changed.clear()
        try:
            runtime.step()
        except Exception:  # keep going: the caches recover from API blips on their own
            log.exception("step failed")
    runtime.shutdown()
    return 0
