"""PPO on trajectory batches from possibly older policies: GAE with the learner's current critic, and the
clipped ratio taken against the behaviour policy's log-probability, which is the importance-weight correction
for the lag the drop rule allows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .buffers import SegmentBuffer, observe_lags
from .lag import LagHistogram
from .models import ActorCritic
from .segment import FloatArray, Segment


@dataclass(frozen=True, kw_only=True)
class PpoHyperparameters:
    learning_rate: float = 1e-3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    epochs: int = 4
    minibatches: int = 4
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5


def gae(
    *,
    rewards: FloatArray,
    values: FloatArray,
    next_values: FloatArray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[FloatArray, FloatArray]:
    """Generalised advantage estimates and value targets for (envs, steps) arrays.

    A terminated step has no bootstrap; a truncated one bootstraps from its own next observation's value;
    either ends the recursion, and so does the batch's last step (bootstrapped from next_values)."""
    nonterminal = 1.0 - terminated.astype(np.float32)
    continues = nonterminal * (1.0 - truncated.astype(np.float32))
    deltas = rewards + gamma * next_values * nonterminal - values
    advantages = np.zeros_like(rewards, dtype=np.float32)
    running = np.zeros(rewards.shape[0], np.float32)
    for t in reversed(range(rewards.shape[1])):
        running = (deltas[:, t] + gamma * lam * continues[:, t] * running).astype(np.float32)
        advantages[:, t] = running
    return advantages, (advantages + values).astype(np.float32)


class PpoTrainer:
    def __init__(
        self,
        *,
        obs_dim: int,
        n_actions: int,
        max_lag: int,
        round_samples: int,
        seed: int,
        hyper: PpoHyperparameters | None = None,
        device: str = "cpu",
    ) -> None:
        torch.manual_seed(seed)
        self.hyper = hyper or PpoHyperparameters()
        self.device = torch.device(device)
        self.model = ActorCritic(obs_dim, n_actions).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.hyper.learning_rate, eps=1e-5)
        self.round_samples = round_samples
        self.buffer = SegmentBuffer(max_lag=max_lag, capacity_samples=4 * round_samples)
        self._rng = np.random.default_rng(seed)

    def ingest(self, segment: Segment) -> int:
        """Buffer a batch; returns how many older samples it pushed out unused."""
        return self.buffer.add(segment)

    def can_train(self, *, version: int, relaxed: bool, lags: LagHistogram, actors: frozenset[int]) -> bool:
        """Relaxed: any usable batch. Strict: a batch of this version from every live actor."""
        if relaxed:
            self.buffer.drop_stale(version, lags)
            return self.buffer.samples > 0
        fresh = self.buffer.fresh_actors(version)
        return bool(fresh) and actors <= fresh

    def select(self, *, version: int, relaxed: bool, lags: LagHistogram) -> list[Segment]:
        """The round's data (under the learner's lock): the newest usable window, or the fresh batches."""
        if relaxed:
            segments = self.buffer.newest(version, limit_samples=self.round_samples)
        else:
            segments = self.buffer.take_fresh(version)
        observe_lags(segments, version, lags)
        return segments

    def train(self, segments: list[Segment]) -> int:
        """`epochs` passes of minibatch steps over the selected data; returns the number of steps."""
        if not segments:
            return 0
        obs, actions, old_logp, advantages, targets = self._prepare(segments)
        n = len(actions)
        size = max(1, n // self.hyper.minibatches)
        steps = 0
        for _ in range(self.hyper.epochs):
            order = torch.from_numpy(self._rng.permutation(n)).to(self.device)
            for start in range(0, n - size + 1, size):
                rows = order[start : start + size]
                self._step(obs[rows], actions[rows], old_logp[rows], advantages[rows], targets[rows])
                steps += 1
        return steps

    def _prepare(self, segments: list[Segment]) -> tuple[torch.Tensor, ...]:
        parts: list[tuple[Any, ...]] = []
        with torch.no_grad():
            for s in segments:
                envs, steps, dim = s.obs.shape
                values = self._values(s.obs.reshape(-1, dim)).reshape(envs, steps)
                next_values = self._values(s.next_obs.reshape(-1, dim)).reshape(envs, steps)
                adv, targets = gae(
                    rewards=s.rewards,
                    values=values,
                    next_values=next_values,
                    terminated=s.terminated,
                    truncated=s.truncated,
                    gamma=self.hyper.gamma,
                    lam=self.hyper.gae_lambda,
                )
                parts.append(
                    (
                        s.obs.reshape(-1, dim),
                        s.actions.reshape(-1),
                        s.logp.reshape(-1),
                        adv.reshape(-1),
                        targets.reshape(-1),
                    )
                )
        return tuple(
            torch.from_numpy(np.concatenate([p[i] for p in parts])).to(self.device) for i in range(5)
        )

    def _values(self, obs: FloatArray) -> FloatArray:
        values: FloatArray = self.model.value(torch.from_numpy(obs).to(self.device)).cpu().numpy()
        return values

    def _step(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        old_logp: torch.Tensor,
        advantages: torch.Tensor,
        targets: torch.Tensor,
    ) -> None:
        h = self.hyper
        log_probs = torch.log_softmax(self.model.logits(obs), dim=1)
        logp = log_probs.gather(1, actions.unsqueeze(1)).squeeze(1)
        adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        ratio = torch.exp(logp - old_logp)
        policy_loss = -torch.min(ratio * adv, ratio.clamp(1 - h.clip, 1 + h.clip) * adv).mean()
        value_loss = 0.5 * (self.model.value(obs).squeeze(1) - targets).pow(2).mean()
        entropy = -(log_probs.exp() * log_probs).sum(dim=1).mean()
        loss = policy_loss + h.value_coef * value_loss - h.entropy_coef * entropy
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), h.max_grad_norm)
        self.optimizer.step()

    def policy_meta(self, env_steps: int) -> dict[str, float]:
        return {}

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
