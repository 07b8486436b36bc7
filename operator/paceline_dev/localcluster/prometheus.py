"""Prometheus for the local cluster (dev/test only): Debian's ``prometheus`` package, unpacked into the cache,
configured with Kubernetes service discovery against the local API server.

Why Debian's package: a Go build of Prometheus adds many minutes to a cold CI run; the package is one
download of ~17 MB. Debian 12's prometheus (2.42) was built without Kubernetes service discovery, so the
package comes from Debian 13 (trixie, 2.53, a static Go binary that runs on 12 as well): apt with its own
source list, lists and cache under ``~/.cache/paceline/apt/`` (the mirror is the one this machine's apt
already uses) runs ``apt-get update`` + ``apt-get download``, and ``dpkg-deb -x`` unpacks it into
``~/.cache/paceline/bin/prometheus-<version>/``. Nothing is installed system-wide, no service is started,
the system's apt state is untouched, and root is not needed.

What it scrapes (every address loopback, enforced by relabelling):

- the operator's metrics port (a static target: the operator runs as a local process);
- every pod annotated ``prometheus.io/scrape: "true"`` (workers and parameter servers, port from
  ``prometheus.io/port``), found through the API server with role ``pod`` as the ServiceAccount
  ``paceline-system/paceline-prometheus`` (RBAC: get/list/watch pods), only at loopback pod IPs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from paceline_dev.localcluster import versions

NAMESPACE = "paceline-system"
SERVICE_ACCOUNT = "paceline-prometheus"
PACKAGE = "prometheus"
SCRAPE_INTERVAL = "2s"  # the operator observes every 2 s; a local cluster has few targets
LOOPBACK = r"127\.\d+\.\d+\.\d+"

Report = Callable[[str], None]


class PrometheusUnavailable(RuntimeError):
    """Prometheus could not be fetched; the message says what failed and what to do."""


def debian_mirror(sources: Path = Path("/etc/apt")) -> str | None:
    """The Debian archive this machine's apt already uses (deb822 `URIs:` or one-line `deb URI suite`)."""
    files = [*sorted(sources.glob("sources.list.d/*.sources")), sources / "sources.list"]
    files += sorted(sources.glob("sources.list.d/*.list"))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        uris = re.findall(r"^\s*URIs:\s*(\S+)", text, re.MULTILINE)
        uris += re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", text, re.MULTILINE)
        for uri in uris:
            if "security" not in uri and uri.rstrip("/").endswith("/debian"):
                return uri
    return None


def _apt_options(home: Path) -> list[str]:
    """apt with its own sources, lists and cache under `home`: the system's apt state is not touched."""
    options = {
        "Dir::Etc::SourceList": str(home / "sources.list"),
        "Dir::Etc::SourceParts": "/dev/null",
        "Dir::State::Lists": str(home / "lists"),
        "Dir::State::Status": str(home / "status"),
        "Dir::Cache": str(home / "cache"),
        "Debug::NoLocking": "true",
    }
    if os.geteuid() == 0:
        options["APT::Sandbox::User"] = "root"  # our own directories: no need to hand them to _apt
    return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]


def _apt(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", "-q", *_apt_options(home), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


def installed(cache: Path) -> Path | None:
    """The newest unpacked Prometheus under the cache, if any."""
    found = sorted((cache / "bin").glob("prometheus-*/usr/bin/prometheus"))
    return found[-1] if found else None


def ensure_prometheus(cache: Path, report: Report, *, suite: str = versions.PROMETHEUS_DEBIAN_SUITE) -> Path:
    """Path of a Prometheus binary: Debian's package unpacked into the cache on first use."""
    have = installed(cache)
    if have is not None:
        return have
    mirror = debian_mirror()
    keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing or mirror is None or not keyring.exists():
        raise PrometheusUnavailable(
            "Prometheus comes from Debian's `prometheus` package (apt-get download + dpkg-deb -x); "
            f"this machine lacks {', '.join(missing) or 'a Debian archive in /etc/apt or ' + str(keyring)}"
        )
    home = cache / "apt" / suite
    (home / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (home / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (home / "status").touch()
    (home / "sources.list").write_text(f"deb [signed-by={keyring}] {mirror} {suite} main\n")
    # Debian {suite}: bookworm's prometheus was built without Kubernetes service discovery
    report(f"fetching Debian {suite}'s prometheus package (apt-get download, unpacked under {cache / 'bin'})")
    update = _apt(home, "update")
    if update.returncode != 0:
        raise PrometheusUnavailable(
            f"apt-get update of Debian {suite} from {mirror} failed: {update.stderr.strip()[-800:]}"
        )
    with tempfile.TemporaryDirectory(prefix="paceline-prometheus-") as tmp:
        os.chmod(tmp, 0o755)
        download = _apt(home, "download", PACKAGE, cwd=Path(tmp))
        debs = list(Path(tmp).glob("prometheus_*.deb"))
        if download.returncode != 0 or not debs:
            raise PrometheusUnavailable(
                f"apt-get download {PACKAGE} ({suite}) failed (exit {download.returncode}): "
                f"{download.stderr.strip()[-800:]}"
            )
        version = debs[0].name.split("_")[1]
        target = cache / "bin" / f"prometheus-{re.sub(r'[^A-Za-z0-9.+-]', '_', version)}"
        staging = target.with_name(target.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        unpack = subprocess.run(
            ["dpkg-deb", "-x", str(debs[0]), str(staging)], capture_output=True, text=True, check=False
        )
        if unpack.returncode != 0:
            raise PrometheusUnavailable(f"dpkg-deb -x {debs[0].name} failed: {unpack.stderr.strip()}")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    binary = target / "usr" / "bin" / "prometheus"
    if not binary.exists():
        raise PrometheusUnavailable(f"Debian's prometheus {version} has no usr/bin/prometheus")
    report(f"prometheus {version} ready: {binary}")
    return binary


def rbac_manifests() -> list[dict[str, Any]]:
    """The ServiceAccount Prometheus discovers pods as, and its least-privilege ClusterRole."""
    name = SERVICE_ACCOUNT
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": NAMESPACE}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}],
        },
    ]


def config(*, api_server: str, ca_file: Path, token_file: Path, operator_target: str) -> dict[str, Any]:
    """prometheus.yml: the operator (static, loopback) and annotated pods (Kubernetes SD, loopback IPs only).

    No alerting, no remote write, no rule files: nothing leaves the machine.
    """
    host = operator_target.rsplit(":", 1)[0]
    if not re.fullmatch(LOOPBACK, host):
        raise ValueError(f"operator target {operator_target} is not a loopback address")

    def meta(name: str) -> str:
        return f"__meta_kubernetes_pod_{name}"

    pods: dict[str, Any] = {
        "job_name": "kubernetes-pods",
        "kubernetes_sd_configs": [
            {
                "role": "pod",
                "api_server": api_server,
                "tls_config": {"ca_file": str(ca_file)},
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
            }
        ],
        "relabel_configs": [
            {"source_labels": [meta("annotation_prometheus_io_scrape")], "regex": "true", "action": "keep"},
            {
                "source_labels": [meta("annotation_paceline_dev_no_process")],
                "regex": "true",
                "action": "drop",
            },
            {"source_labels": [meta("phase")], "regex": "Running", "action": "keep"},
            {"source_labels": [meta("ip")], "regex": LOOPBACK, "action": "keep"},  # the network rule
            {
                "source_labels": [meta("ip"), meta("annotation_prometheus_io_port")],
                "regex": rf"({LOOPBACK});(\d+)",
                "replacement": "$1:$2",
                "target_label": "__address__",
            },
            {"source_labels": ["__address__"], "regex": rf"{LOOPBACK}:\d+", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": [meta("name")], "target_label": "pod"},
            {"source_labels": [meta("node_name")], "target_label": "node"},
            {"source_labels": [meta("label_paceline_dev_role")], "target_label": "role"},
        ],
    }
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": "15s",
        },
        "scrape_configs": [
            {"job_name": "paceline-operator", "static_configs": [{"targets": [operator_target]}]},
            pods,
        ],
    }


def command(binary: Path, *, config_file: Path, data: Path, port: int) -> list[str]:
    """Prometheus bound to 127.0.0.1 only, its data under the state directory."""
    return [
        str(binary),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data}",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",  # POST /-/reload after a config change
        "--log.level=warn",
    ]


def config_matches(path: Path, wanted: Mapping[str, Any]) -> bool:
    """Whether the config file on disk already says `wanted` (a running Prometheus keeps it)."""
    import yaml

    return path.exists() and yaml.safe_load(path.read_text()) == dict(wanted)
