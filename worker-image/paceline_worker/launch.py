"""The pod's entry point: torchrun with one process (rank) per GPU, keeping container exit-code semantics.

    python -m paceline_worker.launch -- python train.py --epochs 5

torchrun reads its settings from the pod's environment, as with Kubeflow's PyTorchJob: PET_NNODES (pods),
PET_NODE_RANK (this pod), PET_NPROC_PER_NODE (GPUs of the pod), PET_MASTER_ADDR / PET_MASTER_PORT (pod 0).
Each rank gets torchrun's RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE. The user's command runs as given
(`--no-python`), so any script or module works.

Exit code: the first failing rank's (a rank killed by signal N exits 128 + N, as a container would), so the
operator's restart policy still tells a bug (1-127) from a preemption or OOM kill (>= 128); 0 when all ranks
succeed; 128 + N when the launcher itself is stopped by signal N.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Sequence

log = logging.getLogger("paceline_worker.launch")

USAGE = "usage: python -m paceline_worker.launch [--] COMMAND [ARGS...]"


def torchrun_args(command: Sequence[str]) -> list[str]:
    """torchrun's arguments for `command`; the rest comes from PET_* variables. torchrun expands its
    `${local_rank}` macro with string.Template, which also turns `$$` into `$`; every `$` is doubled so the
    command reaches the process exactly as written (`kill -9 $$` stays `kill -9 $$`)."""
    return ["--max-restarts=0", "--no-python", "--", *(part.replace("$", "$$") for part in command)]


def exit_code(failure_code: int) -> int:
    """A rank's exit code as a container reports it (negative = killed by that signal)."""
    return 128 - failure_code if failure_code < 0 else failure_code


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s launcher %(levelname)s %(message)s")
    if os.environ.get("PACELINE_LOCAL_RUNTIME"):
        # Local cluster: torchrun's agent looks up its host name for logs and error reports; answer without a
        # resolver so nothing can reach a DNS server (the local cluster contacts loopback addresses only).
        socket.getfqdn = lambda name="": name or socket.gethostname()
    try:
        run(parse_args(torchrun_args(args)))
    except ChildFailedError as failed:
        rank, failure = failed.get_first_failure()
        code = exit_code(failure.exitcode)
        log.error("rank %d failed with exit code %d; stopping the pod with it", rank, code)
        return code
    except SignalException as stopped:
        return 128 + int(stopped.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
