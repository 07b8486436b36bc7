"""Fault injection on the local cluster, for the fault e2e tests and `bench/faults.py`: kill the operator or
a pod's process, restart etcd or the API server, and count the pods created meanwhile."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from paceline_dev.localcluster import processes
from paceline_dev.localcluster.cluster import LocalCluster


class PodCreations:
    """Every pod created in a namespace while it runs (uid → name), from a watch that survives API server
    and etcd restarts: after a broken watch it resumes from the last resourceVersion it saw (a re-list when
    that is too old), so no creation is missed and none counted twice."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
        self.namespace = namespace
        self.created: dict[str, str] = {}
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pod-creations-{namespace}", daemon=True)

    def start(self) -> PodCreations:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def __enter__(self) -> PodCreations:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def names(self, prefix: str = "") -> list[str]:
        """Names of the pods created (one entry per creation), those starting with `prefix`."""
        return sorted(name for name in self.created.values() if name.startswith(prefix))

    def _list(self) -> str:
        pods: Any = self.core.list_namespaced_pod(self.namespace)
        for pod in pods.items:
            self.created.setdefault(pod.metadata.uid, pod.metadata.name)
        return str(pods.metadata.resource_version)

    def _run(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                stream = watch.Watch().stream(
                    self.core.list_namespaced_pod,
                    self.namespace,
                    resource_version=version,
                    timeout_seconds=5,
                    allow_watch_bookmarks=True,
                )
                for event in stream:
                    pod = event["object"]
                    version = pod.metadata.resource_version
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.created.setdefault(pod.metadata.uid, pod.metadata.name)
                    if self._stop.is_set():
                        break
            except ApiException as err:
                if err.status == 410:  # too old to resume from: list again (creations are kept by uid)
                    version = None
                self.reconnects += 1
                self._stop.wait(0.5)
            except Exception:  # the API server is down or restarting: retry from the same version
                self.reconnects += 1
                self._stop.wait(0.5)


def kill_operator(cluster: LocalCluster) -> int:
    """SIGKILL the operator (its recorded PID) and wait until it is gone; the PID killed."""
    pid = processes.kill(cluster.paths.state, "operator")
    if pid is None:
        raise RuntimeError("the operator is not running")
    return pid


def pod_process(cluster: LocalCluster, namespace: str, pod: str, *, timeout_s: float = 120.0) -> int:
    """The PID of the process the process runtime started for a pod (the last start its log records)."""
    started = re.compile(rf"started {re.escape(namespace)}/{re.escape(pod)} on \S+ \(pid (\d+)")
    deadline = time.monotonic() + timeout_s
    while True:
        pids = started.findall(cluster.paths.log("process-runtime").read_text(errors="replace"))
        if pids:
            return int(pids[-1])
        if time.monotonic() > deadline:
            raise TimeoutError(f"the process runtime has not started pod {namespace}/{pod}")
        time.sleep(0.5)
