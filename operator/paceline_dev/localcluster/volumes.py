"""Local volumes for the process runtime: a PersistentVolume under the state directory for every claim that
waits for one (what a storage provisioner does), and a pod's mount paths mapped onto those directories.

The kube-controller-manager's volume binder then binds claim and volume as on a real cluster, and the
scheduler places pods that use the claim. A process cannot mount anything, so the runtime rewrites the mount
path in the container's environment (e.g. PACELINE_CHECKPOINT_DIR=/var/run/paceline/checkpoint) to the
volume's directory.
"""

from __future__ import annotations

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
