"""Prometheus metrics of a learner (names prefixed paceline_rl_; labels trainingjob, learner)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..metrics import refusal_counter
from ..wire import Label, RlMetric

LAG_BUCKETS = (*range(9), 12, 16, 32, 64, 128, 256, 1024)


class LearnerMetrics:
    def __init__(self, *, job: str, learner: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {Label.JOB.value: job, "learner": str(learner)}
        names = list(labels)
        r = self.registry
        self.env_steps = Counter(RlMetric.ENV_STEPS, "Environment steps received", names, registry=r).labels(
            **labels
        )
        self.updates = Counter(RlMetric.UPDATES, "Learner gradient steps", names, registry=r).labels(**labels)
        self.version = Gauge(RlMetric.POLICY_VERSION, "Published policy version", names, registry=r).labels(
            **labels
        )
        self.mean_return = Gauge(
            RlMetric.MEAN_RETURN, "Mean return over the stopping rule's last N episodes", names, registry=r
        ).labels(**labels)
        self.best_return = Gauge(RlMetric.BEST_RETURN, "Best mean return so far", names, registry=r).labels(
            **labels
        )
        self.lag = Histogram(
            RlMetric.POLICY_LAG,
            "Policy lags trained on, one observation per distinct lag per round (status counts samples)",
            names,
            buckets=[float(b) for b in LAG_BUCKETS],
            registry=r,
        ).labels(**labels)
        self.refused = refusal_counter(r, RlMetric.REFUSED_WRITES, labels)
        self.dropped = Counter(
            RlMetric.DROPPED_SAMPLES, "Samples dropped for exceeding maxPolicyLag", names, registry=r
        ).labels(**labels)
