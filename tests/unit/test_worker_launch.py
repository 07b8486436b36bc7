"""The pod launcher: torchrun arguments and container exit-code semantics."""

from __future__ import annotations

import signal
import sys

from paceline.builders import launched
from paceline_worker.launch import exit_code, main, torchrun_args


def test_user_command_runs_verbatim_under_torchrun_as_one_local_group() -> None:
    args = torchrun_args(["python", "train.py", "--epochs", "3"])
    assert args[-4:] == ["python", "train.py", "--epochs", "3"]  # after exec_rank (job-wide RANK, ...)
    assert args[-9:-4] == ["--", sys.executable, "-m", "paceline_worker.exec_rank", "--"]
    # the pod's ranks are one local group on loopback; the pods meet in Paceline's rendezvous
    assert {"--nnodes=1", "--node-rank=0", "--rdzv-endpoint=127.0.0.1:0", "--max-restarts=0"} <= set(args)


def test_dollar_signs_reach_the_process_unchanged() -> None:
    from torch.distributed.elastic.utils.api import macros  # what torchrun applies to the command

    command = ["sh", "-c", 'kill -9 $$; echo "$RANK ${HOME}"']
    assert macros.substitute(torchrun_args(command)[-len(command) :], "0") == command


def test_rank_exit_codes_keep_container_semantics() -> None:
    assert exit_code(0) == 0 and exit_code(3) == 3
    assert exit_code(-signal.SIGKILL) == 137 and exit_code(-signal.SIGTERM) == 143


def test_missing_command_is_a_usage_error(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--"]) == 2 and "usage" in capsys.readouterr().err
    assert main(["--nproc-per-node=2"]) == 2


def test_operator_wraps_commands_once() -> None:
    wrapped = launched(["python", "train.py"])
    assert wrapped == ["python", "-m", "paceline_worker.launch", "--", "python", "train.py"]
    assert launched(wrapped) == wrapped
    assert launched(["torchrun", "--nproc-per-node=2", "train.py"])[0] == "torchrun"
    assert launched(["python", "-m", "torch.distributed.run", "train.py"])[2] == "torch.distributed.run"
