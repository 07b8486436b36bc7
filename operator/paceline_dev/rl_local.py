"""Run a reinforcement job as local processes (learners and actors on loopback): for tests and bench/rl.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paceline_dev.control_token import control_token_file
from paceline_worker.rl_settings import RlSettings
from paceline_worker.wire import Env

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalRlJob:
    """Learner and actor processes of one job; `wait()` returns each learner's final status."""

    settings: RlSettings
    log_dir: Path
    checkpoint_dir: Path | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    learners: list[subprocess.Popen[bytes]] = field(default_factory=list)
    actors: list[subprocess.Popen[bytes]] = field(default_factory=list)
    addresses: tuple[str, ...] = ()

    def _env(self, role: str, index: int) -> dict[str, str]:
        root = Path(__file__).resolve().parents[2]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PACELINE_")},
            "PYTHONPATH": os.pathsep.join([str(root / "worker-image"), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1",
            Env.ROLE: role,
            Env.RL_INDEX: str(index),
            Env.RL_SETTINGS: self.settings.to_json(),
            Env.RL_LEARNERS: ",".join(self.addresses),
            "PACELINE_TERMINATION_LOG": str(self.log_dir / f"{role}-{index}.termination"),
            Env.TOKEN_FILE: str(control_token_file(self.log_dir)),  # actors' batches bear the job's token
            **self.extra_env,
        }
        if self.checkpoint_dir is not None:
            env[Env.CHECKPOINT_DIR] = str(self.checkpoint_dir)
        return env

    def _spawn(self, role: str, index: int) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = (self.log_dir / f"{role}-{index}.out").open("ab")
        err = (self.log_dir / f"{role}-{index}.log").open("ab")
        command = [sys.executable, "-m", "paceline_worker.reinforcement"]
        return subprocess.Popen(command, env=self._env(role, index), stdout=out, stderr=err)

    def start(self) -> LocalRlJob:
        if not self.addresses:
            self.addresses = tuple(f"{LOOPBACK}:{free_port()}" for _ in range(self.settings.learners))
        self.learners = [self._spawn("learner", i) for i in range(self.settings.learners)]
        self.actors = [self._spawn("actor", i) for i in range(self.settings.actors)]
        return self

    def restart_actor(self, index: int) -> None:
        self.actors[index] = self._spawn("actor", index)

    def restart_learner(self, index: int) -> None:
        self.learners[index] = self._spawn("learner", index)

    def final_line(self, role: str, index: int) -> dict[str, Any]:
        """The JSON summary a learner or actor prints when it exits ({} when it printed none)."""
        lines = (self.log_dir / f"{role}-{index}.out").read_text().strip().splitlines()
        summary: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        return summary

    def learner_status(self, index: int) -> dict[str, Any]:
        return self.final_line("learner", index)

    def wait(self, timeout_s: float) -> list[dict[str, Any]]:
        """Wait for every learner to exit (then for the actors); stops everything left at the deadline."""
        deadline = time.monotonic() + timeout_s
        try:
            for process in self.learners:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
            for process in self.actors:
                process.wait(timeout=max(1.0, min(60.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            self.terminate()
        return [self.learner_status(i) for i in range(len(self.learners))]

    def terminate(self) -> None:
        """SIGTERM every process still running (each exits at its next boundary), then SIGKILL stragglers."""
        processes = [*self.actors, *self.learners]
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
