"""The actor: steps `envsPerActor` environments with the newest policy it has and ships trajectory batches.

Relaxed: batches go out through a sender thread (the actor never waits for the learner to take them) and a
poller thread long-polls for newer parameters (newest wins; the actor switches between batches, so that each
batch comes from one policy version). Strict: the
actor sends each batch itself and then waits for the next policy version before stepping on.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ..rl_settings import Algorithm, RlSettings
from ..signals import StopRequest
from .exchange import LearnerClient, LearnerGone, PolicyReply
from .learner import env_shape
from .models import ActorCritic, QNetwork, epsilon_greedy, sample_actions
from .segment import Segment

log = logging.getLogger("paceline_worker.reinforcement.actor")

SEND_QUEUE = 4  # relaxed: batches waiting for the sender; when full the oldest is dropped
POLL_WAIT_S = 2.0


@dataclass(frozen=True, kw_only=True)
class ActorConfig:
    settings: RlSettings
    index: int
    learner: str  # host:port of this actor's learner (actor i → learner i mod learners)
    connect_timeout_s: float = 300.0


@dataclass
class ActorStats:
    env_steps: int = 0
    batches_sent: int = 0
    batches_dropped: int = 0  # relaxed: dropped from a full send queue
    policy_switches: int = 0
    episodes: int = 0
    env_s: float = 0.0  # profile: stepping environments
    policy_s: float = 0.0  # profile: choosing actions
    exchange_s: float = 0.0  # profile: sending batches and waiting for policies on the actor's own thread


class Actor:
    def __init__(self, config: ActorConfig, *, stop: StopRequest | None = None) -> None:
        torch.set_num_threads(1)
        self.config = config
        self.settings = config.settings
        self.stop = stop or StopRequest()
        self.client = LearnerClient(config.learner, retry_s=config.connect_timeout_s)
        obs_dim, n_actions = env_shape(self.settings.env)
        self.model: nn.Module = (
            ActorCritic(obs_dim, n_actions)
            if self.settings.algorithm is Algorithm.PPO
            else QNetwork(obs_dim, n_actions)
        )
        self.version = -1
        self.epsilon = 1.0
        self.done = False
        self.stats = ActorStats()
        n = self.settings.envs_per_actor
        base_seed = self.settings.seed * 100_000 + config.index * n
        self.envs = [gym.make(self.settings.env) for _ in range(n)]
        self.obs = np.stack([env.reset(seed=base_seed + i)[0] for i, env in enumerate(self.envs)]).astype(
            np.float32
        )
        self.episode_return = np.zeros(n, np.float64)
        self.rng = np.random.default_rng(base_seed)
        self._newest: PolicyReply | None = None
        self._newest_lock = threading.Lock()
        self._fresh = threading.Event()  # the poller got a newer policy
        self._outbox: queue.Queue[Segment | None] = queue.Queue(maxsize=SEND_QUEUE)
        self._failure: BaseException | None = None

    # ---- policy --------------------------------------------------------------------------------------
    def _adopt(self, reply: PolicyReply) -> None:
        if reply.done:
            self.done = True
        if reply.state is not None and reply.version > self.version:
            self.model.load_state_dict(reply.state)
            self.version = reply.version
            self.epsilon = reply.meta.get("epsilon", self.epsilon)
            self.stats.policy_switches += 1

    def _stopping(self) -> bool:
        return self.done or self.stop.requested or self._failure is not None

    def _take_newest(self) -> None:
        with self._newest_lock:
            reply, self._newest = self._newest, None
        if reply is not None:
            self._adopt(reply)

    def _poll(self) -> None:
        """Relaxed: keep the newest policy in one slot (an older one there is replaced, never queued)."""
        after = self.version
        try:
            while not self.done and not self.stop.requested:
                reply = self.client.policy(after=after, wait_s=POLL_WAIT_S)
                if reply.done:
                    self.done = True
                if reply.state is not None:
                    after = reply.version
                    with self._newest_lock:
                        self._newest = reply
                    self._fresh.set()
        except (LearnerGone, OSError) as exc:
            self._failure = exc

    def _send(self) -> None:
        """Relaxed: ship queued batches; the learner's reply may say the job is done."""
        try:
            while True:
                segment = self._outbox.get()
                if segment is None:
                    return
                reply = self.client.push(segment)
                self.stats.batches_sent += 1
                if reply.done:
                    self.done = True
        except (LearnerGone, OSError) as exc:
            self._failure = exc
            self.done = True

    def _enqueue(self, segment: Segment) -> None:
        while True:
            try:
                self._outbox.put_nowait(segment)
                return
            except queue.Full:
                try:
                    self._outbox.get_nowait()
                    self.stats.batches_dropped += 1
                except queue.Empty:
                    pass

    # ---- stepping ------------------------------------------------------------------------------------
    def _act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            out = self.model.logits(torch.from_numpy(obs)).numpy()  # type: ignore[operator]
        if self.settings.algorithm is Algorithm.PPO:
            return sample_actions(out, self.rng)
        return epsilon_greedy(out, self.epsilon, self.rng)

    def collect(self) -> Segment:
        """`exchangeSteps` steps of every environment under the current policy version."""
        n, steps = self.settings.envs_per_actor, self.settings.exchange_steps
        dim = self.obs.shape[1]
        obs = np.zeros((n, steps, dim), np.float32)
        next_obs = np.zeros((n, steps, dim), np.float32)
        actions = np.zeros((n, steps), np.int64)
        rewards = np.zeros((n, steps), np.float32)
        terminated = np.zeros((n, steps), bool)
        truncated = np.zeros((n, steps), bool)
        logp = np.zeros((n, steps), np.float32)
        finished: list[float] = []
        version = self.version
        for t in range(steps):
            obs[:, t] = self.obs
            started = time.perf_counter()
            actions[:, t], logp[:, t] = self._act(self.obs)
            stepped = time.perf_counter()
            self.stats.policy_s += stepped - started
            for i, env in enumerate(self.envs):
                nxt, reward, term, trunc, _ = env.step(int(actions[i, t]))
                rewards[i, t], terminated[i, t], truncated[i, t] = reward, term, trunc
                next_obs[i, t] = nxt
                self.episode_return[i] += float(reward)
                if term or trunc:
                    finished.append(float(self.episode_return[i]))
                    self.episode_return[i] = 0.0
                    nxt, _ = env.reset()
                self.obs[i] = nxt
            self.stats.env_s += time.perf_counter() - stepped
        self.stats.env_steps += n * steps
        self.stats.episodes += len(finished)
        return Segment(
            actor=self.config.index,
            version=version,
            obs=obs,
            actions=actions,
            rewards=rewards,
            next_obs=next_obs,
            terminated=terminated,
            truncated=truncated,
            logp=logp,
            episode_returns=np.asarray(finished, np.float32),
        )

    def run(self) -> ActorStats:
        """Step until the learner says done or SIGTERM; raises LearnerGone when the learner stays away."""
        self._adopt(self.client.policy(after=-1, wait_s=POLL_WAIT_S))
        while self.version < 0 and not self.done and not self.stop.requested:
            self._adopt(self.client.policy(after=-1, wait_s=POLL_WAIT_S))
        if self.settings.relaxed:
            self._run_relaxed()
        else:
            self._run_strict()
        if self._failure is not None and not self.done:
            raise LearnerGone(str(self._failure))
        return self.stats

    def _run_strict(self) -> None:
        while not self.done and not self.stop.requested:
            segment = self.collect()
            started = time.perf_counter()
            reply = self.client.push(segment)
            self.stats.batches_sent += 1
            if reply.done:
                self.done = True
                break
            while not self.done and not self.stop.requested:  # the lock-step wait for the next policy
                before = self.version
                self._adopt(self.client.policy(after=before, wait_s=POLL_WAIT_S))
                if self.version > before:
                    break
            self.stats.exchange_s += time.perf_counter() - started

    def _run_relaxed(self) -> None:
        poller = threading.Thread(target=self._poll, name="rl-policy-poller", daemon=True)
        sender = threading.Thread(target=self._send, name="rl-batch-sender", daemon=True)
        poller.start()
        sender.start()
        shipped: dict[int, int] = {}  # batches shipped per policy version (the run-ahead bound)
        ahead = self.settings.actor_run_ahead
        try:
            while not self.done and not self.stop.requested and self._failure is None:
                segment = self.collect()
                started = time.perf_counter()
                self._enqueue(segment)
                shipped[segment.version] = shipped.get(segment.version, 0) + 1
                self._take_newest()
                while ahead and shipped.get(self.version, 0) >= ahead and not self._stopping():
                    self._fresh.wait(timeout=0.5)  # ran ahead of the learner: wait for a newer policy
                    self._fresh.clear()
                    self._take_newest()
                self.stats.exchange_s += time.perf_counter() - started
        finally:
            self._enqueue_end()
            sender.join(timeout=10)

    def _enqueue_end(self) -> None:
        """Tell the sender to finish after the queued batches (dropping the oldest if the queue is full)."""
        while True:
            try:
                self._outbox.put_nowait(None)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._outbox.get_nowait()
