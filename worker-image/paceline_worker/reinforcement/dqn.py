"""DQN (double DQN, Huber loss) from a replay buffer; actors act epsilon-greedily with the epsilon the learner
publishes with each policy version. Off-policy: a large maxPolicyLag is fine; older samples are dropped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .buffers import ReplayBuffer
from .lag import LagHistogram
from .models import QNetwork
from .segment import Segment

Minibatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class DqnHyperparameters:
    learning_rate: float = 2.3e-3
    gamma: float = 0.99
    batch_size: int = 64
    updates_per_sample: float = 0.5  # a round makes round_samples × this gradient steps
    warmup_samples: int = 1000
    capacity: int = 100_000
    epsilon_start: float = 1.0
    epsilon_end: float = 0.04
    epsilon_decay_steps: int = 10_000
    max_grad_norm: float = 10.0


def epsilon_at(env_steps: int, hyper: DqnHyperparameters) -> float:
    """Linear decay from epsilon_start to epsilon_end over the first epsilon_decay_steps environment steps."""
    fraction = min(1.0, env_steps / max(1, hyper.epsilon_decay_steps))
    return hyper.epsilon_start + fraction * (hyper.epsilon_end - hyper.epsilon_start)


class DqnTrainer:
    def __init__(
        self,
        *,
        obs_dim: int,
        n_actions: int,
        max_lag: int,
        round_samples: int,
        seed: int,
        hyper: DqnHyperparameters | None = None,
        device: str = "cpu",
    ) -> None:
        torch.manual_seed(seed)
        self.hyper = hyper or DqnHyperparameters()
        self.device = torch.device(device)
        self.model = QNetwork(obs_dim, n_actions).to(self.device)
        self.target = QNetwork(obs_dim, n_actions).to(self.device)
        self.target.load_state_dict(self.model.state_dict())
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.hyper.learning_rate)
        self.max_lag = max_lag
        self.round_samples = round_samples
        self.replay = ReplayBuffer(capacity=self.hyper.capacity, obs_dim=obs_dim)
        self.updates = 0
        self._fresh: dict[int, frozenset[int]] = {}  # actors with a batch per version since the last round
        self._rng = np.random.default_rng(seed)

    def ingest(self, segment: Segment) -> int:
        overwritten = max(0, self.replay.size + segment.samples - self.replay.capacity)
        self.replay.add(segment)
        self._fresh[segment.version] = self._fresh.get(segment.version, frozenset()) | {segment.actor}
        return overwritten

    def can_train(self, *, version: int, relaxed: bool, lags: LagHistogram, actors: frozenset[int]) -> bool:
        """Relaxed: whenever the replay is warm, or a batch came in during warm-up (the round trains nothing
        but publishes a version, so actors bounded by actorRunAhead keep going). Strict: a batch of this
        version from every live actor."""
        if relaxed:
            return self.replay.size >= self.hyper.warmup_samples or bool(self._fresh)
        fresh = self._fresh.get(version, frozenset())
        return bool(fresh) and actors <= fresh

    def select(self, *, version: int, relaxed: bool, lags: LagHistogram) -> list[Minibatch]:
        """Minibatches drawn under the lock (strict rounds during warm-up train nothing but still advance)."""
        self._fresh = {v: n for v, n in self._fresh.items() if v > version} if not relaxed else {}
        if self.replay.size < self.hyper.warmup_samples:
            return []
        r = self.replay
        minibatches = []
        for _ in range(max(1, round(self.round_samples * self.hyper.updates_per_sample))):
            rows, row_lags, dropped = r.sample(
                self._rng, self.hyper.batch_size, learner_version=version, max_lag=self.max_lag
            )
            lags.drop(dropped)
            for lag, count in zip(*np.unique(row_lags, return_counts=True), strict=True):
                lags.observe(int(lag), int(count))
            if len(rows):
                minibatches.append(
                    (
                        torch.from_numpy(r.obs[rows]),
                        torch.from_numpy(r.actions[rows]),
                        torch.from_numpy(r.rewards[rows]),
                        torch.from_numpy(r.next_obs[rows]),
                        torch.from_numpy(r.dones[rows]),
                    )
                )
        return minibatches

    def train(self, minibatches: list[Minibatch]) -> int:
        """Gradient steps on the drawn minibatches against a target network synced at the round's start."""
        h = self.hyper
        if minibatches:
            self.target.load_state_dict(self.model.state_dict())
        for batch in minibatches:
            obs, actions, rewards, next_obs, dones = (t.to(self.device) for t in batch)
            with torch.no_grad():
                best = self.model.logits(next_obs).argmax(dim=1, keepdim=True)
                next_q = self.target.logits(next_obs).gather(1, best).squeeze(1)
                targets = rewards + h.gamma * (1.0 - dones) * next_q
            q = self.model.logits(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
            loss = nn.functional.smooth_l1_loss(q, targets)
            self.optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), h.max_grad_norm)
            self.optimizer.step()
            self.updates += 1
        return len(minibatches)

    def policy_meta(self, env_steps: int) -> dict[str, float]:
        return {"epsilon": epsilon_at(env_steps, self.hyper)}

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
