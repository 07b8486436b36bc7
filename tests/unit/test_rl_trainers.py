"""Reinforcement mode: one learner round of each algorithm moves the policy the right way (CPU; the same code
runs on a GPU, see bench/rl_gpu_smoke.py)."""

from __future__ import annotations

import numpy as np
import torch

from paceline_worker.reinforcement.dqn import DqnHyperparameters, DqnTrainer
from paceline_worker.reinforcement.lag import LagHistogram
from paceline_worker.reinforcement.ppo import PpoTrainer
from paceline_worker.reinforcement.segment import Segment


def bandit_segment(version: int, rng: np.random.Generator, *, envs: int = 8, steps: int = 32) -> Segment:
    """A one-step task: action 1 pays 1, action 0 pays 0; every step ends its episode. Actions uniform."""
    shape = (envs, steps)
    actions = rng.integers(0, 2, size=shape)
    obs = np.ones((*shape, 2), np.float32)
    return Segment(
        actor=0,
        version=version,
        obs=obs,
        actions=actions,
        rewards=actions.astype(np.float32),
        next_obs=obs,
        terminated=np.ones(shape, bool),
        truncated=np.zeros(shape, bool),
        logp=np.full(shape, np.log(0.5), np.float32),
        episode_returns=actions.reshape(-1).astype(np.float32),
    )


def test_ppo_rounds_raise_the_probability_of_the_paying_action() -> None:
    rng = np.random.default_rng(0)
    trainer = PpoTrainer(obs_dim=2, n_actions=2, max_lag=2, round_samples=256, seed=0)
    lags = LagHistogram()
    obs = torch.ones(1, 2)
    before = torch.softmax(trainer.model.logits(obs), dim=1)[0, 1].item()
    for version in range(5):
        trainer.ingest(bandit_segment(version, rng))
        assert trainer.can_train(version=version, relaxed=False, lags=lags, actors=frozenset({0}))
        assert trainer.train(trainer.select(version=version, relaxed=False, lags=lags)) == 16  # 4 epochs × 4
    trainer.ingest(bandit_segment(5, rng))  # actor 0's batch; actor 1 is live too: a strict round waits
    assert not trainer.can_train(version=5, relaxed=False, lags=lags, actors=frozenset({0, 1}))
    assert trainer.can_train(version=5, relaxed=False, lags=lags, actors=frozenset({0}))
    after = torch.softmax(trainer.model.logits(obs), dim=1)[0, 1].item()
    assert after > before + 0.2
    assert lags.counts == {0: 5 * 256}


def test_dqn_rounds_learn_the_paying_actions_value() -> None:
    rng = np.random.default_rng(1)
    hyper = DqnHyperparameters(warmup_samples=256, updates_per_sample=0.25)
    trainer = DqnTrainer(obs_dim=2, n_actions=2, max_lag=1000, round_samples=256, seed=0, hyper=hyper)
    lags = LagHistogram()
    steps = 0
    for version in range(8):
        trainer.ingest(bandit_segment(version, rng))
        assert trainer.can_train(version=version, relaxed=True, lags=lags, actors=frozenset({0}))
        steps += trainer.train(trainer.select(version=version, relaxed=True, lags=lags))
    q = trainer.model.logits(torch.ones(1, 2))[0]
    assert steps == 8 * 64
    assert abs(q[1].item() - 1.0) < 0.2 and abs(q[0].item()) < 0.2  # terminal steps: Q = reward
    assert trainer.policy_meta(env_steps=5_000)["epsilon"] < 1.0
