"""Condition types, CamelCase reasons and event reasons — the one place they are spelled."""

from enum import StrEnum


class ConditionType(StrEnum):
    """Conditions a TrainingJob reports (status.conditions, keyed by type)."""

    PLANNED = "Planned"
    PLACED = "Placed"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SCALING_OUT = "ScalingOut"  # asking the node autoscaler for GPUs (spec.elastic.provision)


class Reason(StrEnum):
    """Machine-readable reasons of conditions and events."""

    # Planned
    PLAN_COMPUTED = "PlanComputed"
    UNSCHEDULABLE = "Unschedulable"
    INVALID_MODEL = "InvalidModel"
    CHECKPOINT_VOLUME_MISSING = "CheckpointVolumeMissing"
    # Placed
    PODS_SCHEDULED = "PodsScheduled"
    PODS_PENDING = "PodsPending"
    # Running
    WORKERS_RUNNING = "WorkersRunning"
    WORKERS_STARTING = "WorkersStarting"
    WORKERS_STOPPED = "WorkersStopped"
    # Restarting
    WORKER_FAILED = "WorkerFailed"
    RESTARTED = "Restarted"
    NO_FAILURE = "NoFailure"
    # Succeeded / Failed
    ALL_WORKERS_SUCCEEDED = "AllWorkersSucceeded"
    TARGET_RETURN_REACHED = "TargetReturnReached"  # reinforcement: the stopping rule's target
    ENV_STEP_BUDGET_SPENT = "EnvStepBudgetSpent"  # reinforcement: the stopping rule's step budget
    LEARNER_FAILED = "LearnerFailed"
    ACTORS_REPLACED = "ActorsReplaced"
    INVALID_SPEC = "InvalidSpec"
    INVALID_POD_TEMPLATE = "InvalidPodTemplate"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    PERMANENT_FAILURE = "PermanentFailure"
    NOT_FINISHED = "NotFinished"
    SPEC_VALID = "SpecValid"
    # ScalingOut
    CAPACITY_REQUESTED = "CapacityRequested"
    AT_MAXIMUM = "AtMaximum"
    NOT_WORTH_IT = "NotWorthIt"
    BUDGET_TOO_SMALL = "BudgetTooSmall"
    NO_NODE_POOL = "NoNodePool"
    NO_CAPACITY_LEFT = "NoCapacityLeft"


class EventReason(StrEnum):
    """Reasons of the Kubernetes events Paceline emits for its decisions."""

    PLANNED = "Planned"
    PLACED = "Placed"
    UNSCHEDULABLE = "Unschedulable"
    INVALID_SPEC = "InvalidSpec"
    WORKER_FAILED = "WorkerFailed"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    REBALANCED = "Rebalanced"
    STRAGGLER_DETECTED = "StragglerDetected"
    MOMENTUM_RETUNED = "MomentumRetuned"
    RESIZED = "Resized"
    SCALE_OUT = "ScaleOut"
    CONTROL_RECREATED = "ControlRecreated"
    ACTORS_SCALED = "ActorsScaled"
