"""Desired Kubernetes objects of a TrainingJob, built as plain dicts (pure: no API calls)."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from paceline import api
from paceline.plan_types import Executed, JobPlan, Layout, ModuleSplit, SplitStyle, WorkerPlacement
from paceline_worker.wire import LAUNCHER_PORT, Assignment, Env, HyperparameterUpdate

RESIZE_GRACE_S = 120  # how long an elastic pod's launcher waits for the operator after its ranks failed


@dataclass(frozen=True, kw_only=True)
class JobRef:
    """The identity of a TrainingJob that its children point back to."""

    name: str
    namespace: str
    uid: str

    def owner_reference(self) -> dict[str, Any]:
        """ownerReference making the child garbage-collected with the job, which controls it."""
        owner = {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": self.name, "uid": self.uid}
        return owner | {"controller": True, "blockOwnerDeletion": True}


def _labels(job: JobRef, **extra: str) -> dict[str, str]:
    return {api.LABEL_JOB: job.name, api.LABEL_MANAGED_BY: api.MANAGED_BY, **extra}


def build_service(job: JobRef, *, port: int) -> dict[str, Any]:
    """Headless Service giving each worker a stable DNS name (<job>-worker-<rank>.<job>)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": job.name,
            "namespace": job.namespace,
            "labels": _labels(job),
            "ownerReferences": [job.owner_reference()],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {api.LABEL_JOB: job.name},  # workers and parameter servers: one DNS name each
            "ports": [
                {"name": "rendezvous", "port": port, "targetPort": port},
                {"name": "metrics", "port": api.METRICS_PORT, "targetPort": api.METRICS_PORT},
            ],
        },
    }


def plan_to_json(plan: JobPlan) -> str:
    """Serialise a plan for the control ConfigMap."""
    return json.dumps(asdict(plan), sort_keys=True)


@functools.lru_cache(maxsize=1024)
def plan_from_json(text: str) -> JobPlan:
    """Read back a plan stored by `plan_to_json` (cached: every pass reads its job's stored plan)."""
    doc = json.loads(text)
    workers = tuple(WorkerPlacement(**w) for w in doc.pop("workers"))
    layers = tuple(doc.pop("layers", ()) or ())
    splits = tuple(
        ModuleSplit(
            **{
                **s,
                "style": SplitStyle(s["style"]),
                "shape": tuple(s["shape"]),
                "input": Layout(s["input"]),
                "output": Layout(s["output"]),
            }
        )
        for s in doc.pop("splits", ()) or ()
    )
    executed = Executed(doc.pop("executed", Executed.DATA_PARALLEL))
    return JobPlan(workers=workers, layers=layers, splits=splits, executed=executed, **doc)


def build_checkpoint_claim(job: JobRef, *, spec: api.JobSpec) -> dict[str, Any] | None:
    """The PersistentVolumeClaim of spec.checkpoint.volumeClaimTemplate, owned by the job (None: none)."""
    template = spec.checkpoint.claim_template
    if template is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": spec.checkpoint.claim(job.name),
            "namespace": job.namespace,
            "labels": _labels(job, **{api.LABEL_ROLE: "checkpoint"}),
            "ownerReferences": [job.owner_reference()],
        },
        "spec": copy.deepcopy(dict(template)),
    }


def build_token_secret(job: JobRef, *, token: str) -> dict[str, Any]:
    """The Secret with the job's control token, owned by the job and mounted into its pods. Created once
    with a fresh random token and never changed while the job lives (no rotation under running pods)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": api.token_secret_name(job.name),
            "namespace": job.namespace,
            "labels": _labels(job, **{api.LABEL_ROLE: api.ROLE_TOKEN}),
            "ownerReferences": [job.owner_reference()],
        },
        "stringData": {api.TOKEN_KEY: token},
    }


# The restricted Pod Security Standard, and a little more: what every pod Paceline creates runs with unless
# the template says otherwise (a template's own value for a field wins).
POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": api.POD_USER,
    "runAsGroup": api.POD_USER,
    "fsGroup": api.POD_USER,  # volumes (the checkpoint claim) are writable by the pod's group
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _fill(ours: Mapping[str, Any], theirs: Mapping[str, Any] | None) -> dict[str, Any]:
    """`theirs` with `ours` filling every field it does not set."""
    return {**copy.deepcopy(dict(ours)), **copy.deepcopy(dict(theirs or {}))}


def harden(pod_spec: dict[str, Any], *, tmp: bool = True) -> None:
    """Least privilege for a pod spec, in place: non-root with a fixed user and group, no privilege
    escalation, no capabilities, seccomp RuntimeDefault, a read-only root filesystem (with an emptyDir at
    /tmp when `tmp`) and no ServiceAccount token."""
    pod_spec["securityContext"] = _fill(POD_SECURITY, pod_spec.get("securityContext"))
    pod_spec.setdefault("automountServiceAccountToken", False)
    mounted = False
    for key in ("containers", "initContainers"):
        for container in pod_spec.get(key) or []:
            container["securityContext"] = _fill(CONTAINER_SECURITY, container.get("securityContext"))
            mounts = container.get("volumeMounts") or []
            if tmp and not any(m.get("mountPath", "").rstrip("/") == "/tmp" for m in mounts):
                container["volumeMounts"] = [*mounts, {"name": api.TMP_VOLUME, "mountPath": "/tmp"}]
                mounted = True
    if mounted and not any(v.get("name") == api.TMP_VOLUME for v in pod_spec.get("volumes") or []):
        pod_spec.setdefault("volumes", []).append({"name": api.TMP_VOLUME, "emptyDir": {}})


def _mount_token(job: JobRef, pod_spec: dict[str, Any], container: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's token Secret as a read-only volume in `container`; the env variable that points at it."""
    volumes = pod_spec.setdefault("volumes", [])
    if not any(v.get("name") == api.TOKEN_VOLUME for v in volumes):
        volumes.append(
            {
                "name": api.TOKEN_VOLUME,
                "secret": {"secretName": api.token_secret_name(job.name), "defaultMode": 0o440},
            }
        )
    container.setdefault("volumeMounts", []).append(
        {"name": api.TOKEN_VOLUME, "mountPath": api.TOKEN_MOUNT, "readOnly": True}
    )
    return [_env(Env.TOKEN_FILE, api.TOKEN_FILE)]


def build_control(
    job: JobRef, *, plan: JobPlan, plan_hash: str, assignment: Assignment, members: str | None = None
) -> dict[str, Any]:
    """The control ConfigMap: the plan in force, the assignment workers follow (versioned) and the
    membership (`members`: which pod runs which rank, as JSON)."""
    cm: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": api.control_name(job.name),
            "namespace": job.namespace,
            "labels": _labels(job, **{api.LABEL_ROLE: "control"}),
            "ownerReferences": [job.owner_reference()],
        },
        "data": {
            "planHash": plan_hash,
            "plan.json": plan_to_json(plan),
            "assignment.json": assignment.to_json(),
        },
    }
    if members is not None:
        cm["data"]["members.json"] = members
    return cm


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": str(name), "value": value}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": str(name), "valueFrom": {"fieldRef": {"fieldPath": path}}}


def worker_env(
    job: JobRef,
    *,
    spec: api.JobSpec,
    rank: int,
    world_size: int,
    attempt: int,
    assignment: Assignment,
    port: int,
    sharding: str,
    master_pod: str | None = None,
    generation: int = 0,
) -> list[dict[str, Any]]:
    """The launcher's (torchrun's PET_*) environment plus Paceline's own variables.

    Synchronous pods run one process per GPU under torchrun, which sets RANK, LOCAL_RANK, WORLD_SIZE and
    LOCAL_WORLD_SIZE itself; asynchronous pods run one process and get the torch.distributed variables here.
    `master_pod` is the pod of rank 0 (default `<job>-worker-0`); `generation` the membership it belongs to.
    """
    master_name = master_pod or api.worker_pod_name(job.name, 0)
    master = f"{master_name}.{job.name}.{job.namespace}.svc.cluster.local"
    if spec.mode is api.Mode.SYNCHRONOUS:
        launch = [
            _env(Env.GENERATION, str(generation)),
            _env(Env.NNODES, str(world_size)),
            _env(Env.NODE_RANK, str(rank)),
            _env(Env.NPROC_PER_NODE, str(spec.gpus_per_worker)),
            _env(Env.LAUNCH_MASTER_ADDR, master),
            _env(Env.LAUNCH_MASTER_PORT, str(port)),
            _env(Env.PLAN, sharding),
            _env(Env.LAUNCHER_PORT, str(LAUNCHER_PORT)),
        ]
        if spec.elastic_range:
            # Elastic: when a peer's node is lost the ranks fail; the launcher holds the pod while the
            # operator re-plans, instead of reporting the peer's loss as this pod's failure.
            launch.append(_env(Env.RESIZE_GRACE_S, str(RESIZE_GRACE_S)))
    else:
        launch = [
            _env(Env.MASTER_ADDR, master),
            _env(Env.MASTER_PORT, str(port)),
            _env(Env.RANK, str(rank)),
            _env(Env.WORLD_SIZE, str(world_size)),
            _env(Env.LOCAL_RANK, "0"),
            _env(Env.LOCAL_WORLD_SIZE, "1"),
            _env(Env.GROUP_RANK, str(rank)),
        ]
    return [
        *launch,
        _env(Env.JOB, job.name),
        _env(Env.NAMESPACE, job.namespace),
        _env(Env.MODE, str(spec.mode)),
        _env(Env.ATTEMPT, str(attempt)),
        _env(Env.GLOBAL_BATCH, str(spec.global_batch)),
        _env(Env.ASSIGNMENT, assignment.to_json()),
        _env(Env.METRICS_PORT, str(api.METRICS_PORT)),
        _field_env(Env.POD_IP, "status.podIP"),
        _field_env(Env.POD_NAME, "metadata.name"),
        _field_env(Env.NODE_NAME, "spec.nodeName"),
        *_async_env(job, spec=spec, role="worker"),
    ]


def launched(command: list[str]) -> list[str]:
    """The container command under Paceline's launcher (a process per GPU), unless it already is torchrun."""
    joined = " ".join(command[:3])
    if not command or "torchrun" in command[0] or "torch.distributed.run" in joined or api.LAUNCHER in joined:
        return command
    return [*api.LAUNCHER_ENTRYPOINT, "--", *command]


def ps_addresses(job: JobRef, shards: int) -> str:
    """PACELINE_PS_ADDRS: every parameter-server shard's stable DNS name and port, shard order."""
    return ",".join(
        f"{api.ps_pod_name(job.name, i)}.{job.name}.{job.namespace}.svc.cluster.local:{api.PS_PORT}"
        for i in range(shards)
    )


def _async_env(job: JobRef, *, spec: api.JobSpec, role: str) -> list[dict[str, Any]]:
    if spec.mode is not api.Mode.ASYNCHRONOUS:
        return []
    return [_env(Env.ROLE, role), _env(Env.PS_ADDRS, ps_addresses(job, spec.parameter_servers))]


def _pod(
    job: JobRef, *, spec: api.JobSpec, name: str, role_labels: Mapping[str, str], plan_hash: str
) -> dict[str, Any]:
    """A pod from the template with Paceline's labels, annotations, stable DNS name and GPU toleration."""
    template: Mapping[str, Any] = spec.template
    meta_in = template.get("metadata") or {}
    pod_spec = copy.deepcopy(dict(template["spec"]))
    pod_spec["restartPolicy"] = "Never"
    pod_spec["hostname"] = name
    pod_spec["subdomain"] = job.name
    pod_spec.setdefault("tolerations", []).append(
        {"key": api.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": job.namespace,
            "labels": {**(meta_in.get("labels") or {}), **_labels(job, **role_labels)},
            "annotations": {
                **(meta_in.get("annotations") or {}),
                api.ANNOTATION_PLAN_HASH: plan_hash,
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(api.METRICS_PORT),
            },
            "ownerReferences": [job.owner_reference()],
        },
        "spec": pod_spec,
    }


def build_capacity_pod(job: JobRef, *, name: str, pool: str, gpus: int) -> dict[str, Any]:
    """A placeholder asking Karpenter NodePool `pool` for one worker's GPUs: pending until a node of the pool
    has room, then holding its GPUs (the pause image runs nothing) until the job grows into the node."""
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": job.namespace,
            "labels": _labels(job, **{api.LABEL_ROLE: "capacity", api.LABEL_POOL: pool}),
            "ownerReferences": [job.owner_reference()],
        },
        "spec": {
            "nodeSelector": {api.NODEPOOL_LABEL: pool},
            "tolerations": [{"key": api.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "capacity",
                    "image": api.PLACEHOLDER_IMAGE,
                    "resources": {
                        "requests": {api.GPU_RESOURCE: str(gpus)},
                        "limits": {api.GPU_RESOURCE: str(gpus)},
                    },
                }
            ],
        },
    }
    harden(pod["spec"], tmp=False)  # the pause image writes nothing
    return pod


def build_ps_pod(
    job: JobRef,
    *,
    spec: api.JobSpec,
    shard: int,
    workers: int,
    attempt: int,
    plan_hash: str,
    momentum: float,
    generation: int = 0,
) -> dict[str, Any]:
    """One parameter-server shard: the template's image running Paceline's PS entry point, no GPU."""
    pod = _pod(
        job,
        spec=spec,
        name=api.ps_pod_name(job.name, shard),
        role_labels={api.LABEL_ROLE: "ps", api.LABEL_RANK: str(shard), api.LABEL_ATTEMPT: str(attempt)},
        plan_hash=plan_hash,
    )
    pod["metadata"]["annotations"][api.ANNOTATION_GENERATION] = str(generation)
    first = dict(pod["spec"]["containers"][0])
    resources = copy.deepcopy(first.get("resources") or {})
    for kind in ("limits", "requests"):
        (resources.get(kind) or {}).pop(api.GPU_RESOURCE, None)
    env = [
        _env(Env.JOB, job.name),
        _env(Env.NAMESPACE, job.namespace),
        _env(Env.MODE, str(spec.mode)),
        _env(Env.ATTEMPT, str(attempt)),
        _env(Env.PS_SHARD, str(shard)),
        _env(Env.WORLD_SIZE, str(workers)),
        _env(Env.METRICS_PORT, str(api.METRICS_PORT)),
        _env(Env.MAX_STALENESS, str(spec.asynchronous.max_staleness)),
        _env(
            Env.HYPERPARAMETERS,
            HyperparameterUpdate(
                version=1, learning_rate=float(spec.learning_rate), momentum=momentum
            ).to_json(),
        ),
        _field_env(Env.POD_IP, "status.podIP"),
        _field_env(Env.POD_NAME, "metadata.name"),
        *_async_env(job, spec=spec, role="ps"),
    ]
    container: dict[str, Any] = {
        "name": "parameter-server",
        "image": first["image"],
        "command": list(api.PS_ENTRYPOINT),
        "env": _merge_env(
            [e for e in first.get("env") or [] if not e["name"].startswith("PACELINE_")], env, []
        ),
        "ports": [
            {"name": "ps", "containerPort": api.PS_PORT},
            {"name": "pl-metrics", "containerPort": api.METRICS_PORT},
        ],
        **({"resources": resources} if resources else {}),
        **({"workingDir": first["workingDir"]} if "workingDir" in first else {}),
        **({"securityContext": first["securityContext"]} if "securityContext" in first else {}),
    }
    container["env"] = [
        *container["env"],
        # the shard's checkpoint (ps-shard-<i>-of-<n>.npz) every intervalSteps model versions, in the job's
        # checkpoint directory
        *_checkpoint_env(job, spec, pod["spec"], container),
        _env(Env.CHECKPOINT_INTERVAL_STEPS, str(spec.checkpoint.interval_steps)),
        *_mount_token(job, pod["spec"], container),
    ]
    pod["spec"]["containers"] = [container]
    harden(pod["spec"])
    return pod


def _merge_env(
    existing: list[dict[str, Any]], ours: list[dict[str, Any]], defaults: list[dict[str, Any]]
) -> list:
    user = {e["name"] for e in existing}
    ours_names = {e["name"] for e in ours}
    kept = [e for e in existing if e["name"] not in ours_names]
    return ours + kept + [d for d in defaults if d["name"] not in user]


def build_worker_pod(
    job: JobRef,
    *,
    spec: api.JobSpec,
    placement: WorkerPlacement,
    world_size: int,
    attempt: int,
    plan_hash: str,
    assignment: Assignment,
    port: int,
    sharding: str,
    name: str | None = None,
    master_pod: str | None = None,
    generation: int = 0,
) -> dict[str, Any]:
    """One worker pod: the user's template plus placement on the planned node, GPUs, the env contract and
    (synchronous mode) the launcher that starts one process per GPU. `name` defaults to
    `<job>-worker-<rank>`; `master_pod` is rank 0's pod; `generation` the membership the pod starts in."""
    pod = _pod(
        job,
        spec=spec,
        name=name or api.worker_pod_name(job.name, placement.rank),
        role_labels={
            api.LABEL_ROLE: "worker",
            api.LABEL_RANK: str(placement.rank),
            api.LABEL_ATTEMPT: str(attempt),
            api.LABEL_POOL: placement.pool,
        },
        plan_hash=plan_hash,
    )
    pod_spec = pod["spec"]
    affinity = pod_spec.setdefault("affinity", {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    required = node_affinity.setdefault(
        "requiredDuringSchedulingIgnoredDuringExecution", {"nodeSelectorTerms": []}
    )
    # by the node's name, as the DaemonSet controller pins: a hostname label is a kubelet's to set, and a
    # node an autoscaler just added may not carry it yet
    pin = {"key": "metadata.name", "operator": "In", "values": [placement.node]}
    terms = required.get("nodeSelectorTerms") or [{"matchFields": []}]
    for term in terms:  # every term must also pin the node: terms are ORed
        term.setdefault("matchFields", []).append(pin)
    required["nodeSelectorTerms"] = terms
    containers = pod_spec["containers"]
    first = containers[0]
    resources = first.setdefault("resources", {})
    gpus = str(placement.gpus)
    resources.setdefault("limits", {})[api.GPU_RESOURCE] = gpus
    resources.setdefault("requests", {})[api.GPU_RESOURCE] = gpus
    ours = worker_env(
        job,
        spec=spec,
        rank=placement.rank,
        world_size=world_size,
        attempt=attempt,
        assignment=assignment,
        port=port,
        sharding=sharding,
        master_pod=master_pod,
        generation=generation,
    )
    pod["metadata"]["annotations"][api.ANNOTATION_GENERATION] = str(generation)
    if spec.mode is api.Mode.SYNCHRONOUS:
        first["command"] = launched([*(first.get("command") or []), *(first.pop("args", None) or [])])
    claim = spec.checkpoint.claim(job.name)
    defaults = []
    if claim is None:  # the container's own disk, unless the template says otherwise
        # the job's uid in the path: a new job of the same name never resumes an old one's checkpoint
        # where that directory outlives the container (the local cluster's processes share /tmp)
        root = f"{api.DEFAULT_CHECKPOINT_ROOT}/{job.namespace}/{job.name}"
        defaults.append(_env(Env.CHECKPOINT_DIR, f"{root}/{job.uid}"))
    else:  # the durable volume: every worker mounts it, each job keeps its own subdirectory
        pod_spec.setdefault("volumes", []).append(
            {"name": api.CHECKPOINT_VOLUME, "persistentVolumeClaim": {"claimName": claim}}
        )
        first.setdefault("volumeMounts", []).append(
            {"name": api.CHECKPOINT_VOLUME, "mountPath": api.CHECKPOINT_MOUNT}
        )
        ours.append(_env(Env.CHECKPOINT_DIR, f"{api.CHECKPOINT_MOUNT}/{job.name}"))
    ours.append(_env(Env.CHECKPOINT_INTERVAL_STEPS, str(spec.checkpoint.interval_steps)))
    ours += _mount_token(job, pod_spec, first)
    first["env"] = _merge_env(list(first.get("env") or []), ours, defaults)
    ports = first.setdefault("ports", [])
    if not any(p.get("containerPort") == api.METRICS_PORT for p in ports):
        ports.append({"name": "pl-metrics", "containerPort": api.METRICS_PORT})
    if placement.rank == 0 and not any(p.get("containerPort") == port for p in ports):
        ports.append({"name": "rendezvous", "containerPort": port})
    harden(pod_spec)
    return pod


def rl_learner_addresses(job: JobRef, learners: int) -> str:
    """PACELINE_RL_LEARNERS: every learner's stable DNS name and HTTP port, in index order."""
    return ",".join(
        f"{api.learner_pod_name(job.name, i)}.{job.name}.{job.namespace}.svc.cluster.local:{api.METRICS_PORT}"
        for i in range(learners)
    )


def _checkpoint_env(job: JobRef, spec: api.JobSpec, pod_spec: dict[str, Any], first: dict[str, Any]) -> list:
    """PACELINE_CHECKPOINT_DIR: the claim's mount (mounted here), else a directory carrying the job's uid."""
    claim = spec.checkpoint.claim(job.name)
    if claim is None:
        root = f"{api.DEFAULT_CHECKPOINT_ROOT}/{job.namespace}/{job.name}"
        return [_env(Env.CHECKPOINT_DIR, f"{root}/{job.uid}")]
    pod_spec.setdefault("volumes", []).append(
        {"name": api.CHECKPOINT_VOLUME, "persistentVolumeClaim": {"claimName": claim}}
    )
    first.setdefault("volumeMounts", []).append(
        {"name": api.CHECKPOINT_VOLUME, "mountPath": api.CHECKPOINT_MOUNT}
    )
    return [_env(Env.CHECKPOINT_DIR, f"{api.CHECKPOINT_MOUNT}/{job.name}")]


def build_rl_pod(job: JobRef, *, spec: api.JobSpec, role: str, index: int) -> dict[str, Any]:
    """One reinforcement learner (`role` learner: GPUs per spec.reinforcement.learners.gpus, checkpoints) or
    actor (CPU only, preferring nodes without GPUs): the template's image running the RL entry point."""
    rl = spec.reinforcement
    if rl is None:
        raise ValueError("build_rl_pod needs a Reinforcement spec")
    learner = role == "learner"
    name = api.learner_pod_name(job.name, index) if learner else api.actor_pod_name(job.name, index)
    pod = _pod(
        job,
        spec=spec,
        name=name,
        role_labels={api.LABEL_ROLE: role, api.LABEL_RANK: str(index)},
        plan_hash=spec.plan_hash(),
    )
    pod_spec = pod["spec"]
    first = dict(pod_spec["containers"][0])
    resources = copy.deepcopy(first.get("resources") or {})
    for kind in ("limits", "requests"):
        (resources.get(kind) or {}).pop(api.GPU_RESOURCE, None)
    if learner and rl.learner_gpus:
        resources.setdefault("limits", {})[api.GPU_RESOURCE] = str(rl.learner_gpus)
        resources.setdefault("requests", {})[api.GPU_RESOURCE] = str(rl.learner_gpus)
    if not learner:  # actors step environments on CPUs: a node without GPUs when there is one
        for key in ("prometheus.io/scrape", "prometheus.io/port"):  # and serve no HTTP
            pod["metadata"]["annotations"].pop(key, None)
        no_gpu = {"key": api.GPU_PRODUCT_LABEL, "operator": "DoesNotExist"}
        preferred = {"weight": 100, "preference": {"matchExpressions": [no_gpu]}}
        node_affinity = pod_spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
        node_affinity.setdefault("preferredDuringSchedulingIgnoredDuringExecution", []).append(preferred)
    container: dict[str, Any] = {
        "name": role,
        "image": first["image"],
        "command": list(api.RL_ENTRYPOINT),
        "ports": [{"name": "pl-metrics", "containerPort": api.METRICS_PORT}] if learner else [],
        **({"resources": resources} if resources else {}),
        **({"workingDir": first["workingDir"]} if "workingDir" in first else {}),
    }
    ours = [
        _env(Env.JOB, job.name),
        _env(Env.NAMESPACE, job.namespace),
        _env(Env.MODE, str(spec.mode)),
        _env(Env.ROLE, role),
        _env(Env.RL_INDEX, str(index)),
        _env(Env.RL_SETTINGS, rl.rl.to_json()),
        _env(Env.RL_LEARNERS, rl_learner_addresses(job, rl.rl.learners)),
        _env(Env.METRICS_PORT, str(api.METRICS_PORT)),
        _env(Env.CHECKPOINT_INTERVAL_STEPS, str(spec.checkpoint.interval_steps)),
        _field_env(Env.POD_IP, "status.podIP"),
        _field_env(Env.POD_NAME, "metadata.name"),
    ]
    if learner:
        ours += _checkpoint_env(job, spec, pod_spec, container)
    ours += _mount_token(job, pod_spec, container)  # actors bear it on every batch they send
    user = [e for e in first.get("env") or [] if not e["name"].startswith("PACELINE_")]
    container["env"] = _merge_env(user, ours, [])
    pod_spec["containers"] = [container]
    harden(pod_spec)
    return pod
