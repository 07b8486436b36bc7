"""One rank of a pod under Paceline's launcher: set the rank's job-wide variables, then become the command.

    python -m paceline_worker.exec_rank -- COMMAND [ARGS...]

torchrun runs a pod's ranks as one local group, so it sets RANK, WORLD_SIZE and MASTER_ADDR/MASTER_PORT for
the pod alone. This sets them for the job from the generation the launcher wrote (PACELINE_GENERATION_FILE)
and LOCAL_RANK, as torchrun does for a multi-node job, then `exec`s the command: a script that reads the
environment itself (plain `init_process_group("env://")`, `$RANK` in a shell) joins the job's group.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .generation_file import GenerationFile, rank_env
from .signals import exit_with_parent
from .wire import Env

USAGE = "usage: python -m paceline_worker.exec_rank -- COMMAND [ARGS...]"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print(USAGE, file=sys.stderr)
        return 2
    exit_with_parent()  # kept across exec: the rank ends with torchrun's agent
    path = os.environ.get(Env.GENERATION_FILE)
    if path:
        generation = GenerationFile(Path(path)).newest()
        local_rank = int(os.environ.get(Env.LOCAL_RANK) or 0)
        local_world_size = int(os.environ.get(Env.LOCAL_WORLD_SIZE) or 1)
        os.environ.update(rank_env(generation, local_rank=local_rank, local_world_size=local_world_size))
    try:
        os.execvp(args[0], args)
    except OSError as exc:
        print(f"cannot run {args[0]!r}: {exc}", file=sys.stderr)
        return 127
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
