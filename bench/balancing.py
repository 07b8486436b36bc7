"""Balancing benchmark: Paceline's live batch shares vs plain DDP with equal shares, four simulated GPUs.

Run: .venv/bin/python bench/balancing.py [--quick] [--plot timeline.png]
     (progress on stderr; last stdout line: one JSON object; --plot draws the transient straggler's timeline)

Four worker processes (gloo on 127.0.0.1) with simulated relative speeds 1:1:2:4 train the digits CNN of
examples/train_digits.py on a global batch B. Everything runs in one invocation with the same model, data
and seed (docs/benchmarks.md has the details):

- solo: every worker alone on the whole batch B -> its capacity; ideal_sps = the sum of the capacities;
- static: plain torch DDP with equal shares vs Paceline, which starts from equal shares while this script
  plays the operator: scrape every rank's /metrics every second, FleetTracker + decide_rebalance, PUT the
  new shares to rank 0's /assignment;
- loss: the final full-dataset loss of both static runs (same samples), plus a plain-DDP run with another
  seed for the seed-to-seed noise;
- overhead: Paceline runtime vs plain torch DDP at the same fixed shares (alternating runs);
- propagation: PUT accepted on rank 0 -> every rank switched, from the workers' applied timestamps;
- transient: one worker becomes N times slower for a while (its PACELINE_SIM_SCHEDULE file is rewritten),
  plain DDP with equal shares vs Paceline starting from the static run's final shares, over the same
  wall-clock window.

--quick shortens every run and compresses the transient timeline fivefold together with the balancer's time
constants (straggler persistence, cooldown, estimator half-life); the full run uses the operator's defaults.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import paceline.balancer  # noqa: F401
except ImportError:  # not pip-installed yet: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

import argparse
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any, Protocol

import numpy as np

from paceline.adapters.workers import put_json, scrape_all
from paceline.api import parse_balancing
from paceline.balancer import (
    BalancingSettings,
    FleetTracker,
    StragglerConfig,
    StragglerState,
    equal_split,
)
from paceline.balancer.optimizer import round_largest_remainder, water_fill
from paceline.controller.rebalance import JobControl, control_step
from paceline.reasons import EventReason
from paceline_dev.control_token import CONTROL_TOKEN, control_token_file
from paceline_worker.wire import Assignment, authorization

REPO = Path(__file__).resolve().parents[1]
WORKER_SCRIPT = Path(__file__).with_name("_workers.py")


LOOPBACK = "127.0.0.1"
TICK_S = 0.05

Phase = dict[str, Any]
Result = dict[str, Any]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True, kw_only=True)
class Config:
    mode: str
    speeds: tuple[float, ...] = (1.0, 1.0, 2.0, 4.0)
    global_batch: int = 128
    sample_cost_s: float = 0.009375  # speed-1 worker: 0.3 s per step at the equal share B/4
    samples: int = 1792  # 14 full global batches per epoch
    lr: float = 0.05
    momentum: float = 0.9
    solo_steps: int
    static_steps: int
    overhead_steps: int
    overhead_pairs: int
    probes: int
    warm_s: float  # transient timeline: normal, then `slowdown`x slower for slow_s, then normal again
    slow_s: float
    after_s: float
    straggler: int = 3
    slowdown: float = 3.0
    scrape_s: float = 1.0
    time_scale: float = 1.0  # balancer time constants are multiplied by this (quick: compressed)
    scenarios_s: tuple[float, ...] = (5.0, 15.0, 60.0)  # slowdown lengths, each its own run
    scenario_warm_s: float = 8.0
    scenario_after_s: float = 15.0
    noisy_rank: int = 0
    noisy_delay_s: float = 0.1  # exponential extra delay of every step of the noisy worker (mean)
    noisy_window_s: float = 60.0
    stationary_delay_s: float = 0.11  # gamma (shape 2) extra delay of every worker: step-time cv ≈ 0.3
    stationary_window_s: float = 90.0

    @property
    def world(self) -> int:
        return len(self.speeds)

    @property
    def window_s(self) -> float:
        return self.warm_s + self.slow_s + self.after_s

    def balancing(self) -> BalancingSettings:
        base = parse_balancing({})
        return parse_balancing(
            {
                "cooldownSeconds": max(1, round(base.cooldown_seconds * self.time_scale)),
                "halfLifeSeconds": max(1, round(base.half_life_seconds * self.time_scale)),
            }
        )

    def straggler_config(self) -> StragglerConfig:
        """The operator's change-point detector, at this bench's scrape period (no time compression)."""
        return self.balancing().straggler_config(observation_interval_s=self.scrape_s)


FULL = Config(
    mode="full",
    solo_steps=6,
    static_steps=120,
    overhead_steps=60,
    overhead_pairs=2,
    probes=40,
    warm_s=15.0,
    slow_s=60.0,
    after_s=45.0,
)
QUICK = Config(  # the transient timeline and the balancer's time constants compressed fivefold
    mode="quick",
    solo_steps=4,
    static_steps=32,
    overhead_steps=30,
    overhead_pairs=1,
    probes=10,
    warm_s=3.0,
    slow_s=12.0,
    after_s=9.0,
    time_scale=0.2,
    noisy_window_s=40.0,
    stationary_window_s=60.0,
)


# ------------------------------------------------------------------------------------------------- fleet
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def http(method: str, url: str, body: Mapping[str, Any] | None = None) -> tuple[int, str]:
    """One request to a worker, bearing the job's control token as the operator's writes do."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=authorization(CONTROL_TOKEN))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class Hook(Protocol):
    def tick(self, now: float) -> None: ...


class Fleet:
    """The long-lived worker processes (bench/_workers.py), fed one phase at a time.

    Every process started here is stopped by its PID when the block is left, on success, error or Ctrl-C.
    """

    def __init__(self, run_dir: Path, world: int) -> None:
        self.run_dir = run_dir
        self.world = world
        self.procs: list[subprocess.Popen[bytes]] = []
        self._index = 0

    def __enter__(self) -> Fleet:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PACELINE_", "MASTER_"))}
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(REPO / "worker-image"), env.get("PYTHONPATH", "")) if p
                ),
                "MASTER_ADDR": LOOPBACK,
                "MASTER_PORT": str(free_port()),
                "WORLD_SIZE": str(self.world),
                "OMP_NUM_THREADS": "1",
                "GLOO_SOCKET_IFNAME": "lo",
                "PACELINE_TOKEN_FILE": str(control_token_file(self.run_dir)),
            }
        )
        try:
            for rank in range(self.world):
                with open(self.run_dir / f"worker{rank}.log", "wb") as out:
                    self.procs.append(
                        subprocess.Popen(
                            [sys.executable, str(WORKER_SCRIPT), "--dir", str(self.run_dir)],
                            env={**env, "RANK": str(rank)},
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            cwd=REPO,
                        )
                    )
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Ask for a clean exit, then kill (by PID) whatever is still running."""
        if any(p.poll() is None for p in self.procs):
            write_json(self.run_dir / f"phase-{self._index}.json", {"kind": "quit", "name": "quit"})
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def logs(self, chars: int = 3000) -> str:
        return "\n".join(
            f"--- worker {r} ---\n" + (self.run_dir / f"worker{r}.log").read_text(errors="replace")[-chars:]
            for r in range(self.world)
        )

    def port(self, name: str, rank: int) -> int | None:
        path = self.run_dir / f"{name}.rank{rank}.port"
        return int(path.read_text()) if path.exists() else None

    def started(self, name: str) -> bool:
        return (self.run_dir / f"{name}.started").exists()

    def end_phase(self, phase: Phase) -> None:
        """End a time-limited phase: SIGTERM to rank 0 (Paceline's clean stop), or the stop file (DDP)."""
        if phase["kind"] == "paceline":
            self.procs[0].send_signal(signal.SIGTERM)
        else:
            (self.run_dir / f"{phase['name']}.stop").touch()

    def run(self, phase: Phase, hooks: Sequence[Hook] = (), timeout_s: float = 300.0) -> list[Result]:
        """Hand the phase to every worker, tick the hooks until every rank wrote its result."""
        name = phase["name"]
        write_json(self.run_dir / f"phase-{self._index}.json", phase)
        self._index += 1
        paths = [self.run_dir / f"{name}.rank{r}.json" for r in range(self.world)]
        deadline = time.monotonic() + timeout_s
        while not all(p.exists() for p in paths):
            dead = [r for r, p in enumerate(self.procs) if p.poll() is not None]
            if dead:
                raise RuntimeError(f"worker(s) {dead} exited during phase {name}\n{self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"phase {name} did not finish in {timeout_s:.0f}s\n{self.logs()}")
            now = time.time()
            for hook in hooks:
                hook.tick(now)
            time.sleep(TICK_S)
        return [json.loads(p.read_text()) for p in paths]


# -------------------------------------------------------------------------------------------- controller
@dataclass(kw_only=True)
class Controller:
    """The operator's control loop for one job: scrape every rank, `control_step`, PUT to rank 0.

    `paceline.control_loop` turns counters into per-step observations for the FleetTracker and calls
    decide_rebalance; `assignment` plays the control ConfigMap (the assignment in force).
    """

    fleet: Fleet
    name: str
    assignment: Assignment
    settings: BalancingSettings
    straggler: StragglerConfig
    interval_s: float
    state: JobControl = field(init=False)
    next_at: float = 0.0
    states: dict[int, StragglerState] = field(default_factory=dict)
    last_reason: str = ""  # the latest decision's reason (why shares were kept or changed)
    changes: list[dict[str, Any]] = field(default_factory=list)  # StragglerDetected events (change points)
    shares_by_version: dict[int, list[int]] = field(default_factory=dict)  # every assignment it published

    def __post_init__(self) -> None:
        self.shares_by_version[self.assignment.version] = list(self.assignment.batch_sizes)
        estimator = self.settings.estimator_config()
        tracker = FleetTracker(estimator_config=estimator, straggler_config=self.straggler)
        self.state = JobControl(tracker=tracker, observation_interval_s=self.interval_s)

    def tick(self, now: float) -> None:
        if now < self.next_at:
            return
        ports = [self.fleet.port(self.name, r) for r in range(self.fleet.world)]
        if any(p is None for p in ports):
            return
        self.next_at = now + self.interval_s
        samples = scrape_all({r: f"http://{LOOPBACK}:{p}/metrics" for r, p in enumerate(ports)})
        if not samples:  # the phase is ending
            return
        outcome = control_step(
            state=self.state,
            samples=samples,
            assignment=self.assignment,
            settings=self.settings,
            now=time.time(),
        )
        for rank, status in outcome.stragglers.items():
            if self.states.get(rank, StragglerState.HEALTHY) is not status.state:
                log(f"  {self.name}: w{rank} now {status.state.value} ({status.slowdown:.2f}x)")
            self.states[rank] = status.state
        if outcome.decision is not None:
            self.last_reason = outcome.decision.reason
        for event in outcome.events:
            if event.reason == EventReason.STRAGGLER_DETECTED:
                self.changes.append({"at": now, "slower": event.type == "Warning", "message": event.message})
                log(f"  {self.name}: {event.message}")
        if outcome.new_assignment is not None:
            self.assignment = outcome.new_assignment
            self.shares_by_version[self.assignment.version] = list(self.assignment.batch_sizes)
            log(f"  {self.name}: Rebalanced to {list(self.assignment.batch_sizes)}: {self.last_reason}")
        if outcome.push is not None:
            try:
                url = f"http://{LOOPBACK}:{ports[0]}/assignment"
                put_json(url, outcome.push.to_json(), token=CONTROL_TOKEN)
            except OSError as err:  # pushed again at the next tick (rank 0 reports an older version)
                log(f"  {self.name}: PUT /assignment failed: {err}")


@dataclass(kw_only=True)
class Timeline:
    """The transient straggler: rewrite its schedule file at onset and end; end the phase after the window."""

    fleet: Fleet
    phase: Phase
    schedule: Path
    factor: float
    warm_s: float
    slow_s: float
    window_s: float
    t0: float | None = None
    onset: float | None = None
    recovered: float | None = None
    ended: float | None = None

    def tick(self, now: float) -> None:
        if self.t0 is None:
            if self.fleet.started(self.phase["name"]):
                self.t0 = now
            return
        if self.onset is None and now >= self.t0 + self.warm_s:
            write_json(self.schedule, {"factor": self.factor})
            self.onset = time.time()
        elif self.onset is not None and self.recovered is None and now >= self.t0 + self.warm_s + self.slow_s:
            write_json(self.schedule, {"factor": 1.0})
            self.recovered = time.time()
        elif self.ended is None and now >= self.t0 + self.window_s:
            self.ended = now
            self.fleet.end_phase(self.phase)


@dataclass(kw_only=True)
class Prober:
    """PUT alternating shares to rank 0 at random moments; end the phase after the last one was applied."""

    fleet: Fleet
    phase: Phase
    variants: tuple[list[int], list[int]]
    count: int
    rng: random.Random
    version: int = 1
    sent: int = 0
    next_at: float | None = None
    ended: bool = False

    def tick(self, now: float) -> None:
        if self.ended or not self.fleet.started(self.phase["name"]):
            return
        if self.next_at is None:
            self.next_at = now + self.rng.uniform(0.1, 0.4)
        if now < self.next_at:
            return
        if self.sent >= self.count:
            self.ended = True
            self.fleet.end_phase(self.phase)
            return
        self.version += 1
        body = {"version": self.version, "batchSizes": self.variants[self.sent % 2]}
        status, text = http(
            "PUT", f"http://{LOOPBACK}:{self.fleet.port(self.phase['name'], 0)}/assignment", body
        )
        if status != 202:
            raise RuntimeError(f"probe PUT answered {status}: {text}")
        self.sent += 1
        self.next_at = now + self.rng.uniform(0.35, 0.6)  # > one step: each probe applies before the next


# -------------------------------------------------------------------------------------------------- math
def steady_rate(times: Sequence[float], batch: int, first: int = 1) -> float:
    """Samples/s over the steps after `first` (times[i] = end of step i)."""
    steps = len(times) - 1 - first
    if steps < 1:
        raise ValueError(f"too few steps ({len(times)}) to measure a rate")
    return batch * steps / (times[-1] - times[first])


def window_rate(times: Sequence[float], batch: int, start: float, length: float) -> float:
    return batch * sum(1 for t in times if start < t <= start + length) / length


def switches(results: Sequence[Result]) -> dict[int, float]:
    """Assignment version -> when the last rank switched to it (versions every rank applied)."""
    applied: dict[int, list[float]] = {}
    for result in results:
        for record in result["history"]:
            applied.setdefault(record["version"], []).append(record["appliedAt"])
    return {v: max(times) for v, times in applied.items() if len(times) == len(results)}


def propagation(results: Sequence[Result]) -> list[float]:
    """PUT accepted on rank 0 (receivedAt) -> the last rank switched (appliedAt), per applied version."""
    done = switches(results)
    return [
        done[r["version"]] - r["receivedAt"]
        for r in results[0]["history"]
        if r["receivedAt"] is not None and r["version"] in done
    ]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100.0 * len(ordered)) - 1)
    return ordered[rank]


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


# ------------------------------------------------------------------------------------------------- bench
@dataclass(kw_only=True)
class Bench:
    cfg: Config
    fleet: Fleet
    run_dir: Path
    propagations: list[float] = field(default_factory=list)
    plot: dict[str, Any] = field(default_factory=dict)  # what --plot draws

    def phase(self, name: str, kind: str, **fields: Any) -> Phase:
        cfg = self.cfg
        base: Phase = {
            "name": name,
            "kind": kind,
            "seed": 0,
            "lr": cfg.lr,
            "momentum": cfg.momentum,
            "samples": cfg.samples,
            "speeds": list(cfg.speeds),
            "sample_cost_s": cfg.sample_cost_s,
            "sim": True,
            "eval": False,
            "version": 1,
            "max_steps": None,
            "schedules": [None] * cfg.world,
            "shares": list(equal_split(total_batch=cfg.global_batch, workers=cfg.world)),
        }
        return {**base, **fields}

    def controller(self, name: str, shares: Sequence[int], *, act: bool = True) -> Controller:
        """The operator's loop; `act=False` scrapes and tracks at the same pace but keeps the shares."""
        cfg = self.cfg
        settings = cfg.balancing() if act else parse_balancing({"policy": "Static"})
        assignment = Assignment(
            version=1, batch_sizes=tuple(shares), learning_rate=cfg.lr, momentum=cfg.momentum
        )
        return Controller(
            fleet=self.fleet,
            name=name,
            assignment=assignment,
            settings=settings,
            straggler=cfg.straggler_config(),
            interval_s=cfg.scrape_s,
        )

    def capacities(self) -> tuple[list[float], float]:
        """Each worker alone on the whole batch B; the straggler also at its slowed-down speed."""
        cfg = self.cfg
        slow = self.run_dir / "solo-slow.json"
        write_json(slow, {"factor": cfg.slowdown})
        schedules = [[None] + ([str(slow)] if r == cfg.straggler else []) for r in range(cfg.world)]
        phase = self.phase(
            "solo", "solo", max_steps=cfg.solo_steps, shares=[cfg.global_batch], schedules=schedules
        )
        results = self.fleet.run(phase)
        caps = [steady_rate(r["runs"][0]["times"], cfg.global_batch) for r in results]
        slow_cap = steady_rate(results[cfg.straggler]["runs"][1]["times"], cfg.global_batch)
        log(f"capacities alone (samples/s): {[round(c, 1) for c in caps]}; straggler slowed: {slow_cap:.1f}")
        return caps, slow_cap

    def static(self, caps: Sequence[float]) -> tuple[dict[str, Any], list[int], dict[str, float]]:
        cfg = self.cfg
        steps = cfg.static_steps
        equal = self.fleet.run(self.phase("static-equal", "ddp", max_steps=steps, eval=True))
        equal_sps = steady_rate(equal[0]["times"], cfg.global_batch)
        log(f"static: plain DDP, equal shares: {equal_sps:.1f} samples/s, loss {equal[0]['loss']:.4f}")
        control = self.controller("static-paceline", self.phase("x", "x")["shares"])
        pace = self.fleet.run(
            self.phase("static-paceline", "paceline", max_steps=steps, eval=True), [control]
        )
        self.propagations += propagation(pace)
        times = pace[0]["times"]
        history = pace[0]["history"]
        run_sps = steady_rate(times, cfg.global_batch)
        if history:
            first = history[0]["step"]
            steady_sps = steady_rate(times, cfg.global_batch, first=max(1, first - 1))
            rebalanced_after = history[0]["appliedAt"] - times[0]
        else:
            steady_sps, rebalanced_after = run_sps, None
        final = pace[0]["final_shares"]
        ideal = sum(caps)
        log(
            f"static: Paceline {steady_sps:.1f} samples/s after rebalancing ({run_sps:.1f} over the run), "
            f"shares {final}, loss {pace[0]['loss']:.4f}"
        )
        proportional = proportional_shares(caps, [0.0] * cfg.world, cfg.global_batch)
        prop = self.fleet.run(self.phase("static-proportional", "ddp", max_steps=steps, shares=proportional))
        prop_sps = steady_rate(prop[0]["times"], cfg.global_batch)
        log(f"static: plain DDP with fixed shares ∝ measured speeds {proportional}: {prop_sps:.1f} samples/s")
        out = {
            "ideal_sps": rounded(ideal, 2),
            "paceline_sps": rounded(steady_sps, 2),
            "equal_sps": rounded(equal_sps, 2),
            "efficiency": rounded(steady_sps / ideal),
            "speedup_vs_equal": rounded(steady_sps / equal_sps),
            "ideal_speedup": rounded(ideal / equal_sps),
            "paceline_run_sps": rounded(run_sps, 2),
            "run_efficiency": rounded(run_sps / ideal),
            "first_rebalance_s": rounded(rebalanced_after, 2),
            "final_shares": final,
            "proportional_sps": rounded(prop_sps, 2),
            "vs_proportional": rounded(steady_sps / prop_sps),
            "proportional_shares": proportional,
        }
        losses = {"equal": float(equal[0]["loss"]), "paceline": float(pace[0]["loss"])}
        return out, final, losses

    def loss_noise(self, reference: float) -> float:
        phase = self.phase("loss-seed1", "ddp", seed=1, sim=False, max_steps=self.cfg.static_steps, eval=True)
        other = float(self.fleet.run(phase)[0]["loss"])
        log(f"loss: plain DDP with seed 1: {other:.4f} (seed 0: {reference:.4f})")
        return abs(other - reference) / reference

    def overhead(self, shares: Sequence[int]) -> dict[str, Any]:
        """Per-step time of the Paceline runtime (scraped every second) vs plain torch DDP, same shares."""
        cfg = self.cfg
        per_step: dict[str, list[float]] = {"paceline": [], "ddp": []}
        for i in range(cfg.overhead_pairs):
            for kind in ("paceline", "ddp") if i % 2 == 0 else ("ddp", "paceline"):
                name = f"overhead-{kind}-{i}"
                hooks = [self.controller(name, shares, act=False)] if kind == "paceline" else []
                phase = self.phase(name, kind, shares=list(shares), max_steps=cfg.overhead_steps)
                times = self.fleet.run(phase, hooks)[0]["times"]
                per_step[kind].append(cfg.global_batch / steady_rate(times, cfg.global_batch, first=2))
        pace, ddp = sum(per_step["paceline"]), sum(per_step["ddp"])
        log(f"overhead: per step Paceline {per_step['paceline']} s, plain DDP {per_step['ddp']} s")
        pairs = cfg.overhead_pairs
        return {
            "overhead_vs_ddp": rounded(pace / ddp - 1.0),
            "step_s": {k: [rounded(v, 5) for v in vs] for k, vs in per_step.items()},
            "paceline_sps": cfg.global_batch * pairs / pace,
            "ddp_sps": cfg.global_batch * pairs / ddp,
        }

    def probe(self, shares: Sequence[int]) -> None:
        moved = list(shares)
        give = min(4, moved[-1] - 1)
        moved[0] += give
        moved[-1] -= give
        phase = self.phase("propagation", "paceline", shares=list(shares))
        prober = Prober(
            fleet=self.fleet,
            phase=phase,
            variants=(moved, list(shares)),
            count=self.cfg.probes,
            rng=random.Random(7),
        )
        results = self.fleet.run(phase, [prober])
        values = propagation(results)
        self.propagations += values
        log(f"propagation: {len(values)} probes, max {max(values):.3f}s")

    def transient(self, caps: Sequence[float], slow_cap: float, shares: Sequence[int]) -> dict[str, Any]:
        cfg = self.cfg
        rates: dict[str, float] = {}
        timelines: dict[str, Timeline] = {}
        controller: Controller | None = None
        results: dict[str, list[Result]] = {}
        for kind in ("ddp", "paceline"):
            name = f"transient-{kind}"
            schedule = self.run_dir / f"{name}.schedule.json"
            write_json(schedule, {"factor": 1.0})
            schedules = [str(schedule) if r == cfg.straggler else None for r in range(cfg.world)]
            start = list(shares) if kind == "paceline" else self.phase("x", "x")["shares"]
            phase = self.phase(name, kind, shares=start, schedules=schedules)
            timeline = Timeline(
                fleet=self.fleet,
                phase=phase,
                schedule=schedule,
                factor=cfg.slowdown,
                warm_s=cfg.warm_s,
                slow_s=cfg.slow_s,
                window_s=cfg.window_s,
            )
            hooks: list[Hook] = [timeline]
            if kind == "paceline":
                controller = self.controller(name, start)
                hooks.append(controller)
            results[kind] = self.fleet.run(phase, hooks, timeout_s=cfg.window_s + 120)
            assert timeline.t0 is not None
            rates[kind] = window_rate(results[kind][0]["times"], cfg.global_batch, timeline.t0, cfg.window_s)
            timelines[kind] = timeline
            log(f"transient: {name}: {rates[kind]:.1f} samples/s over {cfg.window_s:.0f}s")
        pace = results["paceline"]
        self.propagations += propagation(pace)
        if controller is not None:
            fits = ", ".join(
                f"{w}: {1e3 * m.overhead_s:.0f} ms + {1e3 * m.per_sample_s:.2f} ms/sample cv {m.noise_cv:.2f}"
                for w, m in sorted(controller.state.tracker.models().items())
            )
            log(f"transient: the balancer's last decision: {controller.last_reason}; step-time fits {fits}")
        line = timelines["paceline"]
        assert line.t0 is not None and line.onset is not None and line.recovered is not None
        slow_overlap = min(line.recovered, line.t0 + cfg.window_s) - line.onset
        ideal = sum(caps) - (caps[cfg.straggler] - slow_cap) * slow_overlap / cfg.window_s
        switched = switches(pace)
        after_onset = [t for t in switched.values() if t >= line.onset]
        after_recovery = [t for t in switched.values() if t >= line.recovered]
        detect = min(after_onset) - line.onset if after_onset else None
        readapt = min(after_recovery) - line.recovered if after_recovery else None
        if controller is not None:
            by_version = controller.shares_by_version
            self.plot = {
                "t0": line.t0,
                "t0s": {kind: timelines[kind].t0 for kind in timelines},
                "window_s": cfg.window_s,
                "onset": line.onset,
                "recovered": line.recovered,
                "shares": [(line.t0, by_version[1])]
                + [(t, by_version[v]) for v, t in sorted(switched.items()) if v in by_version and v > 1],
                "rebalances": [t for v, t in switched.items() if v > 1],
                "changes": [c["at"] for c in controller.changes],
                "times": {kind: results[kind][0]["times"] for kind in results},
                "global_batch": cfg.global_batch,
                "ideal_sps": sum(caps),
                "speeds": list(cfg.speeds),
                "straggler": cfg.straggler,
                "slowdown": cfg.slowdown,
                "bin_s": max(1.0, cfg.window_s / 40),
            }
        return {
            "ideal_sps": rounded(ideal, 2),
            "paceline_sps": rounded(rates["paceline"], 2),
            "equal_sps": rounded(rates["ddp"], 2),
            "efficiency": rounded(rates["paceline"] / ideal),
            "detect_s": rounded(detect, 2),
            "speedup_vs_equal": rounded(rates["paceline"] / rates["ddp"]),
            "readapt_s": rounded(readapt, 2),
            "rebalances": len(switched),
            "last_decision": controller.last_reason if controller is not None else "",
            "window_s": cfg.window_s,
            "slow_s": round(slow_overlap, 2),
            "straggler": {
                "rank": cfg.straggler,
                "speed": cfg.speeds[cfg.straggler],
                "slowdown": cfg.slowdown,
            },
        }


def proportional_shares(caps: Sequence[float], delays_s: Sequence[float], total: int) -> list[int]:
    """Fixed shares a user would set by hand knowing each worker's mean speed (and mean extra delay):
    equal mean step times, T_m(b) = b / capacity_m + delay_m (water-filling, integers summing to B)."""
    a = np.asarray(delays_s, dtype=np.float64)
    c = 1.0 / np.asarray(caps, dtype=np.float64)
    lo = np.ones(len(caps), dtype=np.int64)
    hi = np.full(len(caps), total, dtype=np.int64)
    x = water_fill(a=a, c=c, lo=lo, hi=hi, total=total)
    return [int(v) for v in round_largest_remainder(x=x, lo=lo, hi=hi, total=total)]


@dataclass(kw_only=True)
class Ender:
    """End a time-limited phase `window_s` after it started (records the start)."""

    fleet: Fleet
    phase: Phase
    window_s: float
    t0: float | None = None
    ended: bool = False

    def tick(self, now: float) -> None:
        if self.t0 is None:
            if self.fleet.started(self.phase["name"]):
                self.t0 = now
            return
        if not self.ended and now >= self.t0 + self.window_s:
            self.ended = True
            self.fleet.end_phase(self.phase)


def _scenarios(bench: Bench, caps: Sequence[float], slow_cap: float, shares: Sequence[int]) -> dict[str, Any]:
    """Slowdowns of several lengths, Paceline only (efficiency vs the ideal of the same timeline)."""
    cfg = bench.cfg
    out: dict[str, Any] = {}
    for slow_s in cfg.scenarios_s:
        name = f"scenario-{slow_s:g}s"
        schedule = bench.run_dir / f"{name}.schedule.json"
        write_json(schedule, {"factor": 1.0})
        schedules = [str(schedule) if r == cfg.straggler else None for r in range(cfg.world)]
        phase = bench.phase(name, "paceline", shares=list(shares), schedules=schedules)
        window = cfg.scenario_warm_s + slow_s + cfg.scenario_after_s
        timeline = Timeline(
            fleet=bench.fleet,
            phase=phase,
            schedule=schedule,
            factor=cfg.slowdown,
            warm_s=cfg.scenario_warm_s,
            slow_s=slow_s,
            window_s=window,
        )
        controller = bench.controller(name, shares)
        results = bench.fleet.run(phase, [timeline, controller], timeout_s=window + 120)
        assert timeline.t0 is not None and timeline.onset is not None and timeline.recovered is not None
        rate = window_rate(results[0]["times"], cfg.global_batch, timeline.t0, window)
        slow_overlap = min(timeline.recovered, timeline.t0 + window) - timeline.onset
        ideal = sum(caps) - (caps[cfg.straggler] - slow_cap) * slow_overlap / window
        changes = controller.changes
        onset_alarm = [c for c in changes if c["at"] >= timeline.onset and c["slower"]]
        back_alarm = [c for c in changes if c["at"] >= timeline.recovered and not c["slower"]]
        switched = switches(results)
        out[f"{slow_s:g}s"] = {
            "efficiency": rounded(rate / ideal),
            "paceline_sps": rounded(rate, 2),
            "ideal_sps": rounded(ideal, 2),
            "detect_s": rounded(onset_alarm[0]["at"] - timeline.onset, 2) if onset_alarm else None,
            "recovery_detect_s": rounded(back_alarm[0]["at"] - timeline.recovered, 2) if back_alarm else None,
            "rebalances": len([v for v, t in switched.items() if t >= timeline.t0]),
            "change_points": len(changes),
            "decisions": [c["message"][:400] for c in changes],
        }
        log(f"scenario {slow_s:g}s: {out[f'{slow_s:g}s']}")
    return out


def _noisy(bench: Bench, caps: Sequence[float]) -> dict[str, Any]:
    """A persistently noisy worker (exponential extra delay every step): fixed shares set from the mean
    (plain DDP) vs Paceline starting from the same shares, same wall-clock window."""
    cfg = bench.cfg
    delays = [cfg.noisy_delay_s if r == cfg.noisy_rank else 0.0 for r in range(cfg.world)]
    shares = proportional_shares(caps, delays, cfg.global_batch)
    rates: dict[str, float] = {}
    rebalances = 0
    final: list[int] = list(shares)
    for kind in ("ddp", "paceline"):
        name = f"noisy-{kind}"
        schedule = bench.run_dir / f"{name}.schedule.json"
        write_json(
            schedule,
            {
                "factor": 1.0,
                "randomDelays": [{"distribution": "exponential", "meanSeconds": cfg.noisy_delay_s}],
            },
        )
        schedules = [str(schedule) if r == cfg.noisy_rank else None for r in range(cfg.world)]
        phase = bench.phase(name, kind, shares=list(shares), schedules=schedules)
        ender = Ender(fleet=bench.fleet, phase=phase, window_s=cfg.noisy_window_s)
        hooks: list[Hook] = [ender]
        if kind == "paceline":
            hooks.append(bench.controller(name, shares))
        results = bench.fleet.run(phase, hooks, timeout_s=cfg.noisy_window_s + 120)
        assert ender.t0 is not None
        rates[kind] = window_rate(results[0]["times"], cfg.global_batch, ender.t0, cfg.noisy_window_s)
        if kind == "paceline":
            rebalances = len(switches(results))
            final = results[0]["final_shares"]
        log(f"noisy: {kind}: {rates[kind]:.1f} samples/s")
    return {
        "vs_proportional": rounded(rates["paceline"] / rates["ddp"]),
        "paceline_sps": rounded(rates["paceline"], 2),
        "proportional_sps": rounded(rates["ddp"], 2),
        "proportional_shares": shares,
        "final_shares": final,
        "rebalances": rebalances,
        "rank": cfg.noisy_rank,
        "delay": {"distribution": "exponential", "mean_s": cfg.noisy_delay_s},
    }


def _stationary(bench: Bench, shares: Sequence[int]) -> dict[str, Any]:
    """Every worker's step carries a gamma (shape 2) extra delay, step-time cv ≈ 0.3; nothing changes."""
    cfg = bench.cfg
    name = "stationary-noisy"
    schedules = []
    for r in range(cfg.world):
        path = bench.run_dir / f"{name}.{r}.schedule.json"
        delay = {"distribution": "gamma", "meanSeconds": cfg.stationary_delay_s, "shape": 2.0}
        write_json(path, {"factor": 1.0, "randomDelays": [delay]})
        schedules.append(str(path))
    phase = bench.phase(name, "paceline", shares=list(shares), schedules=schedules)
    ender = Ender(fleet=bench.fleet, phase=phase, window_s=cfg.stationary_window_s)
    controller = bench.controller(name, shares)
    results = bench.fleet.run(phase, [ender, controller], timeout_s=cfg.stationary_window_s + 120)
    times = results[0]["times"]
    steps = np.diff(np.asarray(times[2:]))
    out = {
        "rebalances": len(switches(results)),
        "change_points": len(controller.changes),
        "window_s": cfg.stationary_window_s,
        "step_cv": rounded(float(np.std(steps) / np.mean(steps))) if len(steps) > 2 else None,
    }
    log(f"stationary noisy run: {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs (about 2 minutes)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (worker logs, results)")
    parser.add_argument("--sample-cost-s", type=float, help="simulated seconds per sample at speed 1")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="draw the transient straggler's timeline (shares, throughput)",
    )
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    if args.sample_cost_s is not None:
        cfg = replace(cfg, sample_cost_s=args.sample_cost_s)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # leave through the `finally` blocks, which stop every worker

    signal.signal(signal.SIGTERM, terminate)
    started = time.monotonic()
    run_dir = Path(tempfile.mkdtemp(prefix="paceline-bench-"))
    log(f"balancing bench ({cfg.mode}): speeds {list(cfg.speeds)}, B={cfg.global_batch}, run dir {run_dir}")
    done = False
    try:
        with Fleet(run_dir, cfg.world) as fleet:
            bench = Bench(cfg=cfg, fleet=fleet, run_dir=run_dir)
            caps, slow_cap = bench.capacities()
            static, shares, losses = bench.static(caps)
            noise = bench.loss_noise(losses["equal"])
            overhead = bench.overhead(shares)
            # What plain DDP reaches at the shares Paceline found: the ceiling set by synchronous steps
            # (all-reduce, optimiser, waiting) on this machine, with no balancer and no runtime overhead.
            static["ddp_same_shares_sps"] = rounded(overhead["ddp_sps"], 2)
            static["ddp_same_shares_efficiency"] = rounded(overhead["ddp_sps"] / sum(caps))
            bench.probe(shares)
            transient = bench.transient(caps, slow_cap, shares)
            scenarios = _scenarios(bench, caps, slow_cap, shares)
            noisy = _noisy(bench, caps)
            stationary = _stationary(bench, shares)
        done = True
    finally:
        if done and not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            log(f"run files kept in {run_dir}")
    if args.plot is not None and bench.plot:
        from _plots import balancing_timeline

        balancing_timeline(args.plot, bench.plot)
        log(f"timeline drawn: {args.plot}")
    props = bench.propagations
    result = {
        "static": static,
        "transient": transient,
        "static.proportional_sps": static["proportional_sps"],
        "static.vs_proportional": static["vs_proportional"],
        "scenarios": scenarios,
        "noisy": noisy,
        "noisy.vs_proportional": noisy["vs_proportional"],
        "false_rebalances": stationary["rebalances"],
        "stationary_noisy": stationary,
        "loss_gap": rounded((losses["paceline"] - losses["equal"]) / losses["equal"], 6),
        "loss_noise": rounded(noise, 6),
        "losses": {k: rounded(v, 6) for k, v in losses.items()},
        "overhead_vs_ddp": overhead["overhead_vs_ddp"],
        "overhead_step_s": overhead["step_s"],
        "propagation_p99_s": rounded(percentile(props, 99)),
        "propagation_p50_s": rounded(percentile(props, 50)),
        "propagation_n": len(props),
        "capacity_sps": [rounded(c, 2) for c in caps],
        "mode": cfg.mode,
        "speeds": list(cfg.speeds),
        "global_batch": cfg.global_batch,
        "sample_cost_s": cfg.sample_cost_s,
        "balancer": {
            "cooldown_s": cfg.balancing().cooldown_seconds,
            "half_life_s": cfg.balancing().half_life_seconds,
            "min_shift": cfg.straggler_config().min_shift,
            "cusum_threshold": round(cfg.straggler_config().threshold, 2),
            "scrape_s": cfg.scrape_s,
        },
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
