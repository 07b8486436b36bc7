"""The pod's entry point: torchrun with one process (rank) per GPU, kept across resizes of the job.

    python -m paceline_worker.launch -- python train.py --epochs 5

The pod's place in the job comes from its environment, as with Kubeflow's PyTorchJob: PET_NNODES (pods),
PET_NODE_RANK (this pod), PET_NPROC_PER_NODE (GPUs of the pod), PET_MASTER_ADDR / PET_MASTER_PORT (pod 0).
torchrun runs the pod's ranks as a single-node group (a local rendezvous on loopback); each rank starts as
`paceline_worker.exec_rank`, which sets the job-wide RANK, WORLD_SIZE, MASTER_ADDR/MASTER_PORT (rank 0 hosts
the store) from the generation the launcher writes to PACELINE_GENERATION_FILE and then execs the user's
command as given (`--no-python`), so any script or module works. A Paceline `Worker` reads the generation
file itself and meets the other pods' ranks in Paceline's rendezvous (`paceline_worker.rendezvous`).

Two processes: this supervisor, and torchrun's agent under it (`--agent`). With PACELINE_LAUNCHER_PORT
set, the supervisor serves `PUT /generation` (see wire.py). A newer generation of a data-parallel job is
written to the generation file when every rank of the pod said it follows generations in place (a Paceline
`Worker`; see generation_file.follower_marker): the ranks keep running, join the new generation's rendezvous
while they train, and switch at one step boundary once every rank of the new world (including those of pods
that are still starting) is there. Otherwise (modules split by the plan, or a command that reads its rank
from the environment once) the ranks stop gracefully (SIGTERM: a Paceline `Worker` stops every rank at the
same step and rank 0 checkpoints) and start again with the new pods, order, assignment and plan. Either way
the pod itself survives. When the ranks exit 75 (EXIT_TEMPORARY_FAILURE: a peer was lost abruptly, e.g. its
node), the supervisor restarts them with the newest generation, waiting up to PACELINE_RESIZE_GRACE_S for
one; any other failure is the pod's own and ends it at once.

Exit code: the first failing rank's (a rank killed by signal N exits 128 + N, as a container would), so the
operator's restart policy still tells a bug (1-127) from a preemption or OOM kill (>= 128); 0 when all ranks
succeed; 128 + N when the launcher itself is stopped by signal N.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from .control_auth import ControlAuth
from .generation_file import followers, regroups_in_place, write_generation
from .http_server import HttpEndpoint, Response, Routes, common_routes
from .metrics import launcher_metrics
from .signals import exit_with_parent
from .wire import (
    EXIT_TEMPORARY_FAILURE,
    LAUNCHER_PORT,
    Env,
    Generation,
    GenerationError,
    Route,
    generation_from_env,
    parse_generation,
)

log = logging.getLogger("paceline_worker.launch")

USAGE = "usage: python -m paceline_worker.launch [--] COMMAND [ARGS...]"


def torchrun_args(command: Sequence[str]) -> list[str]:
    """torchrun's arguments for `command`: the pod's ranks as one local group (PET_NPROC_PER_NODE of them);
    the ranks meet the other pods' in Paceline's rendezvous, so a pod can join or leave without restarting.

    torchrun expands `${local_rank}` in arguments with `string.Template`, which also turns `$$` into `$`;
    every `$` is doubled so the command runs exactly as written.
    """
    local = ["--nnodes=1", "--node-rank=0", "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0"]
    rank = [sys.executable, "-m", "paceline_worker.exec_rank", "--"]  # the job-wide RANK, WORLD_SIZE, ...
    return [
        *local,
        f"--rdzv-id={uuid.uuid4().hex}",
        "--max-restarts=0",
        "--no-python",
        "--",
        *rank,
        *(arg.replace("$", "$$") for arg in command),
    ]


def exit_code(failure_code: int) -> int:
    """A rank's exit code as a container reports it (negative = killed by that signal)."""
    return 128 - failure_code if failure_code < 0 else failure_code


def run_agent(command: Sequence[str]) -> int:
    """torchrun in this process; the first failing rank's exit code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    exit_with_parent()  # the agent goes with the supervisor (and the ranks with the agent)
    if os.environ.get("PACELINE_LOCAL_RUNTIME"):
        # Local cluster: torchrun's agent looks up its host name for logs and error reports; answer without a
        # resolver so nothing can reach a DNS server (the local cluster contacts loopback addresses only).
        socket.getfqdn = lambda name="": name or socket.gethostname()
    try:
        run(parse_args(torchrun_args(command)))
    except ChildFailedError as failed:
        rank, failure = failed.get_first_failure()
        code = exit_code(failure.exitcode)
        log.error("rank %d failed with exit code %d", rank, code)
        return code
    except SignalException as stopped:
        return 128 + int(stopped.sigval)
    return 0


class Supervisor:
    """Runs the agent for the current generation; restarts it for a newer one; forwards SIGTERM."""

    def __init__(
        self,
        command: Sequence[str],
        first: Generation,
        *,
        grace_s: float,
        workdir: Path,
        local_ranks: int = 1,
    ) -> None:
        self.command = list(command)
        self.current = first
        self.grace_s = grace_s
        self.restarts = 0
        self.handed_over = 0  # generations written to the running ranks (no restart)
        self.generation_file = workdir / "generation.json"
        self.local_ranks = local_ranks
        self._started = first.generation  # the generation the running ranks were started with
        self._pending: Generation | None = None
        self._agent: subprocess.Popen[bytes] | None = None
        self._terminated = False
        self._changed = threading.Condition()

    def offer(self, generation: Generation) -> tuple[HTTPStatus, dict[str, Any]]:
        """Accept a newer generation: stop the running ranks gracefully; the loop starts the new ones."""
        with self._changed:
            newest = self._pending or self.current
            if generation.generation <= newest.generation:
                return HTTPStatus.CONFLICT, {
                    "error": f"generation {generation.generation} is not newer than {newest.generation}"
                }
            running = self._agent is not None and self._agent.poll() is None
            following = followers(self.generation_file) >= self.local_ranks
            if (
                running
                and following
                and self._pending is None
                and regroups_in_place(self.current, generation)
            ):
                write_generation(self.generation_file, generation)
                self.current = generation
                self.handed_over += 1
                how = "handed to the running ranks"
            else:
                self._pending = generation
                if running:
                    assert self._agent is not None
                    self._agent.send_signal(signal.SIGTERM)
                how = "the ranks restart"
            self._changed.notify_all()
        log.info(
            "generation %d accepted (%d pods, this one %d): %s",
            generation.generation,
            generation.nnodes,
            generation.node_rank,
            how,
        )
        return HTTPStatus.ACCEPTED, {"result": "accepted", "generation": generation.generation}

    def status(self) -> dict[str, Any]:
        with self._changed:
            running = self._agent is not None and self._agent.poll() is None
            return {
                "generation": self.current.generation,
                "pending": None if self._pending is None else self._pending.generation,
                "running": running,
                "restarts": self.restarts,
                "handedOver": self.handed_over,
                "current": self.current.to_json_dict(),
            }

    def terminate(self, signum: int) -> None:
        with self._changed:
            self._terminated = True
            if self._agent is not None and self._agent.poll() is None:
                self._agent.send_signal(signum)
            self._changed.notify_all()

    def _start(self) -> subprocess.Popen[bytes]:
        shutil.rmtree(self.generation_file.parent / "followers", ignore_errors=True)  # new ranks say it anew
        write_generation(self.generation_file, self.current)
        self._started = self.current.generation
        env = {**os.environ, **self.current.env(), Env.GENERATION_FILE: str(self.generation_file)}
        argv = [sys.executable, "-m", "paceline_worker.launch", "--agent", "--", *self.command]
        log.info(
            "generation %d: starting ranks (pod %d of %d)",
            self.current.generation,
            self.current.node_rank,
            self.current.nnodes,
        )
        return subprocess.Popen(argv, env=env)

    def _next_generation(self, code: int) -> Generation | None:
        """What to restart the ranks with after they ended with `code`: a generation that asked for a
        restart; when a peer was lost (EXIT_TEMPORARY_FAILURE), one handed to the ranks meanwhile, else one
        that comes within the grace. Any other failure is the pod's own: no restart, the pod fails."""
        with self._changed:
            peer_lost = code == EXIT_TEMPORARY_FAILURE
            if self._pending is None and peer_lost and self.current.generation > self._started:
                return None if self._terminated else self.current
            if self._pending is None and not self._terminated and peer_lost and self.grace_s > 0:
                self._changed.wait_for(
                    lambda: self._pending is not None or self._terminated, timeout=self.grace_s
                )
            pending, self._pending = self._pending, None
            return None if self._terminated else pending

    def run(self) -> int:
        while True:
            with self._changed:
                if self._terminated:
                    return 128 + signal.SIGTERM
                self._agent = self._start()
            code = self._agent.wait()
            nxt = self._next_generation(code)
            if nxt is None:
                if self._terminated:
                    log.info("ranks exited with %d after the pod was stopped", code)
                elif code == EXIT_TEMPORARY_FAILURE and self.grace_s:
                    log.error("a peer was lost and no new generation came in %gs", self.grace_s)
                return code
            log.info(
                "generation %d ended with %d; restarting in place as generation %d",
                self.current.generation,
                code,
                nxt.generation,
            )
            self.current = nxt
            self.restarts += 1


def generation_routes(supervisor: Supervisor) -> Routes:
    """GET /generation (what runs), PUT /generation (resize in place)."""

    def get(query: dict[str, str], body: bytes) -> Response:
        return Response.json(HTTPStatus.OK, supervisor.status())

    def put(query: dict[str, str], body: bytes) -> Response:
        try:
            generation = parse_generation(body)
        except GenerationError as exc:
            return Response.json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        return Response.json(*supervisor.offer(generation))

    return {("GET", Route.GENERATION): get, ("PUT", Route.GENERATION): put}


def launcher_metric_routes(registry: CollectorRegistry) -> Routes:
    """GET /metrics and /healthz of the launcher (its refused control writes)."""
    return {key: route for key, route in common_routes(registry, dict).items() if key[1] != Route.STATUS}


def supervise(command: Sequence[str]) -> int:
    """The supervisor: serve PUT /generation (when PACELINE_LAUNCHER_PORT is set) and run the agent."""
    env = os.environ
    workdir = Path(tempfile.mkdtemp(prefix="paceline-launch-"))
    supervisor = Supervisor(
        command,
        generation_from_env(env),
        grace_s=float(env.get(Env.RESIZE_GRACE_S) or 0),
        workdir=workdir,
        local_ranks=int(env.get(Env.NPROC_PER_NODE) or 1),
    )
    server = None
    if env.get(Env.LAUNCHER_PORT):
        host = env.get("PACELINE_BIND_ADDRESS") or env.get(Env.POD_IP) or "127.0.0.1"
        port = int(env.get(Env.LAUNCHER_PORT) or LAUNCHER_PORT)
        registry, refused = launcher_metrics(env.get(Env.JOB, "local"))
        auth = ControlAuth.from_env(env, on_refused=refused, who="the launcher")
        routes = {**generation_routes(supervisor), **launcher_metric_routes(registry)}
        server = HttpEndpoint(routes, host=host, port=port, auth=auth).start()
        log.info("launcher serving http://%s:%d%s", *server.address, Route.GENERATION)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda s, _f: supervisor.terminate(s))
    try:
        return supervisor.run()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    agent = args[:1] == ["--agent"]
    args = args[1:] if agent else args
    if args[:1] == ["--"]:
        args = args[1:]
    if not args or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s launcher %(levelname)s %(message)s")
    return run_agent(args) if agent else supervise(args)


if __name__ == "__main__":
    sys.exit(main())
