"""The Worker: a model, optimiser and dataset in a DDP training loop with live, versioned batch shares."""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Iterator, Mapping, MutableMapping
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from .assignment import (
    MAX_LANE_RANKS,
    ControlMessage,
    control_vector_length,
    decode_control,
    encode_control,
    from_lanes,
    to_lanes,
)
from .assignment_store import AppliedVersion, AssignmentStore
from .checkpoint import load_checkpoint, save_checkpoint
from .config import WorkerConfig, config_from_env
from .core import ComputeLoss, Loss, LossFn, RuntimeCore, configure_logging
from .data import Batch, collate_indices, to_device
from .execution_plan import PlanError
from .generation_file import GenerationFile, regroups_in_place
from .gradient_sync import GradientSync, sum_allreduce_hook
from .http_server import assignment_routes
from .membership import Membership, peer_lost
from .metrics import StepTiming, WorkerMetrics
from .rendezvous import Rendezvous, RendezvousError
from .sampler import GlobalSampler
from .tensor_parallel import (
    apply_plan,
    broadcast_module,
    build_mesh,
    check_module,
    full_optimizer_state,
    full_tensors,
    local_gradients,
    placements,
    sum_across,
)
from .termination import write_termination_message
from .wire import (
    EXIT_TEMPORARY_FAILURE,
    Assignment,
    AssignmentError,
    Generation,
    assignment_from_mapping,
)

log = logging.getLogger(__name__)

RETRY_S = 0.2  # before joining a rendezvous again after it failed
PATIENCE_S = 5.0  # a generation's rendezvous may form this long before a newer generation replaces it


class Worker:
    """One rank of a Paceline training job.

    Use as a context manager: entering joins the process group, resumes from a checkpoint if one exists and
    starts the HTTP endpoint; leaving tears everything down (and exits 0 after a SIGTERM stop).
    `loss_fn(outputs, targets)` (or `compute_loss(model, data)`) must return the MEAN loss over the given
    batch, as PyTorch losses do by default; the worker re-weights it so that the all-reduced gradient is the
    gradient of the mean loss over the global batch.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        dataset: Dataset[Any],
        config: WorkerConfig,
        loss_fn: LossFn | None = None,
        compute_loss: ComputeLoss | None = None,
        shuffle: bool = True,
        fixed_global_batch: bool = True,
        ddp_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.topology = config.topology
        if config.assignment.world_size != self.topology.workers:
            raise ValueError("the assignment's batchSizes must have one entry per pod")
        self.core = RuntimeCore(
            config=config,
            module=model,
            dataset=dataset,
            loss=Loss(loss_fn, compute_loss),
            metrics_rank=self.topology.worker,
        )
        self.config = config
        self.module = model
        self.optimizer = optimizer
        self.dataset = dataset
        self._ddp_kwargs = dict(ddp_kwargs or {})
        self.sampler = GlobalSampler(len(dataset), seed=config.seed, shuffle=shuffle)  # type: ignore[arg-type]
        self.store = AssignmentStore(
            config.assignment,
            rank=config.rank,
            fixed_global_batch=fixed_global_batch,
            extra_validation=self._check_optimizer_supports,
        )
        self.ddp: DistributedDataParallel | None = None
        self._wrapped: nn.Module | None = None  # DDP, or the tensor-parallel module (own gradient sum)
        self._data_group: dist.ProcessGroup | None = None
        self._worker_samples = 0
        self.global_step = 0
        self.group_started_at_step = 0  # the step the current process group (generation) started from
        self.stopped_by_signal = False
        self.last_timing: StepTiming | None = None
        self._sync = GradientSync(simulation=None, device=self.device)
        self._control: torch.Tensor | None = None
        self._boundary_seconds = 0.0
        self._data_seconds = 0.0
        self._backward_done_at = 0.0
        self._pending_batch: Batch | None = None
        self._last_loss: float | None = None
        self._expecting_step = False
        self._owns_process_group = False
        self._backend = "gloo"
        self._live_state = False
        self._membership: Membership | None = None  # launched by Paceline's launcher: follows generations
        self._rendezvous: Rendezvous | None = None  # the current group's (keeps its store alive)
        self._next: Rendezvous | None = None  # the next generation's, joined while training goes on

    # ----------------------------------------------------------------------------------------------- set-up
    @classmethod
    def from_env(
        cls,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        dataset: Dataset[Any],
        *,
        default_batch_size: int | None = None,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Worker:
        """Build a worker from the operator's (or torchrun's) environment; see docs/worker.md. `options`
        are the constructor's (loss_fn= or compute_loss=, shuffle=, ...)."""
        environ: MutableMapping[str, str] = os.environ if env is None else dict(env)
        generations = GenerationFile.from_env(environ)
        membership = None
        if generations is not None:  # under the launcher (exec_rank already tied this rank to its agent)
            membership = Membership(generations, generations.newest(), environ, default_batch_size)
            environ.update(membership.rank_env(membership.generation))
        config = config_from_env(environ, default_batch_size=default_batch_size)
        configure_logging(config.rank)
        worker = cls(model=model, optimizer=optimizer, dataset=dataset, config=config, **options)
        worker._membership = membership
        return worker

    def __enter__(self) -> Worker:
        try:
            self.start()
        except BaseException:
            self.close(clean=False)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(clean=exc_type is None)
        if exc_type is None and self.stopped_by_signal:
            log.info("rank %d: preempted at step %d; exiting 0", self.rank, self.global_step)
            raise SystemExit(0)
        membership = self._membership
        if exc is not None and membership is not None and membership.grace_s > 0 and peer_lost(exc):
            log.error(
                "rank %d: a peer was lost (%s); exiting %d: the launcher waits for the next generation",
                self.rank,
                str(exc).splitlines()[0][:200],
                EXIT_TEMPORARY_FAILURE,
            )
            raise SystemExit(EXIT_TEMPORARY_FAILURE) from exc

    @property
    def metrics(self) -> WorkerMetrics:
        return self.core.metrics

    @property
    def device(self) -> torch.device:
        return self.core.device

    def start(self) -> None:
        cfg = self.config
        self.core.stop.install()
        if cfg.plan.hybrid:
            try:  # a plan made for another model fails here, before any collective
                check_module(self.module, cfg.plan)
            except PlanError as exc:
                write_termination_message(f"InvalidModel: {exc}")
                raise
        device, self._backend = pick_device(cfg)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        self.core.use_device(device)
        if cfg.local_rank == 0:
            # One endpoint per pod. Serve first: a taken port fails before the rendezvous, and the pod is
            # observable while it waits.
            host, port = self.core.serve(assignment_routes(self.store, self._status), self._status)
            log.info("rank %d serving http://%s:%d/metrics and /assignment", cfg.rank, host, port)
        if self._membership is not None:
            rendezvous = self._meet(self._membership.newest(), timeout_s=cfg.process_group_timeout_s)
            if rendezvous is None:
                log.info("rank %d: stopped while waiting for its group; exiting 0", cfg.rank)
                raise SystemExit(0)
            self._enter_group(rendezvous)
            return
        if not dist.is_initialized():
            os.environ.setdefault("MASTER_ADDR", cfg.master_addr)
            os.environ.setdefault("MASTER_PORT", str(cfg.master_port))
            dist.init_process_group(
                backend=self._backend,
                init_method="env://",
                rank=cfg.rank,
                world_size=cfg.world_size,
                timeout=timedelta(seconds=cfg.process_group_timeout_s),
            )
            self._owns_process_group = True
        self._enter_group()

    def _enter_group(self, rendezvous: Rendezvous | None = None) -> None:
        """Set up training in the current process group, or in the one `rendezvous` forms (a regroup)."""
        if rendezvous is not None:
            self._adopt(rendezvous.generation)
            cfg = self.config
            dist.init_process_group(
                backend=self._backend,
                store=rendezvous.store(),
                rank=cfg.rank,
                world_size=cfg.world_size,
                timeout=timedelta(seconds=cfg.process_group_timeout_s),
            )
            self._owns_process_group = True
            self._rendezvous = rendezvous
        cfg = self.config
        self._resume()
        self._apply_hyperparameters(self.store.current)
        mine = self.topology.data_batch_sizes(self.store.current.batch_sizes)[self.topology.data_rank]
        simulation = self.core.simulated_device(batch_size=mine or 1, agree=self._agree_max)
        self._sync = GradientSync(simulation=simulation, device=self.device)
        if cfg.plan.hybrid:
            self._split_modules()
        else:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.module, device_ids=device_ids, **self._ddp_kwargs)
            self.ddp.register_comm_hook(self._sync, sum_allreduce_hook)
            self._wrapped = self.ddp
        self._control = torch.zeros(
            control_vector_length(self.topology.workers), dtype=torch.float64, device=self.device
        )
        self._live_state = not cfg.plan.hybrid  # this process's model now is the group's
        self.group_started_at_step = self.global_step
        if self._membership is not None and self._membership.in_place(cfg):
            self._membership.announce()
        self._observe_assignment(self.store.current, self.global_step, time.time())
        log.info(
            "rank %d/%d (%s) ready at step %d, assignment version %d%s",
            cfg.rank,
            cfg.world_size,
            self._backend,
            self.global_step,
            self.store.current.version,
            "" if rendezvous is None else f", generation {rendezvous.generation.generation}",
        )

    def _adopt(self, generation: Generation) -> None:
        """Become this process's rank of `generation`: rank, world, assignment, metrics label."""
        membership = self._membership
        assert membership is not None
        if generation == membership.generation:
            return
        membership.environ.update(membership.rank_env(generation))
        config = config_from_env(membership.environ, default_batch_size=membership.default_batch_size)
        if config.assignment.world_size != config.topology.workers:
            raise ValueError(f"generation {generation.generation}: the assignment needs one entry per pod")
        self.config, self.topology = config, config.topology
        membership.generation = generation
        self.store.reset(config.assignment, rank=config.rank)
        self.core.reconfigure(config, metrics_rank=self.topology.worker)

    def _leave_group(self) -> None:
        """Drop the process group and everything bound to it (DDP's reducer hooks the parameters)."""
        self.ddp = self._wrapped = self._data_group = self._control = None
        gc.collect()
        if self._owns_process_group and dist.is_initialized():
            dist.destroy_process_group()
        self._owns_process_group = False
        if self._rendezvous is not None:
            self._rendezvous.close()
            self._rendezvous = None

    def _meet(self, generation: Generation, *, timeout_s: float) -> Rendezvous | None:
        """Join `generation`'s rendezvous and wait for all its ranks, following a newer generation the
        launcher hands over meanwhile once this one had `PATIENCE_S` to form (ranks that are all alive form
        it within a second, then train while the newer one's new pods start); None when this rank was
        stopped (SIGTERM) while waiting."""
        membership = self._membership
        assert membership is not None
        deadline = time.monotonic() + timeout_s
        while True:
            rendezvous = membership.rendezvous(generation, self.config).start()
            patience = time.monotonic() + PATIENCE_S

            def superseded(number: int = generation.generation, patience: float = patience) -> bool:
                if self.core.stop.requested:
                    return True
                return time.monotonic() > patience and membership.generations.newer_than(number) is not None

            try:
                met = rendezvous.wait(timeout_s=max(0.0, deadline - time.monotonic()), abort=superseded)
            except RendezvousError as exc:  # e.g. its rank 0 left it for a newer generation
                rendezvous.close()
                if time.monotonic() >= deadline:
                    raise
                log.info("rank %d: %s; joining again", self.rank, exc)
                time.sleep(RETRY_S)
                generation = membership.newest()
                continue
            except BaseException:
                rendezvous.close()
                raise
            if met:
                return rendezvous
            rendezvous.close()
            if self.core.stop.requested:
                return None
            generation = membership.newest()
            log.info("rank %d: generation %d came in; joining it instead", self.rank, generation.generation)

    def _split_modules(self) -> None:
        """Data parallel across pods, the plan's tensor-parallel splits inside each pod."""
        plan = self.config.plan
        mesh = build_mesh(self.topology, self.device.type)
        broadcast_module(self.module)
        apply_plan(self.module, plan, mesh, self.optimizer)
        self._data_group = mesh["dp"].get_group()
        self._wrapped = self.module
        layout = placements(self.module, [s.module for s in plan.modules])
        log.info(
            "rank %d: tensor parallel %d (rank %d of its group), data parallel %d; split modules: %s",
            self.rank,
            plan.tensor_parallel,
            self.topology.tensor_rank,
            self.topology.data_parallel_size,
            ", ".join(
                f"{name} {s.style} -> {layout[name]}" for name, s in ((s.module, s) for s in plan.modules)
            ),
        )

    def close(self, *, clean: bool = True) -> None:
        """Stop the HTTP endpoint and leave the process group."""
        self.core.close()
        if self._next is not None:
            self._next.close()
            self._next = None
        if self._owns_process_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_process_group = False
        if self._rendezvous is not None:
            self._rendezvous.close()
            self._rendezvous = None

    # ---------------------------------------------------------------------------------------------- training
    @property
    def rank(self) -> int:
        return self.config.rank

    @property
    def world_size(self) -> int:
        return self.config.world_size

    @property
    def assignment(self) -> Assignment:
        return self.store.current

    @property
    def assignment_history(self) -> list[AppliedVersion]:
        """Each version switch: its version, the first step that used it and the wall-clock time."""
        return self.store.history

    @property
    def epoch(self) -> int:
        return self.sampler.state.epoch

    @property
    def http_address(self) -> tuple[str, int] | None:
        return self.core.http_address

    @property
    def model(self) -> nn.Module:
        """The module to call in the training loop (DDP-wrapped, or split by the plan)."""
        if self._wrapped is None:
            raise RuntimeError("the worker is not started; use `with Worker.from_env(...) as w:`")
        return self._wrapped

    def module_placements(self) -> dict[str, str]:
        """How this rank actually holds each planned module's weight, e.g. {"fc1": "shard(0)/2"}."""
        return placements(self.module, [s.module for s in self.config.plan.modules])

    def batches(self, *, epochs: int | None = None, max_steps: int | None = None) -> Iterator[Batch]:
        """Yield this rank's batch of every global step; call `step(batch)` on each before the next.

        Stops after `epochs` epochs or `max_steps` steps (counted from step 0, so a resumed run does not redo
        work), or when any rank received SIGTERM; then `stopped_by_signal` is set and rank 0 has checkpointed.
        """
        self.model  # noqa: B018  (raises if not started)
        while (epochs is None or self.epoch < epochs) and (max_steps is None or self.global_step < max_steps):
            if self._expecting_step:
                raise RuntimeError("call step(batch) (or forward_backward + optimizer_step) for every batch")
            started = time.perf_counter()
            message = self._exchange_control()
            if message.stop_requested or message.regroup_generation is not None:
                if not self._change_group(message):
                    return
                continue
            self._boundary_seconds = time.perf_counter() - started
            assignment = self.store.current
            sizes = self.topology.data_batch_sizes(assignment.batch_sizes)
            samples = self.sampler.next_step(sizes, self.topology.data_rank)
            self._worker_samples = sum(samples.counts[g] for g in self.topology.worker_groups())
            data = to_device(collate_indices(self.dataset, samples.indices), self.device)
            self._data_seconds = time.perf_counter() - started - self._boundary_seconds
            self._expecting_step = True
            yield Batch(
                step=self.global_step,
                epoch=samples.epoch,
                indices=samples.indices,
                global_batch_size=samples.global_batch_size,
                data=data,
            )

    def step(self, batch: Batch) -> float:
        """Forward, backward (gradients all-reduced), optimiser update; returns this rank's mean loss."""
        loss = self.forward_backward(batch)
        self.optimizer_step()
        return loss

    def forward_backward(self, batch: Batch) -> float:
        """Compute the sample-weighted loss and its globally averaged gradient (left in .grad)."""
        model = self.model
        self.optimizer.zero_grad(set_to_none=True)
        self._sync.begin_step(batch_size=batch.size)
        loss = self.core.loss(model, batch.data)
        if self._wrapped is self.ddp and self.world_size <= MAX_LANE_RANKS:  # the control rides along
            self._sync.outgoing = to_lanes(self._control_values())
        # Sample weighting: rank m contributes b_m/B of its mean loss, and the hook sums over ranks. An empty
        # batch has weight 0 (its mean is NaN, but its gradient is a sum over no samples, i.e. zero).
        (loss * (batch.size / batch.global_batch_size)).backward()
        self._sync.outgoing = None  # not carried (no bucket reduced): the boundary exchanges it itself
        if self._wrapped is not self.ddp:
            self._sync.on_last_bucket()
            grads = local_gradients(self.module.parameters())
            if self.topology.data_parallel_size > 1:
                sum_across(grads, self._data_group)
        self._backward_done_at = time.perf_counter()
        self._pending_batch = batch
        self._last_loss = float(loss.detach()) if batch.size else None
        return float("nan") if self._last_loss is None else self._last_loss

    def optimizer_step(self) -> None:
        """Apply the update, record the step's metrics and checkpoint periodically."""
        started = time.perf_counter()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        finished = time.perf_counter()
        batch = self._pending_batch
        if batch is None:
            raise RuntimeError("optimizer_step() needs a preceding forward_backward(batch)")
        self._pending_batch = None
        local = self._sync.local_compute_seconds(self._backward_done_at)
        backward_wall = self._backward_done_at - self._sync.compute_started_at
        self.last_timing = StepTiming(
            data=self._data_seconds,
            compute=local + (finished - started),
            communication=self._boundary_seconds + max(0.0, backward_wall - local),
        )
        self._expecting_step = False
        self.global_step += 1
        self.metrics.observe_step(
            timing=self.last_timing, samples=self._worker_samples, loss=self._last_loss, epoch=batch.epoch
        )
        if self._sync.simulation is not None:
            self.metrics.observe_simulation(self._sync.simulation.last_factor)
        interval = self.config.checkpoint_interval_steps
        if interval and self.global_step % interval == 0:
            self.checkpoint()

    def train(self, *, epochs: int | None = None, max_steps: int | None = None, log_every: int = 50) -> int:
        """Run the loop; returns the number of completed steps."""
        for batch in self.batches(epochs=epochs, max_steps=max_steps):
            loss = self.step(batch)
            if log_every and self.rank == 0 and self.global_step % log_every == 0:
                log.info("step %d epoch %d loss %.4f", self.global_step, batch.epoch, loss)
        return self.global_step

    # ------------------------------------------------------------------------------------------ assignment
    def _control_values(self) -> list[float]:
        """This rank's part of the next boundary's control vector."""
        announced = self.store.take_for_next_step() if self.rank == 0 else None
        following = self._follow_generations()
        return encode_control(
            announced,
            stop=self.core.stop.requested,
            world_size=self.topology.workers,
            ready_generation=following.generation.generation if following and following.complete else None,
        )

    def _exchange_control(self) -> ControlMessage:
        """At a step boundary everyone learns rank 0's assignment, whether any rank must stop, and whether
        the next generation's rendezvous is complete (then all switch to it at this boundary). After a
        data-parallel step the vector came with the gradients (`gradient_sync`); else one all-reduce here."""
        assert self._control is not None
        received, self._sync.received = self._sync.received, None
        if received is not None:
            summed = from_lanes(received.tolist(), world_size=self.topology.workers)
        else:
            self._control.copy_(torch.tensor(self._control_values(), dtype=torch.float64))
            dist.all_reduce(self._control, op=dist.ReduceOp.SUM)
            summed = self._control.tolist()
        message = decode_control(summed)
        if message.stop_requested or message.regroup_generation is not None:
            return message
        record = self.store.apply(message.assignment, step=self.global_step)
        if record is not None:
            self._apply_hyperparameters(message.assignment)
            self._observe_assignment(message.assignment, record.step, record.applied_at)
            latency = (
                ""
                if record.received_at is None
                else f", {record.applied_at - record.received_at:.3f}s after PUT"
            )
            log.info(
                "rank %d: assignment version %d applied at step %d, batch sizes %s%s",
                self.rank,
                record.version,
                record.step,
                list(message.assignment.batch_sizes),
                latency,
            )
        return message

    def _follow_generations(self) -> Rendezvous | None:
        """Join the rendezvous of a newer generation the launcher handed over (without waiting for it)."""
        membership = self._membership
        if membership is None or not membership.in_place(self.config):
            return None
        newer = membership.generations.newer_than(membership.generation.generation)
        if self._next is not None and (newer is None or self._next.generation != newer or self._next.failed):
            self._next.close()
            self._next = None
        if newer is not None and self._next is None and regroups_in_place(membership.generation, newer):
            log.info("rank %d: joining generation %d while training", self.rank, newer.generation)
            self._next = membership.rendezvous(newer, self.config).start()
        return self._next

    def _change_group(self, message: ControlMessage) -> bool:
        """Every rank at the same boundary: a stop, or a switch to the next generation. Rank 0 checkpoints;
        ranks that go on leave this group and form the next one. False when this rank's training ends here."""
        membership = self._membership
        if message.stop_requested:
            log.info("rank %d: stop requested; stopping before step %d", self.rank, self.global_step)
        self.checkpoint()
        dist.barrier()  # rank 0's checkpoint is on disk before any rank leaves
        peer_stopped = message.stop_requested and not self.core.stop.requested
        if message.stop_requested and not (peer_stopped and membership and membership.in_place(self.config)):
            self.stopped_by_signal = True
            return False
        assert membership is not None
        rendezvous, self._next = self._next, None
        self._leave_group()
        if rendezvous is None or rendezvous.generation.generation != message.regroup_generation:
            if rendezvous is not None:
                rendezvous.close()
            rendezvous = self._await_generation(membership)
            if rendezvous is None:
                self.stopped_by_signal = True
                return False
        log.info(
            "rank %d: switching to generation %d at step %d",
            self.rank,
            rendezvous.generation.generation,
            self.global_step,
        )
        self._enter_group(rendezvous)
        return True

    def _await_generation(self, membership: Membership) -> Rendezvous | None:
        """After the group stopped without this rank's own SIGTERM (a peer's pod is going): wait for the
        operator's next generation and meet it. None when this rank was stopped meanwhile."""
        log.info(
            "rank %d: the group stopped; waiting up to %gs for the next generation",
            self.rank,
            membership.grace_s,
        )
        generation = membership.generations.wait_newer(
            membership.generation.generation,
            timeout_s=membership.grace_s,
            abort=lambda: self.core.stop.requested,
        )
        if generation is None and not self.core.stop.requested:
            raise RuntimeError(f"no generation came within {membership.grace_s:g}s after the group stopped")
        return None if generation is None else self._meet(generation, timeout_s=membership.grace_s)

    def _apply_hyperparameters(self, assignment: Assignment) -> None:
        for group in self.optimizer.param_groups:
            if assignment.learning_rate is not None:
                group["lr"] = assignment.learning_rate
            if assignment.momentum is not None:
                if "momentum" in group:
                    group["momentum"] = assignment.momentum
                elif "betas" in group:
                    group["betas"] = (assignment.momentum, group["betas"][1])

    def _check_optimizer_supports(self, assignment: Assignment) -> None:
        if assignment.momentum is not None and not any(
            "momentum" in g or "betas" in g for g in self.optimizer.param_groups
        ):
            raise AssignmentError(
                f"{type(self.optimizer).__name__} has no momentum to set; send momentum: null"
            )

    def _observe_assignment(self, assignment: Assignment, step: int, applied_at: float) -> None:
        self.metrics.observe_assignment(
            version=assignment.version,
            batch_size=assignment.batch_sizes[self.topology.worker],
            global_batch_size=assignment.global_batch_size,
            step=step,
            applied_at=applied_at,
        )

    def _status(self) -> dict[str, Any]:
        return {
            "worldSize": self.world_size,
            "localWorldSize": self.topology.local_world_size,
            "tensorParallel": self.topology.tensor_parallel,
            "placements": self.module_placements() if self._wrapped is not None else {},
            "step": self.global_step,
            "epoch": self.epoch,
        }

    # ------------------------------------------------------------------------------------- checkpoint/resume
    def checkpoint(self) -> Path | None:
        """Rank 0 writes model, optimiser, sampler, assignment and step, all as full (unsplit) tensors.

        Call it on every rank: with tensor-parallel modules the full tensors are gathered collectively.
        """
        if self.config.checkpoint_dir is None:
            return None
        split = self.config.plan.hybrid and self._wrapped is not None
        if self.rank != 0 and not split:
            return None
        state = self._training_state(split=split)
        if self.rank != 0:
            return None
        path = save_checkpoint(self.config.checkpoint_dir, state)
        log.info("rank 0: checkpoint at step %d written to %s", self.global_step, path)
        return path

    def _training_state(self, *, split: bool) -> dict[str, Any]:
        """What a checkpoint holds; with split modules the full tensors are gathered (a collective)."""
        model_state = full_tensors(self.module.state_dict()) if split else self.module.state_dict()
        optimizer_state = full_optimizer_state(self.optimizer) if split else self.optimizer.state_dict()
        pending = self.store.pending
        return {
            "step": self.global_step,
            "model": model_state,
            "optimizer": optimizer_state,
            "sampler": self.sampler.state_dict(),
            "assignment": self.store.current.to_json_dict(),
            "pending": None if pending is None else pending.to_json_dict(),
        }

    def _resume(self) -> None:
        """Rank 0 shares the state to start from, so only rank 0 needs the volume: its own live state when it
        trained in the previous group (a regroup in place), else the checkpoint (if any)."""
        state: dict[str, Any] | None = None
        if self.rank == 0 and self._live_state:
            state = self._training_state(split=False)
        elif self.rank == 0 and self.config.checkpoint_dir is not None:
            state = load_checkpoint(self.config.checkpoint_dir)
        box: list[Any] = [state]
        if self.world_size > 1:
            dist.broadcast_object_list(box, src=0, device=self.device)
        state = box[0]
        if state is None:
            return
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.global_step = int(state["step"])
        saved = self._saved_assignment(state["assignment"])
        pending = self._saved_assignment(state["pending"])
        env_assignment = self.config.assignment
        if saved is not None and saved.version >= env_assignment.version:
            self.store.restore(saved, pending)
        else:
            self.store.restore(env_assignment, pending)
        log.info(
            "rank %d: resumed at step %d (epoch %d, cursor %d), assignment version %d",
            self.rank,
            self.global_step,
            self.sampler.state.epoch,
            self.sampler.state.cursor,
            self.store.current.version,
        )

    def _saved_assignment(self, data: Mapping[str, Any] | None) -> Assignment | None:
        if data is None:
            return None
        try:
            return assignment_from_mapping(data, world_size=self.topology.workers)
        except AssignmentError as exc:
            log.warning("ignoring the checkpoint's assignment (%s)", exc)
            return None

    def _agree_max(self, cost: float, speed: float) -> tuple[float, float]:
        """The group's largest calibrated cost and simulated speed (a collective: every rank calls it)."""
        agreed = torch.tensor([cost, speed], dtype=torch.float64, device=self.device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        max_cost, max_speed = agreed.tolist()
        return max_cost, max_speed


def pick_device(cfg: WorkerConfig) -> tuple[torch.device, str]:
    """This rank's device and the process-group backend.

    With CUDA, local rank r uses GPU r modulo the GPUs present; NCCL needs a GPU per rank, so ranks that
    share a GPU (more local ranks than GPUs) use gloo, which also moves CUDA tensors.
    """
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    if cfg.device == "cuda" and not cuda:
        raise RuntimeError("PACELINE_DEVICE=cuda but CUDA is not available")
    if not cuda:
        if cfg.backend == "nccl":
            raise RuntimeError("PACELINE_BACKEND=nccl needs CUDA; use gloo on CPU")
        return torch.device("cpu"), "gloo"
    count = torch.cuda.device_count()
    device = torch.device("cuda", cfg.local_rank % count)
    return device, cfg.backend or ("nccl" if count >= cfg.local_world_size else "gloo")
