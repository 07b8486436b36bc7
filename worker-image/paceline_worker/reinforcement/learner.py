"""The learner: takes trajectory batches from its actors, trains rounds, publishes each new policy version.

Relaxed: trains whenever its buffer holds usable data (never waits for a fresh batch) and averages with peer
learners without waiting for them. Strict: each round waits for a fresh batch from every actor of the current
version, and averaging waits for every peer to reach the same round.
HTTP: PUT /rl/trajectories, GET /rl/policy, GET /rl/peer, GET /status, /metrics, /healthz.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import torch
from torch import nn

from ..checkpoint import load_checkpoint, save_checkpoint
from ..control_auth import ControlAuth
from ..http_server import HttpEndpoint, Response, Routes, common_routes
from ..rl_settings import Algorithm, RlSettings
from ..signals import StopRequest
from ..wire import Route
from .exchange import NPZ, LearnerClient, LearnerGone
from .lag import LagHistogram
from .models import average_state, encode_parameters
from .returns import ReturnWindow, StopReason, stop_reason
from .rl_metrics import LearnerMetrics
from .segment import SegmentError, decode_segment

log = logging.getLogger("paceline_worker.reinforcement.learner")

MAX_BATCH_BYTES = 16 * 1024 * 1024
SNAPSHOTS_KEPT = 4
ACTOR_TIMEOUT_S = 30.0  # an actor silent this long no longer holds up strict rounds


class Trainer(Protocol):
    """What a learner needs from an algorithm (ppo.PpoTrainer, dqn.DqnTrainer)."""

    @property
    def model(self) -> nn.Module: ...

    def ingest(self, segment: Any) -> int: ...
    def can_train(
        self, *, version: int, relaxed: bool, lags: LagHistogram, actors: frozenset[int]
    ) -> bool: ...
    def select(self, *, version: int, relaxed: bool, lags: LagHistogram) -> Any: ...
    def train(self, selection: Any) -> int: ...
    def policy_meta(self, env_steps: int) -> dict[str, float]: ...
    def state(self) -> dict[str, Any]: ...
    def restore(self, state: dict[str, Any]) -> None: ...


def env_shape(env_id: str) -> tuple[int, int]:
    """(observation size, number of actions) of a Gymnasium environment with a Box observation and
    Discrete actions."""
    env = gym.make(env_id)
    try:
        obs_shape = env.observation_space.shape
        n_actions = getattr(env.action_space, "n", None)
        if obs_shape is None or len(obs_shape) != 1 or n_actions is None:
            raise ValueError(f"{env_id}: needs a flat Box observation and Discrete actions")
        return int(obs_shape[0]), int(n_actions)
    finally:
        env.close()


def learner_device() -> str:
    """The learner's GPU when torch sees one (learners.gpus > 0 on a GPU node), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def make_trainer(settings: RlSettings, *, seed: int, device: str = "cpu") -> Trainer:
    obs_dim, n_actions = env_shape(settings.env)
    trainer: Callable[..., Trainer]
    if settings.algorithm is Algorithm.PPO:
        from .ppo import PpoTrainer

        trainer = PpoTrainer
    else:
        from .dqn import DqnTrainer

        trainer = DqnTrainer
    return trainer(
        obs_dim=obs_dim,
        n_actions=n_actions,
        max_lag=settings.max_policy_lag,
        round_samples=settings.round_samples,
        seed=seed,
        device=device,
    )


@dataclass(frozen=True, kw_only=True)
class LearnerConfig:
    settings: RlSettings
    index: int
    learners: tuple[str, ...]  # host:port of every learner; this one's entry gives its port
    bind_address: str
    job: str
    checkpoint_dir: Path | None
    checkpoint_every_rounds: int = 50
    linger_s: float = 3.0  # after stopping: keep answering so actors learn that the job is done

    @property
    def port(self) -> int:
        return int(self.learners[self.index].rpartition(":")[2])


class Learner:
    def __init__(self, config: LearnerConfig, *, stop: StopRequest | None = None) -> None:
        torch.set_num_threads(1)
        self.config = config
        self.settings = config.settings
        self.stop = stop or StopRequest()
        self.device = learner_device()
        self.trainer = make_trainer(
            self.settings, seed=self.settings.seed * 100 + config.index, device=self.device
        )
        self.metrics = LearnerMetrics(job=config.job, learner=config.index)
        self.lags = LagHistogram()
        self.window = ReturnWindow(self.settings.return_episodes)
        self.version = 0
        self.rounds = 0
        self.updates = 0
        self.env_steps = 0
        self.batches = 0
        self.evicted = 0  # samples pushed out of the buffer before any round used them
        self.train_s = 0.0  # profile: time in training rounds
        self.wait_s = 0.0  # profile: time waiting for usable (relaxed) or fresh (strict) data
        self.done: StopReason | None = None
        self.reached_after_s: float | None = None
        self._started = time.monotonic()
        self._elapsed_before = 0.0  # training time before a resume
        self._cond = threading.Condition()
        self._closing = False
        self._actor_seen: dict[int, float] = {}  # actor index → when its last batch came
        self._stopped_after: float | None = None  # the training clock, frozen when the learner stops
        self._published = b""
        self._snapshots: dict[int, bytes] = {}
        self._peers = [
            LearnerClient(address, retry_s=10.0)
            for i, address in enumerate(config.learners)
            if i != config.index
        ]
        auth = ControlAuth.from_env(on_refused=self.metrics.refused, who="learner")
        self._endpoint = HttpEndpoint(
            self._routes(),
            host=config.bind_address,
            port=config.port,
            auth=auth,
            max_body_bytes=MAX_BATCH_BYTES,
        )

    # ---- HTTP ------------------------------------------------------------------------------------------
    def _routes(self) -> Routes:
        return {
            **common_routes(self.metrics.registry, self.status),
            ("PUT", Route.RL_TRAJECTORIES): self._put_trajectories,
            ("GET", Route.RL_POLICY): self._get_policy,
            ("GET", Route.RL_PEER): self._get_peer,
        }

    def _put_trajectories(self, query: dict[str, str], body: bytes) -> Response:
        try:
            segment = decode_segment(body)
        except SegmentError as exc:
            return Response.json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        with self._cond:
            # stopping after SIGTERM: 503 makes the actor retry until the learner is back
            if self._closing and self.done is None:
                return Response.json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "learner is stopping"})
            if self.done is None:
                if self.batches == 0 and self._elapsed_before == 0.0:
                    self._started = time.monotonic()  # the training clock starts with the first batch
                self._actor_seen[segment.actor] = time.monotonic()
                self.evicted += self.trainer.ingest(segment)
                self.env_steps += segment.samples
                self.batches += 1
                self.window.extend(segment.episode_returns.tolist())
                self._check_stop()
                self.metrics.env_steps.inc(segment.samples)
                self._cond.notify_all()
            reply = {"version": self.version, "done": self.done is not None}
        return Response.json(HTTPStatus.ACCEPTED, reply)

    def _get_policy(self, query: dict[str, str], body: bytes) -> Response:
        after = int(query.get("after", "-1"))
        wait = min(float(query.get("wait", "0")), 300.0)
        with self._cond:
            self._cond.wait_for(lambda: self.version > after or self.done is not None, timeout=wait)
            if self.version > after:
                return Response(status=HTTPStatus.OK, body=self._published, content_type=NPZ)
            return Response.json(HTTPStatus.OK, {"version": self.version, "done": self.done is not None})

    def _get_peer(self, query: dict[str, str], body: bytes) -> Response:
        wanted = int(query.get("round", "-1"))
        wait = min(float(query.get("wait", "0")), 300.0)
        with self._cond:
            self._cond.wait_for(
                lambda: (
                    (wanted in self._snapshots if wanted >= 0 else bool(self._snapshots))
                    or self.done is not None
                ),
                timeout=wait,
            )
            key = wanted if wanted >= 0 else max(self._snapshots, default=-1)
            if key in self._snapshots:
                return Response(status=HTTPStatus.OK, body=self._snapshots[key], content_type=NPZ)
            return Response.json(HTTPStatus.OK, {"version": self.version, "done": self.done is not None})

    # ---- state -----------------------------------------------------------------------------------------
    @property
    def elapsed_s(self) -> float:
        """Training time: from the first batch (plus the time before a resume) until the job stopped."""
        if self._stopped_after is not None:
            return self._stopped_after
        return self._elapsed_before + time.monotonic() - self._started

    def _check_stop(self) -> None:
        reason = stop_reason(
            self.window,
            target_return=self.settings.target_return,
            env_steps=self.env_steps,
            max_env_steps=self.settings.max_env_steps,
        )
        if reason is not None and self.done is None:
            self._stopped_after = self.elapsed_s  # rates and profile cover training, not the linger after it
            self.done = reason
            if reason is StopReason.TARGET_RETURN:
                self.reached_after_s = self.elapsed_s
            log.info("stopping: %s after %d env steps, %.1fs", reason.value, self.env_steps, self.elapsed_s)
            self._publish()

    def live_actors(self) -> frozenset[int]:
        """Actors that sent a batch in the last ACTOR_TIMEOUT_S: a strict round waits for each of them, so an
        actor that joins counts from its first batch and one that is gone stops counting after the timeout."""
        now = time.monotonic()
        return frozenset(a for a, seen in self._actor_seen.items() if now - seen < ACTOR_TIMEOUT_S)

    def _publish(self) -> None:
        meta = {**self.trainer.policy_meta(self.env_steps), "done": float(self.done is not None)}
        self._published = encode_parameters(self.trainer.model, version=self.version, meta=meta)
        self.metrics.version.set(self.version)

    def status(self) -> dict[str, Any]:
        with self._cond:
            elapsed = max(self.elapsed_s, 1e-9)
            mean = self.window.mean
            return {
                "role": "learner",
                "index": self.config.index,
                "algorithm": self.settings.algorithm.value,
                "device": self.device,
                "dependencies": self.settings.dependencies.value,
                "relaxedDependencies": self.settings.relaxed_dependencies(),
                "version": self.version,
                "rounds": self.rounds,
                "updates": self.updates,
                "envSteps": self.env_steps,
                "batches": self.batches,
                "liveActors": len(self.live_actors()),
                "evictedSamples": self.evicted,
                "episodes": self.window.episodes_seen,
                "elapsedSeconds": round(elapsed, 3),
                "envStepsPerSecond": round(self.env_steps / elapsed, 2),
                "updatesPerSecond": round(self.updates / elapsed, 2),
                "meanReturn": None if mean is None else round(mean, 2),
                "lastReturn": self.window.last,
                "bestReturn": None if self.window.best is None else round(self.window.best, 2),
                "policyLag": self.lags.to_json_dict(),
                "done": self.done is not None,
                "stopReason": None if self.done is None else self.done.value,
                "reachedAfterSeconds": self.reached_after_s,
                "profile": {"trainSeconds": round(self.train_s, 3), "waitSeconds": round(self.wait_s, 3)},
            }

    # ---- checkpoint -------------------------------------------------------------------------------------
    def _checkpoint(self) -> None:
        directory = self.config.checkpoint_dir
        if directory is None:
            return
        with self._cond:
            state = {
                "trainer": self.trainer.state(),
                "step": self.rounds,
                "version": self.version,
                "updates": self.updates,
                "envSteps": self.env_steps,
                "returns": self.window.values(),
                "episodes": self.window.episodes_seen,
                "best": self.window.best,
                "lagCounts": dict(self.lags.counts),
                "dropped": self.lags.dropped,
                "elapsedSeconds": self.elapsed_s,
            }
        save_checkpoint(directory / f"learner-{self.config.index}", state)

    def _resume(self) -> None:
        if self.config.checkpoint_dir is None:
            return
        state = load_checkpoint(self.config.checkpoint_dir / f"learner-{self.config.index}")
        if state is None:
            return
        self.trainer.restore(state["trainer"])
        self.rounds, self.version = int(state["step"]), int(state["version"])
        self.updates, self.env_steps = int(state["updates"]), int(state["envSteps"])
        self.window = ReturnWindow(self.settings.return_episodes, state["returns"])
        self.window.episodes_seen = int(state["episodes"])
        self.window.best = state["best"]
        self.lags = LagHistogram(counts=dict(state["lagCounts"]), dropped=int(state["dropped"]))
        self._elapsed_before = float(state["elapsedSeconds"])
        log.info("resumed at round %d, version %d, %d env steps", self.rounds, self.version, self.env_steps)

    # ---- main loop -------------------------------------------------------------------------------------
    def run(self) -> StopReason | None:
        """Train until the stopping rule or SIGTERM; returns the stop reason (None after SIGTERM)."""
        self._resume()
        with self._cond:
            self._publish()
        self._endpoint.start()
        host, port = self._endpoint.address
        log.info("learner %d serving on %s:%d, training on %s", self.config.index, host, port, self.device)
        self._started = time.monotonic()
        try:
            while not self.stop.requested:
                with self._cond:
                    waited = time.perf_counter()
                    ready = self._cond.wait_for(self._ready, timeout=0.5)
                    if self.batches and self._stopped_after is None:  # the profile covers the training clock
                        self.wait_s += time.perf_counter() - waited
                    if self.done is not None:
                        break
                    if not ready:
                        continue
                    dropped_before = self.lags.dropped
                    lag_samples_before = dict(self.lags.counts)
                    selection = self.trainer.select(
                        version=self.version, relaxed=self.settings.relaxed, lags=self.lags
                    )
                    self._observe_lag_metrics(lag_samples_before, dropped_before)
                trained = time.perf_counter()
                steps = self.trainer.train(selection)
                if self._stopped_after is None:
                    self.train_s += time.perf_counter() - trained
                if self._end_round(steps):
                    self._average()
                if (
                    self.config.checkpoint_every_rounds
                    and self.rounds % self.config.checkpoint_every_rounds == 0
                ):
                    self._checkpoint()
        finally:
            with self._cond:
                self._closing = True  # take no more batches: the checkpoint holds everything counted
                if self._stopped_after is None:
                    self._stopped_after = self.elapsed_s
            self._checkpoint()
            with self._cond:
                self._cond.notify_all()
            if self.done is not None:
                time.sleep(self.config.linger_s)
            self._endpoint.stop()
        return self.done

    def _ready(self) -> bool:
        return (
            self.stop.requested
            or self.done is not None
            or self.trainer.can_train(
                version=self.version, relaxed=self.settings.relaxed, lags=self.lags, actors=self.live_actors()
            )
        )

    def _observe_lag_metrics(self, before: dict[int, int], dropped_before: int) -> None:
        for lag, count in self.lags.counts.items():
            if count > before.get(lag, 0):  # one observation per lag present in the round
                self.metrics.lag.observe(lag)
        self.metrics.dropped.inc(self.lags.dropped - dropped_before)

    def _end_round(self, steps: int) -> bool:
        """Count the round and publish the new version; True when this round is an averaging round."""
        with self._cond:
            self.updates += steps
            self.rounds += 1
            self.version += 1
            self.metrics.updates.inc(steps)
            mean = self.window.mean
            if mean is not None:
                self.metrics.mean_return.set(mean)
                self.metrics.best_return.set(self.window.best or mean)
            averaging = bool(self._peers) and self.rounds % self.settings.average_every == 0
            if averaging:
                self._snapshots[self.rounds // self.settings.average_every] = encode_parameters(
                    self.trainer.model, version=self.version
                )
                for old in sorted(self._snapshots)[:-SNAPSHOTS_KEPT]:
                    del self._snapshots[old]
            else:
                self._publish()
            self._cond.notify_all()
        return averaging

    def _average(self) -> None:
        """Average the model with the peers' at this averaging round (strict: waits for each peer to get
        there; relaxed: takes each peer's latest snapshot, whatever its round)."""
        round_ = self.rounds // self.settings.average_every
        states = [{k: v.clone() for k, v in self.trainer.model.state_dict().items()}]
        for peer in self._peers:
            try:
                if self.settings.relaxed:
                    reply = peer.peer(round_=-1)
                else:
                    reply = peer.peer(round_=round_, wait_s=120.0)
            except LearnerGone as exc:
                log.warning("model averaging skips a peer: %s", exc)
                continue
            if reply.state is not None:
                states.append(reply.state)
        if len(states) > 1:
            self.trainer.model.load_state_dict(average_state(states))
        with self._cond:
            self._publish()
            self._cond.notify_all()
