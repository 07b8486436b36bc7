"""Worker processes of bench/balancing.py: one long-lived process per rank runs the bench's phases in order.

Run by the driver as ``python bench/_workers.py --dir RUN_DIR`` with RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT set. Importing torch costs seconds per process, so the same four processes serve every phase:

- ``solo``: each rank trains alone (its own one-process group), to measure its capacity;
- ``paceline``: the Paceline worker runtime (``paceline_worker.Worker``), live assignment over HTTP;
- ``ddp``: plain torch DDP (default mean all-reduce, no Paceline runtime), the baseline.

Files in RUN_DIR (the protocol with the driver):

- ``phase-<i>.json`` (driver): the i-th phase; kind ``quit`` ends the process;
- ``<name>.rank<r>.port``: the phase's HTTP port (``paceline`` phases), once serving;
- ``<name>.started`` (rank 0): written when the phase's second step is done;
- ``<name>.stop`` (driver): ends a time-limited ``ddp`` phase (rank 0 broadcasts the flag every step);
  a time-limited ``paceline`` phase is ended with SIGTERM to rank 0, the runtime's clean stop;
- ``<name>.rank<r>.json``: the phase's result (step end times, assignment switches, final loss on rank 0).

The simulated device speed (``PACELINE_SIM_*``, docs/worker.md) makes the four CPU processes behave like
GPUs of relative speeds e.g. 1:1:2:4; the plain-DDP baseline pads its compute with the same simulation.
"""

# No `from __future__ import annotations`: DDP checks the comm hook's annotations at run time.

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from paceline_worker import Worker
from paceline_worker.sampler import GlobalSampler
from paceline_worker.simulation import SimulatedDevice, SlowdownSchedule
from train_digits import SmallCnn, synthetic_digits

Phase = dict[str, Any]
LOOPBACK = "127.0.0.1"
POLL_S = 0.02


# --------------------------------------------------------------------------------------------- task
def make_dataset(samples: int) -> TensorDataset:
    """Synthetic 8x8 digit glyphs (examples/train_digits.py), fixed for every phase."""
    images, labels = synthetic_digits(num_samples=samples, seed=0)
    return TensorDataset((images / 16.0).unsqueeze(1), labels)


def make_model(phase: Phase) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(int(phase["seed"]))
    model = SmallCnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=float(phase["lr"]), momentum=float(phase["momentum"]))
    return model, optimizer


def full_loss(model: nn.Module, dataset: TensorDataset) -> float:
    """Mean cross-entropy over the whole dataset (deterministic: the same samples for every run)."""
    inputs, labels = dataset.tensors
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(inputs), labels))


def simulated_device(phase: Phase, rank: int, schedule: str | None) -> SimulatedDevice | None:
    if not phase["sim"]:
        return None
    return SimulatedDevice(
        speed=float(phase["speeds"][rank]),
        schedule=SlowdownSchedule(Path(schedule) if schedule else None),
        sample_cost_s=float(phase["sample_cost_s"]),
    )


# ------------------------------------------------------------------------------------------ results
def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class StepClock:
    """Step end times (Unix seconds); rank 0 announces the phase as started after its second step."""

    def __init__(self, run_dir: Path, name: str, rank: int) -> None:
        self.times: list[float] = []
        self._started = run_dir / f"{name}.started" if rank == 0 else None

    def tick(self) -> None:
        self.times.append(time.time())
        if self._started is not None and len(self.times) == 2:
            write_json(self._started, self.times[-1])


# ------------------------------------------------------------------------------------ Paceline phase
def paceline_env(
    phase: Phase, *, rank: int, world: int, shares: Sequence[int], speed: float, schedule: str | None
) -> dict[str, str]:
    env = {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "PACELINE_JOB": "bench",
        "PACELINE_BACKEND": "gloo",
        "PACELINE_BIND_ADDRESS": LOOPBACK,
        "PACELINE_METRICS_PORT": "0",
        "PACELINE_SEED": str(phase["seed"]),
        "PACELINE_ASSIGNMENT": json.dumps({"version": int(phase["version"]), "batchSizes": list(shares)}),
        "PACELINE_CHECKPOINT_INTERVAL_STEPS": "0",
        "PACELINE_TOKEN_FILE": os.environ.get("PACELINE_TOKEN_FILE", ""),  # written by balancing.py
    }
    if phase["sim"]:
        env["PACELINE_SIM_SPEED"] = str(speed)
        env["PACELINE_SIM_SAMPLE_COST_S"] = str(phase["sample_cost_s"])
        if schedule:
            env["PACELINE_SIM_SCHEDULE"] = schedule
    return env


def run_paceline(
    phase: Phase,
    *,
    run_dir: Path,
    rank: int,
    world: int,
    shares: Sequence[int],
    speed: float,
    schedule: str | None,
) -> dict[str, Any]:
    """Train with the Paceline runtime until max_steps, or until SIGTERM (every rank stops at one step)."""
    dataset = make_dataset(int(phase["samples"]))
    model, optimizer = make_model(phase)
    name = phase["name"]
    clock = StepClock(run_dir, name, rank)
    env = paceline_env(phase, rank=rank, world=world, shares=shares, speed=speed, schedule=schedule)
    result: dict[str, Any] = {}
    try:
        with Worker.from_env(model, optimizer, dataset, loss_fn=nn.CrossEntropyLoss(), env=env) as worker:
            address = worker.http_address
            assert address is not None
            write_json(run_dir / f"{name}.rank{rank}.port", address[1])
            for batch in worker.batches(max_steps=phase["max_steps"]):
                worker.step(batch)
                clock.tick()
            result = {
                "times": clock.times,
                "history": [h.to_json_dict() for h in worker.assignment_history],
                "final_shares": list(worker.assignment.batch_sizes),
                "loss": full_loss(model, dataset) if rank == 0 and phase["eval"] else None,
            }
    except SystemExit as stop:  # the runtime's clean stop after SIGTERM ends the phase, not the process
        if stop.code not in (0, None):
            raise
    return result


# ---------------------------------------------------------------------------------- plain DDP phase
class PadState:
    """State of the plain-DDP hook: when this step's compute began and how many samples it has."""

    def __init__(self, device: SimulatedDevice | None) -> None:
        self.device = device
        self.started_at = 0.0
        self.batch_size = 0


def padded_allreduce(state: PadState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """torch's default mean all-reduce; the simulated device sleeps before the last bucket (as Paceline's)."""
    if bucket.is_last() and state.device is not None:
        state.device.pad(started_at=state.started_at, batch_size=state.batch_size)
    return allreduce_hook(None, bucket)  # type: ignore[arg-type]


def run_ddp(phase: Phase, *, run_dir: Path, rank: int, shares: Sequence[int], schedule: str | None) -> dict:
    """Plain DDP with fixed shares, the same global sampler and simulated device as the Paceline runtime."""
    dataset = make_dataset(int(phase["samples"]))
    model, optimizer = make_model(phase)
    state = PadState(simulated_device(phase, rank, schedule))
    ddp = DistributedDataParallel(model)
    ddp.register_comm_hook(state, padded_allreduce)
    sampler = GlobalSampler(len(dataset), seed=int(phase["seed"]))
    loss_fn = nn.CrossEntropyLoss()
    clock = StepClock(run_dir, phase["name"], rank)
    stop_file = run_dir / f"{phase['name']}.stop"
    flag = torch.zeros(1)
    max_steps = phase["max_steps"]
    while max_steps is None or len(clock.times) < max_steps:
        if max_steps is None:  # time-limited: rank 0 decides when to stop, everyone learns it
            flag.fill_(1.0 if rank == 0 and stop_file.exists() else 0.0)
            dist.all_reduce(flag)
            if flag.item() > 0:
                break
        samples = sampler.next_step(shares, rank)
        index = torch.as_tensor(samples.indices, dtype=torch.long)
        inputs, targets = (tensor[index] for tensor in dataset.tensors)
        state.started_at, state.batch_size = time.perf_counter(), len(samples.indices)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(ddp(inputs), targets).backward()
        optimizer.step()
        clock.tick()
    return {
        "times": clock.times,
        "history": [],
        "final_shares": list(shares),
        "loss": full_loss(model, dataset) if rank == 0 and phase["eval"] else None,
    }


# ---------------------------------------------------------------------------------------- solo phase
def run_solo(phase: Phase, *, run_dir: Path, rank: int) -> dict[str, Any]:
    """Train alone (a one-process group of our own) on the whole global batch, once per schedule given."""
    store = run_dir / f"{phase['name']}.rank{rank}.store"
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=0, world_size=1, timeout=timedelta(seconds=60)
    )
    runs = []
    try:
        for i, schedule in enumerate(phase["schedules"][rank]):
            solo = {**phase, "name": f"{phase['name']}-r{rank}-{i}", "eval": False}
            speed = float(phase["speeds"][rank])
            out = run_paceline(
                solo, run_dir=run_dir, rank=0, world=1, shares=phase["shares"], speed=speed, schedule=schedule
            )
            runs.append({"schedule": schedule, "times": out["times"]})
    finally:
        dist.destroy_process_group()
    return {"runs": runs}


# ----------------------------------------------------------------------------------------------- main
def wait_for_phase(path: Path, parent: int) -> Phase:
    while not path.exists():
        if os.getppid() != parent:  # the driver is gone: do not linger
            raise SystemExit(1)
        time.sleep(POLL_S)
    phase: Phase = json.loads(path.read_text())
    return phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    run_dir: Path = args.dir
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    parent = os.getppid()
    try:
        for index in range(10_000):
            phase = wait_for_phase(run_dir / f"phase-{index}.json", parent)
            kind = phase["kind"]
            if kind == "quit":
                break
            if kind == "solo":
                result = run_solo(phase, run_dir=run_dir, rank=rank)
            else:
                if not dist.is_initialized():
                    dist.init_process_group(
                        "gloo",
                        init_method="env://",
                        rank=rank,
                        world_size=world,
                        timeout=timedelta(seconds=120),
                    )
                schedule = phase["schedules"][rank]
                shares = phase["shares"]
                if kind == "paceline":
                    speed = float(phase["speeds"][rank])
                    result = run_paceline(
                        phase,
                        run_dir=run_dir,
                        rank=rank,
                        world=world,
                        shares=shares,
                        speed=speed,
                        schedule=schedule,
                    )
                else:
                    result = run_ddp(phase, run_dir=run_dir, rank=rank, shares=shares, schedule=schedule)
            write_json(run_dir / f"{phase['name']}.rank{rank}.json", result)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # Every result is on disk: skip the interpreter's teardown, which takes seconds with torch loaded.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
