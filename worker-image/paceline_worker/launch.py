"""The pod's entry point: torchrun with one process (rank) per GPU, restarted in place when the job resizes.

    python -m paceline_worker.launch -- python train.py --epochs 5

torchrun reads its settings from the pod's environment, as with Kubeflow's PyTorchJob: PET_NNODES (pods),
PET_NODE_RANK (this pod), PET_NPROC_PER_NODE (GPUs of the pod), PET_MASTER_ADDR / PET_MASTER_PORT (pod 0).
Each rank gets torchrun's RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE. The user's command runs as given
(`--no-python`), so any script or module works.

Two processes: this supervisor, and torchrun's agent under it (`--agent`). With PACELINE_LAUNCHER_PORT
set, the supervisor serves `PUT /generation` (see wire.py): a newer generation stops the ranks
gracefully (SIGTERM: every rank stops at the same step and rank 0 checkpoints) and starts them again with the
new pods, order, assignment and plan — the pod itself survives. When the ranks fail (a peer's node was lost),
the supervisor waits up to PACELINE_RESIZE_GRACE_S for a new generation before giving up.

Exit code: the first failing rank's (a rank killed by signal N exits 128 + N, as a container would), so the
operator's restart policy still tells a bug (1-127) from a preemption or OOM kill (>= 128); 0 when all ranks
succeed; 128 + N when the launcher itself is stopped by signal N.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from prometheus_client import CollectorRegistry

from .control_auth import ControlAuth
from .http_server import HttpEndpoint, Response, Routes, common_routes
from .metrics import launcher_metrics
from .wire import (
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
    """torchrun's arguments for `command`; the rest comes from PET_* variables.

    torchrun expands `${local_rank}` in arguments with `string.Template`, which also turns `$$` into `$`;
    every `$` is doubled so the command runs exactly as written.
    """
    return ["--max-restarts=0", "--no-python", "--", *(arg.replace("$", "$$") for arg in command)]


def exit_code(failure_code: int) -> int:
    """A rank's exit code as a container reports it (negative = killed by that signal)."""
    return 128 - failure_code if failure_code < 0 else failure_code


def run_agent(command: Sequence[str]) -> int:
    """torchrun in this process; the first failing rank's exit code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

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

    def __init__(self, command: Sequence[str], first: Generation, *, grace_s: float) -> None:
        self.command = list(command)
        self.current = first
        self.grace_s = grace_s
        self.restarts = 0
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
            self._pending = generation
            if self._agent is not None and self._agent.poll() is None:
                self._agent.send_signal(signal.SIGTERM)
            self._changed.notify_all()
        log.info(
            "generation %d accepted (%d pods, this one %d)",
            generation.generation,
            generation.nnodes,
            generation.node_rank,
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
                "current": self.current.to_json_dict(),
            }

    def terminate(self, signum: int) -> None:
        with self._changed:
            self._terminated = True
            if self._agent is not None and self._agent.poll() is None:
                self._agent.send_signal(signum)
            self._changed.notify_all()

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.current.env()}
        argv = [sys.executable, "-m", "paceline_worker.launch", "--agent", "--", *self.command]
        log.info(
            "generation %d: starting ranks (pod %d of %d)",
            self.current.generation,
            self.current.node_rank,
            self.current.nnodes,
        )
        return subprocess.Popen(argv, env=env)

    def _take_pending(self, wait_s: float) -> Generation | None:
        with self._changed:
            if self._pending is None and not self._terminated and wait_s > 0:
                self._changed.wait_for(lambda: self._pending is not None or self._terminated, timeout=wait_s)
            pending, self._pending = self._pending, None
            return None if self._terminated else pending

    def run(self) -> int:
        while True:
            with self._changed:
                if self._terminated:
                    return 128 + signal.SIGTERM
                self._agent = self._start()
            code = self._agent.wait()
            nxt = self._take_pending(0 if code == 0 else self.grace_s)
            if nxt is None:
                if code and self.grace_s:
                    log.error("ranks exited with %d and no new generation came in %gs", code, self.grace_s)
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
    supervisor = Supervisor(
        command, generation_from_env(env), grace_s=float(env.get(Env.RESIZE_GRACE_S) or 0)
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
