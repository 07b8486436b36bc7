"""Names of the TrainingJob API and of the objects Paceline creates: group, labels, annotations, pod names."""

from __future__ import annotations

import hashlib

from paceline_worker.wire import LAUNCHER_PORT, METRICS_PORT, PS_PORT, TOKEN_FILE, TOKEN_KEY, TOKEN_MOUNT

GROUP = "paceline.dev"
VERSION = "v1alpha1"
PLURAL = "trainingjobs"
KIND = "TrainingJob"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_JOB = "paceline.dev/job"
LABEL_RANK = "paceline.dev/rank"
LABEL_ATTEMPT = "paceline.dev/attempt"
LABEL_ROLE = "paceline.dev/role"
LABEL_POOL = "paceline.dev/pool"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "paceline"
ANNOTATION_PLAN_HASH = "paceline.dev/plan-hash"
PLACEHOLDER_IMAGE = "registry.k8s.io/pause:3.10"  # placeholder pods hold GPUs and run nothing
ANNOTATION_GENERATION = "paceline.dev/generation"  # the membership generation a pod was created in
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
NODEPOOL_LABEL = "karpenter.sh/nodepool"  # on nodes Karpenter launched: their NodePool
PRICE_ANNOTATION = (
    "paceline.dev/price-per-gpu-hour"  # on a NodePool: USD per GPU-hour (overrides the catalog)
)

PS_ENTRYPOINT = ("python", "-m", "paceline_worker.asynchronous.ps")
RL_ENTRYPOINT = ("python", "-m", "paceline_worker.reinforcement")  # actors and learners (PACELINE_ROLE)
LAUNCHER = "paceline_worker.launch"
LAUNCHER_ENTRYPOINT = ("python", "-m", LAUNCHER)  # torchrun, one process per GPU; see worker-image
DEFAULT_CHECKPOINT_ROOT = "/tmp/paceline"  # in the container: lost with it; see spec.checkpoint
CHECKPOINT_MOUNT = "/var/run/paceline/checkpoint"  # where spec.checkpoint's volume is mounted
CHECKPOINT_VOLUME = "paceline-checkpoint"
TOKEN_VOLUME = "paceline-control-token"  # the job's control token (a Secret), read-only in every pod
ROLE_TOKEN = "control-token"  # LABEL_ROLE of the token Secret
TMP_VOLUME = "paceline-tmp"  # an emptyDir at /tmp: the root filesystem is read-only
POD_USER = 65532  # runAsUser, runAsGroup and fsGroup of every pod Paceline creates (non-root)

__all__ = [
    "ANNOTATION_GENERATION",
    "ANNOTATION_PLAN_HASH",
    "API_VERSION",
    "CHECKPOINT_MOUNT",
    "CHECKPOINT_VOLUME",
    "DEFAULT_CHECKPOINT_ROOT",
    "GPU_PRODUCT_LABEL",
    "GPU_RESOURCE",
    "GROUP",
    "KIND",
    "LABEL_ATTEMPT",
    "LABEL_JOB",
    "LABEL_MANAGED_BY",
    "LABEL_POOL",
    "LABEL_RANK",
    "LABEL_ROLE",
    "LAUNCHER",
    "LAUNCHER_ENTRYPOINT",
    "LAUNCHER_PORT",
    "MANAGED_BY",
    "METRICS_PORT",
    "NODEPOOL_LABEL",
    "PLACEHOLDER_IMAGE",
    "PLURAL",
    "POD_USER",
    "PRICE_ANNOTATION",
    "PS_ENTRYPOINT",
    "PS_PORT",
    "RL_ENTRYPOINT",
    "ROLE_TOKEN",
    "TMP_VOLUME",
    "TOKEN_FILE",
    "TOKEN_KEY",
    "TOKEN_MOUNT",
    "TOKEN_VOLUME",
    "VERSION",
    "actor_pod_name",
    "capacity_pod_name",
    "control_name",
    "learner_pod_name",
    "master_port",
    "ps_pod_name",
    "token_secret_name",
    "worker_pod_name",
]


def capacity_pod_name(job: str, pool: str, index: int) -> str:
    """A placeholder pod asking NodePool `pool` for one more worker's GPUs."""
    return f"{job}-capacity-{pool}-{index}"


def worker_pod_name(job: str, rank: int) -> str:
    """Pod (and hostname) of one worker rank."""
    return f"{job}-worker-{rank}"


def ps_pod_name(job: str, shard: int) -> str:
    """Pod (and hostname) of one parameter-server shard."""
    return f"{job}-ps-{shard}"


def learner_pod_name(job: str, index: int) -> str:
    """Pod (and hostname) of one reinforcement learner."""
    return f"{job}-learner-{index}"


def actor_pod_name(job: str, index: int) -> str:
    """Pod (and hostname) of one reinforcement actor."""
    return f"{job}-actor-{index}"


def control_name(job: str) -> str:
    """ConfigMap holding the job's plan and the versioned assignment workers follow."""
    return f"{job}-control"


def token_secret_name(job: str) -> str:
    """Secret holding the job's control token (the operator's writes to its pods bear it)."""
    return f"{job}-control-token"


def master_port(uid: str, generation: int = 0) -> int:
    """A rendezvous port derived from the job's UID (distinct per job when pods share a host, as locally),
    another for each membership generation (the previous one's store may still be closing)."""
    return 20000 + (int(hashlib.sha256(uid.encode()).hexdigest()[:8], 16) + generation) % 10000
