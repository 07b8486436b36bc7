"""Local volumes for the process runtime: a PersistentVolume under the state directory for every claim that
waits for one (what a storage provisioner does), Secret volumes written as files into a directory of the pod's
own (what the kubelet does), and a pod's mount paths mapped onto those directories.

The kube-controller-manager's volume binder then binds claim and volume as on a real cluster, and the
scheduler places pods that use the claim. A process cannot mount anything, so the runtime rewrites the mount
path in the container's environment (e.g. PACELINE_CHECKPOINT_DIR=/var/run/paceline/checkpoint) to the
volume's directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LABEL = "paceline.dev/local-volume"


def volume_for_claim(claim: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """A hostPath PersistentVolume pre-bound to `claim`, in a directory of its own under `root`."""
    meta, spec = claim["metadata"], claim.get("spec") or {}
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    directory = root / meta["namespace"] / meta["name"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"local-{meta['uid']}", "labels": {LABEL: "true"}},
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": spec.get("storageClassName") or "",
            "hostPath": {"path": str(directory), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }


def waiting_claims(claims: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Claims without a volume that are not being deleted."""
    return [
        c
        for c in claims
        if not (c.get("spec") or {}).get("volumeName") and not c["metadata"].get("deletionTimestamp")
    ]


def mount_map(
    pod: Mapping[str, Any], container: Mapping[str, Any], volume_paths: Mapping[str, str]
) -> dict[str, str]:
    """mountPath → local directory for the container's mounts of claims (`volume_paths`: claim → path)."""
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in (pod.get("spec") or {}).get("volumes") or []
        if v.get("persistentVolumeClaim")
    }
    out = {}
    for mount in container.get("volumeMounts") or []:
        claim = claims.get(mount["name"])
        if claim is not None and claim in volume_paths:
            sub = mount.get("subPath") or ""
            out[mount["mountPath"].rstrip("/")] = str(Path(volume_paths[claim]) / sub).rstrip("/")
    return out


def remap(env: Mapping[str, str], mounts: Mapping[str, str]) -> dict[str, str]:
    """Environment values that name a path under a mount point, pointed at the mount's local directory."""
    out = dict(env)
    for name, value in env.items():
        for mount_path, local in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            if value == mount_path or value.startswith(mount_path + "/"):
                out[name] = local + value[len(mount_path) :]
                break
    return out


def secret_mounts(pod: Mapping[str, Any], container: Mapping[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(mountPath, volume name, secret name, optional) of the container's mounts of Secret volumes."""
    secrets = {
        v["name"]: v["secret"] for v in (pod.get("spec") or {}).get("volumes") or [] if v.get("secret")
    }
    out = []
    for mount in container.get("volumeMounts") or []:
        source = secrets.get(mount["name"])
        if source is not None and not mount.get("subPath"):
            out.append(
                (
                    mount["mountPath"].rstrip("/"),
                    mount["name"],
                    str(source.get("secretName") or ""),
                    bool(source.get("optional")),
                )
            )
    return out


def write_secret(directory: Path, data: Mapping[str, bytes]) -> None:
    """A Secret's keys as files readable by the owner only (the process runs as this user)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for key, value in data.items():
        path = directory / key
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as out:
            out.write(value)
