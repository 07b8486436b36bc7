"""Reinforcement mode (TianJi-style relaxed dependencies): actors and learners as separate processes.

    PACELINE_ROLE=learner PACELINE_RL='{"algorithm":"PPO"}' PACELINE_RL_LEARNERS=127.0.0.1:9500 \\
        python -m paceline_worker.reinforcement
    PACELINE_ROLE=actor PACELINE_RL_INDEX=0 (same PACELINE_RL, PACELINE_RL_LEARNERS) python -m ...

Torch-free on import: the settings live in `paceline_worker.rl_settings` (the operator imports them).
"""
