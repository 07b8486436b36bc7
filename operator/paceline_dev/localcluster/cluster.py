"""Bring the local cluster up and down: etcd, the Kubernetes control plane, kwok, fake GPU nodes,
the process runtime and the operator, every address on loopback.

State lives in one directory (``.paceline/`` in the repository by default): certificates, kubeconfigs,
etcd data, logs and the PIDs of the processes started here. ``up`` is idempotent; ``down`` stops only the
recorded PIDs.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from paceline_dev.localcluster import karpenter, processes, prometheus
from paceline_dev.localcluster.binaries import Binaries, ensure_binaries
from paceline_dev.localcluster.config import (
    ClusterConfig,
    default_config_text,
    node_manifests,
    parse_config,
)
from paceline_dev.localcluster.pki import Pki, ensure_pki, ensure_serving

Report = Callable[[str], None]

SERVICE_CIDR = "127.96.0.0/20"  # ClusterIPs are loopback too; nothing routes to them and nothing dials them
OPERATOR_NAMESPACE = "paceline-system"
OPERATOR_SERVICE_ACCOUNT = "paceline-operator"
HELM_RELEASE = "paceline"
# processes in start order; down stops them in reverse
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "karpenter",
    "process-runtime",
    "operator",
    "prometheus",
)
PORT_NAMES = (
    "etcd",
    "etcd-peer",
    "apiserver",
    "controller-manager",
    "scheduler",
    "kwok",
    "karpenter-metrics",
    "karpenter-health",
    "operator-health",
    "operator-metrics",
    "prometheus",
)


class ClusterError(RuntimeError):
    """The local cluster could not be brought up; the message says which part and where its log is."""


@dataclass(frozen=True, kw_only=True)
class Paths:
    """Files under the cluster's state directory."""

    state: Path

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (what `export KUBECONFIG=...` points at)."""
        return self.state / "kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        """Kubeconfig holding a token of the chart's ServiceAccount."""
        return self.state / "kubeconfigs" / "operator.kubeconfig"

    @property
    def ports_file(self) -> Path:
        """Ports chosen at the first start."""
        return self.state / "ports.json"

    def component_kubeconfig(self, name: str) -> Path:
        """Kubeconfig of one control-plane client."""
        return self.state / "kubeconfigs" / f"{name}.kubeconfig"

    def log(self, name: str) -> Path:
        """Log file of one component."""
        return self.state / "logs" / f"{name}.log"


def default_state_dir() -> Path:
    """State directory: $PACELINE_HOME or ./.paceline."""
    return Path(os.environ.get("PACELINE_HOME", Path.cwd() / ".paceline")).resolve()


def repo_root() -> Path:
    """The source tree this package runs from (charts/ and crds/ live there)."""
    return Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ports(paths: Paths) -> dict[str, int]:
    ports: dict[str, int] = json.loads(paths.ports_file.read_text()) if paths.ports_file.exists() else {}
    missing = [name for name in PORT_NAMES if name not in ports]
    if missing:
        ports |= {name: _free_port() for name in missing}
        paths.ports_file.write_text(json.dumps(ports, indent=1))
    return ports


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca: Path,
    user: str,
    cert: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
) -> None:
    """Write a kubeconfig with one cluster, user and context named paceline-local."""
    credentials: dict[str, str] = {}
    if cert is not None and key is not None:
        credentials = {"client-certificate": str(cert), "client-key": str(key)}
    if token is not None:
        credentials = {"token": token}
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "paceline-local", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "paceline-local", "context": {"cluster": "paceline-local", "user": user}}],
        "current-context": "paceline-local",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)


def _wait(what: str, check: Callable[[], bool], *, timeout_s: float, log: Path | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ssl.SSLError, subprocess.SubprocessError):
            pass
        time.sleep(0.3)
    tail = ""
    if log is not None and log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise ClusterError(
        f"{what} did not become ready in {timeout_s:.0f} s"
        + (f"; last lines of {log}:\n{tail}" if tail else "")
    )


def _https_ok(url: str, pki: Pki) -> bool:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.cert("admin")), str(pki.key("admin")))
    with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
        return bool(resp.status == 200)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


class LocalCluster:
    """One local cluster rooted at a state directory."""

    def __init__(
        self, state: Path | None = None, *, config_path: Path | None = None, report: Report = print
    ) -> None:
        self.paths = Paths(state=(state or default_state_dir()).resolve())
        self.config_path = config_path
        self.report = report
        # (stopped, ready again) in epoch seconds, per kube-apiserver restart: until its RBAC caches are read,
        # a restarted API server refuses requests it would allow (kubernetes/kubernetes#121635)
        self.apiserver_restarts: list[tuple[float, float]] = []

    # -- inspection ---------------------------------------------------------------------------------------
    def running_components(self) -> list[str]:
        """Names of components whose recorded process is alive."""
        return [name for name in COMPONENTS if processes.running(self.paths.state, name) is not None]

    def config_text(self) -> str:
        """The cluster YAML in force: --config, else the copy saved at first start, else the default."""
        saved = self.paths.state / "cluster.yaml"
        if self.config_path is not None:
            return self.config_path.read_text()
        if saved.exists():
            return saved.read_text()
        return default_config_text()

    def config(self) -> ClusterConfig:
        """The parsed cluster YAML in force."""
        return parse_config(yaml.safe_load(self.config_text()) or {})

    # -- up -----------------------------------------------------------------------------------------------
    def up(self, *, operator: bool = True) -> None:
        """Start what is not running; return once the API answers, nodes are Ready and the operator runs."""
        started = time.monotonic()
        state = self.paths.state
        state.mkdir(parents=True, exist_ok=True)
        bins = ensure_binaries(self.report)
        text = self.config_text()
        config = parse_config(yaml.safe_load(text) or {})
        (state / "cluster.yaml").write_text(text)
        pki = ensure_pki(state / "pki")
        ports = _ports(self.paths)
        server = f"https://127.0.0.1:{ports['apiserver']}"
        write_kubeconfig(
            self.paths.kubeconfig,
            server=server,
            ca=pki.ca_cert,
            user="paceline-admin",
            cert=pki.cert("admin"),
            key=pki.key("admin"),
        )
        for name in ("controller-manager", "scheduler", "kwok", "runtime", "karpenter"):
            write_kubeconfig(
                self.paths.component_kubeconfig(name),
                server=server,
                ca=pki.ca_cert,
                user=name,
                cert=pki.cert(name),
                key=pki.key(name),
            )
        self._start_etcd(bins, ports)
        self._start_apiserver(bins, pki, ports)
        self._start_controllers(bins, pki, ports, config)
        self._create_nodes(bins, config)
        self._start_karpenter(bins, config, ports)
        self._install_chart(bins)
        self._start_runtime()
        if operator:
            self._start_operator(bins, ports)
        self._start_prometheus(bins, ports)
        self._wait_karpenter(config, ports)
        self.report(
            f"local cluster ready in {time.monotonic() - started:.1f} s — "
            f"export KUBECONFIG={self.paths.kubeconfig}; Prometheus: {self.prometheus_url}"
        )

    def _ensure(self, name: str, cmd: list[str], *, env: dict[str, str] | None = None) -> bool:
        if processes.running(self.paths.state, name) is not None:
            return False
        self.report(f"starting {name}")
        processes.start(self.paths.state, name, cmd, env=env, cwd=self.paths.state)
        return True

    def _start_etcd(self, bins: Binaries, ports: dict[str, int]) -> None:
        client = f"http://127.0.0.1:{ports['etcd']}"
        peer = f"http://127.0.0.1:{ports['etcd-peer']}"
        self._ensure(
            "etcd",
            [
                str(bins.etcd),
                "--name=paceline",
                f"--data-dir={self.paths.state / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=paceline={peer}",
                "--log-level=warn",
                "--quota-backend-bytes=2147483648",
            ],
        )
        _wait("etcd", lambda: _http_ok(f"{client}/health"), timeout_s=60, log=self.paths.log("etcd"))

    @property
    def audit_log(self) -> Path:
        """Every request of the operator's ServiceAccount (metadata only): what it costs the API server."""
        return self.paths.state / "logs" / "audit-operator.log"

    def _audit_policy(self) -> Path:
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [
                {
                    "level": "Metadata",
                    "users": [f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"],
                },
                {"level": "None"},
            ],
        }
        path = self.paths.state / "audit-policy.yaml"
        path.write_text(yaml.safe_dump(policy))
        return path

    def _start_apiserver(self, bins: Binaries, pki: Pki, ports: dict[str, int]) -> None:
        port = ports["apiserver"]
        self._ensure(
            "kube-apiserver",
            [
                str(bins.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--tls-cert-file={pki.cert('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.ca_cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--endpoint-reconciler-type=none",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
                f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
                "--kubelet-preferred-address-types=InternalIP",
                "--profiling=false",
                f"--audit-policy-file={self._audit_policy()}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=200",
                "--audit-log-maxbackup=1",
                "--v=1",
            ],
        )
        _wait(
            "kube-apiserver",
            lambda: _https_ok(f"https://127.0.0.1:{port}/readyz", pki),
            timeout_s=120,
            log=self.paths.log("kube-apiserver"),
        )

    def _start_controllers(
        self, bins: Binaries, pki: Pki, ports: dict[str, int], config: ClusterConfig
    ) -> None:
        tuned = config.control_plane
        qps = (
            [f"--kube-api-qps={tuned.client_qps}", f"--kube-api-burst={2 * tuned.client_qps}"]
            if tuned.client_qps
            else []
        )
        kcm = str(self.paths.component_kubeconfig("controller-manager"))
        self._ensure(
            "kube-controller-manager",
            [
                str(bins.kube_controller_manager),
                f"--kubeconfig={kcm}",
                f"--authentication-kubeconfig={kcm}",
                f"--authorization-kubeconfig={kcm}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['controller-manager']}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allocate-node-cidrs=false",
                # Endpoints cannot hold loopback pod IPs (API validation); the process runtime resolves
                # the headless Service's names itself, so these controllers would only log errors.
                "--controllers=*,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller",
                "--leader-elect=false",
                f"--node-monitor-grace-period={max(50, 2 * tuned.node_lease_seconds)}s",
                *qps,
                "--v=1",
            ],
        )
        # kwok serves `kubectl logs` from the files its Logs objects name (the process runtime creates one per
        # pod it runs), over TLS as a kubelet would; the API server reaches it at each node's address.
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(bins.kwok_logs_crd))
        self.kubectl("wait", "--for=condition=Established", "crd/logs.kwok.x-k8s.io", "--timeout=60s")
        kwok_cert, kwok_key = ensure_serving(pki, "kwok-serving", "kwok")
        sched = str(self.paths.component_kubeconfig("scheduler"))
        self._ensure(
            "kube-scheduler",
            [
                str(bins.kube_scheduler),
                f"--kubeconfig={sched}",
                f"--authentication-kubeconfig={sched}",
                f"--authorization-kubeconfig={sched}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                "--leader-elect=false",
                *qps,
                "--v=1",
            ],
        )
        self._ensure(
            "kwok",
            [
                str(bins.kwok),
                f"--config={Path(__file__).with_name('kwok-stages.yaml')}",
                *(
                    [f"--config={self._kwok_options(tuned.kwok_parallelism)}"]
                    if tuned.kwok_parallelism
                    else []
                ),
                f"--kubeconfig={self.paths.component_kubeconfig('kwok')}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=127.15.0.1/16",
                "--node-ip=127.0.0.1",
                f"--node-port={ports['kwok']}",
                f"--server-address=127.0.0.1:{ports['kwok']}",
                f"--tls-cert-file={kwok_cert}",
                f"--tls-private-key-file={kwok_key}",
                "--enable-crds=Logs",
                f"--node-lease-duration-seconds={tuned.node_lease_seconds}",
            ],
        )

    def _kwok_options(self, workers: int) -> Path:
        options = {  # a KwokConfiguration replaces kwok's defaults as a whole: restate them
            "podPlayStageParallelism": workers,
            "nodePlayStageParallelism": workers,
            "nodeLeaseParallelism": workers,
            "podsOnNodeSyncParallelism": 1,
            "enableDebuggingHandlers": True,
            "enableContentionProfiling": False,
            "enableProfilingHandler": True,
            "enablePodsOnNodeSyncListPager": True,
            "enablePodsOnNodeSyncStreamWatch": False,
        }
        doc = {"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokConfiguration", "options": options}
        path = self.paths.state / "kwok-options.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def run_kubectl(
        self, *args: str, check: bool = True, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster as admin."""
        bins = ensure_binaries(self.report)
        proc = subprocess.run(
            [str(bins.kubectl), f"--kubeconfig={self.paths.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input_text,
            check=False,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def kubectl(self, *args: str, check: bool = True, input_text: str | None = None) -> str:
        """Run kubectl against this cluster as admin and return stdout."""
        return self.run_kubectl(*args, check=check, input_text=input_text).stdout

    def _create_nodes(self, bins: Binaries, config: ClusterConfig) -> None:
        manifests = node_manifests(config)
        existing = set(self.kubectl("get", "nodes", "-o", "name").split())
        missing = [m for m in manifests if f"node/{m['metadata']['name']}" not in existing]
        if missing:
            self.report(f"creating {len(missing)} fake GPU nodes")
            self.kubectl("create", "-f", "-", input_text=yaml.safe_dump_all(missing))
        names = {m["metadata"]["name"] for m in manifests}

        def all_ready() -> bool:  # one LIST: `get nodes NAME...` would GET them one by one
            out = self.kubectl(
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=='Ready')].status}"
                "{' '}{end}",
                check=False,
            )
            ready = {name for name, _, status in (w.partition("=") for w in out.split()) if status == "True"}
            return names <= ready

        _wait("fake GPU nodes (kwok)", all_ready, timeout_s=90 + len(names) / 5, log=self.paths.log("kwok"))

    def _start_karpenter(self, bins: Binaries, config: ClusterConfig, ports: dict[str, int]) -> None:
        """Karpenter's kwok provider with one NodePool per autoscaled pool (none: it does not run)."""
        pools = karpenter.node_pools(config)
        managed = ",".join(f"{k}={v}" for k, v in karpenter.MANAGED_BY.items())
        if not pools:
            if processes.running(self.paths.state, "karpenter") is not None:
                self.kubectl("delete", "nodepools", "-l", managed, "--ignore-not-found", check=False)
                processes.stop(self.paths.state, "karpenter")
            return
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(bins.karpenter_crds))
        crds = ("nodepools.karpenter.sh", "nodeclaims.karpenter.sh", "kwoknodeclasses.karpenter.kwok.sh")
        self.kubectl("wait", "--for=condition=Established", *(f"crd/{c}" for c in crds), "--timeout=60s")
        _wait(
            "the NodePool API to serve",
            lambda: self.run_kubectl("get", "nodepools", "-o", "name", check=False).returncode == 0,
            timeout_s=60,
            log=None,
        )
        docs = [karpenter.node_class(), *pools]
        self.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(docs))
        wanted = {f"nodepool.karpenter.sh/{p['metadata']['name']}" for p in pools}
        stale = set(self.kubectl("get", "nodepools", "-l", managed, "-o", "name").split()) - wanted
        if stale:
            self.kubectl("delete", *sorted(stale), "--wait=false")
        types_file = self.paths.state / "karpenter" / "instance-types.json"
        types_file.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(karpenter.instance_types(config), indent=1)
        if types_file.exists() and types_file.read_text() != text:
            processes.stop(self.paths.state, "karpenter")  # it reads the instance types once, at start
        types_file.write_text(text)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.paths.state / "karpenter"),
            "KUBECONFIG": str(self.paths.component_kubeconfig("karpenter")),
            "INSTANCE_TYPES_FILE_PATH": str(types_file),
            "DISABLE_LEADER_ELECTION": "true",  # one replica, out of cluster
            "METRICS_PORT": str(ports["karpenter-metrics"]),  # bound to 127.0.0.1 (see binaries.py)
            "HEALTH_PROBE_PORT": str(ports["karpenter-health"]),
            "LOG_LEVEL": "info",
        }
        self._ensure("karpenter", [str(bins.karpenter)], env=env)

    def _wait_karpenter(self, config: ClusterConfig, ports: dict[str, int]) -> None:
        if karpenter.autoscaled_pools(config):
            ready = f"http://127.0.0.1:{ports['karpenter-health']}/readyz"
            _wait("karpenter", lambda: _http_ok(ready), timeout_s=120, log=self.paths.log("karpenter"))

    def _install_chart(self, bins: Binaries) -> None:
        chart = repo_root() / "charts" / "paceline"
        self.report("installing the Paceline chart (CRDs, ServiceAccount, RBAC) with helm")
        env = dict(
            os.environ,
            HELM_CACHE_HOME=str(self.paths.state / "helm" / "cache"),
            HELM_CONFIG_HOME=str(self.paths.state / "helm" / "config"),
            HELM_DATA_HOME=str(self.paths.state / "helm" / "data"),
        )
        proc = subprocess.run(
            [
                str(bins.helm),
                "upgrade",
                "--install",
                HELM_RELEASE,
                str(chart),
                f"--kubeconfig={self.paths.kubeconfig}",
                "--namespace",
                OPERATOR_NAMESPACE,
                "--create-namespace",
                "--set",
                "operator.deploy=false",
                "--wait",
                "--timeout",
                "2m",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=180,
        )
        if proc.returncode != 0:
            raise ClusterError(
                f"helm install of {chart} failed: {proc.stderr.strip() or proc.stdout.strip()}"
            )
        self.kubectl("wait", "--for=condition=Established", "crd/trainingjobs.paceline.dev", "--timeout=60s")
        # Established comes before the resource's storage serves ("storage is (re)initializing"); an operator
        # started in that window has its first watch refused and kopf backs off for minutes.
        _wait(
            "the TrainingJob API to serve",
            lambda: self.run_kubectl("get", "trainingjobs", "-A", "-o", "name", check=False).returncode == 0,
            timeout_s=60,
            log=None,
        )
        # The API server's authorizer learns new RBAC through its own watch: until then the operator's first
        # requests (its NodePool watch, say) are refused with 403. Start it once they would be allowed.
        # (`can-i` answers "no" for a resource the server does not serve: NodePools only with Karpenter.)
        who = f"--as=system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
        watched = ["trainingjobs.paceline.dev"]
        if self.run_kubectl("get", "crd", "nodepools.karpenter.sh", check=False).returncode == 0:
            watched.append("nodepools.karpenter.sh")
        _wait(
            "the operator's RBAC to take effect",
            lambda: all(
                self.run_kubectl("auth", "can-i", "watch", resource, who, check=False).stdout.strip() == "yes"
                for resource in watched
            ),
            timeout_s=60,
            log=None,
        )

    def _start_runtime(self) -> None:
        self._ensure(
            "process-runtime",
            [
                sys.executable,
                "-m",
                "paceline_dev",
                "runtime",
                f"--kubeconfig={self.paths.component_kubeconfig('runtime')}",
                f"--state={self.paths.state}",
                f"--workdir={repo_root()}",
            ],
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )

    def operator_token(self) -> str:
        """A TokenRequest-API token for the chart's operator ServiceAccount."""
        return self.kubectl(
            "create", "token", OPERATOR_SERVICE_ACCOUNT, "-n", OPERATOR_NAMESPACE, "--duration=48h"
        ).strip()

    def write_operator_kubeconfig(self) -> Path:
        """Kubeconfig authenticating as the chart's ServiceAccount, so its RBAC really applies."""
        ports = _ports(self.paths)
        write_kubeconfig(
            self.paths.operator_kubeconfig,
            server=f"https://127.0.0.1:{ports['apiserver']}",
            ca=self.paths.state / "pki" / "ca.crt",
            user=OPERATOR_SERVICE_ACCOUNT,
            token=self.operator_token(),
        )
        return self.paths.operator_kubeconfig

    def _start_operator(self, bins: Binaries, ports: dict[str, int]) -> None:
        health = f"http://127.0.0.1:{ports['operator-health']}/healthz"
        if processes.running(self.paths.state, "operator") is None:
            kubeconfig = self.write_operator_kubeconfig()
            self._ensure(
                "operator",
                [
                    sys.executable,
                    "-m",
                    "paceline",
                    "operator",
                    "--all-namespaces",
                    f"--liveness={health}",
                    "--metrics-address=127.0.0.1",
                    f"--metrics-port={ports['operator-metrics']}",
                ],
                env=dict(os.environ, KUBECONFIG=str(kubeconfig), PYTHONUNBUFFERED="1"),
            )
        _wait("operator", lambda: _http_ok(health), timeout_s=60, log=self.paths.log("operator"))

    @property
    def prometheus_url(self) -> str:
        """Where the local Prometheus answers (HTTP API under /api/v1)."""
        return f"http://127.0.0.1:{_ports(self.paths)['prometheus']}"

    def _start_prometheus(self, bins: Binaries, ports: dict[str, int]) -> None:
        """Prometheus with pod discovery as its own ServiceAccount; restarted when its config changed."""
        home = self.paths.state / "prometheus"
        home.mkdir(parents=True, exist_ok=True)
        self.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(prometheus.rbac_manifests()))
        token_file = home / "token"
        token = self.kubectl(
            "create", "token", prometheus.SERVICE_ACCOUNT, "-n", prometheus.NAMESPACE, "--duration=48h"
        ).strip()
        token_file.write_text(token)  # read on every request: a restarted cluster refreshes it in place
        token_file.chmod(0o600)
        wanted = prometheus.config(
            api_server=f"https://127.0.0.1:{ports['apiserver']}",
            ca_file=self.paths.state / "pki" / "ca.crt",
            token_file=token_file,
            operator_target=f"127.0.0.1:{ports['operator-metrics']}",
        )
        config_file = home / "prometheus.yml"
        if not prometheus.config_matches(config_file, wanted):
            processes.stop(self.paths.state, "prometheus")
            config_file.write_text(yaml.safe_dump(wanted, sort_keys=False))
        self._ensure(
            "prometheus",
            prometheus.command(
                bins.prometheus, config_file=config_file, data=home / "data", port=ports["prometheus"]
            ),
        )
        _wait(
            "prometheus",
            lambda: _http_ok(f"{self.prometheus_url}/-/ready"),
            timeout_s=60,
            log=self.paths.log("prometheus"),
        )

    def start_operator(self) -> None:
        """Start (or restart after a stop) the operator only."""
        self._start_operator(ensure_binaries(self.report), _ports(self.paths))

    def stop_component(self, name: str) -> bool:
        """Stop one component by its recorded PID."""
        return processes.stop(self.paths.state, name)

    def restart_control_plane(self, name: str) -> None:
        """Stop etcd or kube-apiserver (SIGTERM by its recorded PID) and start it again, as a kubelet restarts
        a static pod; returns once it answers again. Clients of the API keep running and must reconnect."""
        bins, ports = ensure_binaries(self.report), _ports(self.paths)
        pki = ensure_pki(self.paths.state / "pki")
        starts = {
            "etcd": lambda: self._start_etcd(bins, ports),
            "kube-apiserver": lambda: self._start_apiserver(bins, pki, ports),
        }
        if name not in starts:
            raise ValueError(f"restart_control_plane restarts {sorted(starts)}, not {name!r}")
        stopped = time.time()
        processes.stop(self.paths.state, name)
        starts[name]()  # returns once /readyz passes, informer-sync (RBAC's caches) included
        if name == "kube-apiserver":
            self.apiserver_restarts.append((stopped, time.time()))

    # -- down ---------------------------------------------------------------------------------------------
    def down(self, *, purge: bool = False) -> None:
        """Stop every process this cluster started (recorded PIDs only); purge also deletes the state."""
        for name in reversed(COMPONENTS):
            if processes.stop(self.paths.state, name):
                self.report(f"stopped {name}")
        if purge:
            import shutil

            shutil.rmtree(self.paths.state, ignore_errors=True)
            self.report(f"removed {self.paths.state}")
