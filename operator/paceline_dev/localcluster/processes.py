"""Start, find and stop the local cluster's own processes, by the PIDs recorded when they were started."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class Started:
    """A process this cluster started: its PID and the kernel start time that makes the PID unambiguous."""

    name: str
    pid: int
    start_ticks: int


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 22 (starttime) counted after the ")" that closes the command name
    return int(stat.rsplit(")", 1)[1].split()[19])


def _record_path(state: Path, name: str) -> Path:
    return state / "pids" / f"{name}.json"


def running(state: Path, name: str) -> Started | None:
    """The recorded process if it is still the very process we started (not a reused PID)."""
    path = _record_path(state, name)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    ticks = _start_ticks(record["pid"])
    if ticks is None or ticks != record["start_ticks"]:
        return None
    if _is_zombie(record["pid"]):  # died while we are its parent: reap it
        _reap(record["pid"])
        return None
    return Started(name=name, pid=record["pid"], start_ticks=ticks)


def start(
    state: Path,
    name: str,
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Started:
    """Start a detached process logging to state/logs/NAME.log and record its PID."""
    (state / "logs").mkdir(parents=True, exist_ok=True)
    (state / "pids").mkdir(parents=True, exist_ok=True)
    log = (state / "logs" / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        list(cmd),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
    )
    log.close()
    ticks = _start_ticks(proc.pid) or 0
    _record_path(state, name).write_text(
        json.dumps({"pid": proc.pid, "start_ticks": ticks, "cmd": list(cmd)})
    )
    return Started(name=name, pid=proc.pid, start_ticks=ticks)


def stop(state: Path, name: str, *, grace_s: float = 10.0) -> bool:
    """SIGTERM the recorded process (SIGKILL after grace); True if it ran. Never touches other PIDs."""
    proc = running(state, name)
    _record_path(state, name).unlink(missing_ok=True)
    if proc is None:
        return False
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if _start_ticks(proc.pid) != proc.start_ticks or _is_zombie(proc.pid):
            _reap(proc.pid)
            return True
        time.sleep(0.1)
    if _start_ticks(proc.pid) == proc.start_ticks:
        os.kill(proc.pid, signal.SIGKILL)
        _reap(proc.pid)
    return True


def kill(state: Path, name: str, *, timeout_s: float = 30.0) -> int | None:
    """SIGKILL the recorded process, as a crash would, and wait until it is gone; its PID, or None if it
    was not running. Never touches other PIDs."""
    proc = running(state, name)
    _record_path(state, name).unlink(missing_ok=True)
    if proc is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while _start_ticks(proc.pid) == proc.start_ticks and not _is_zombie(proc.pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} (pid {proc.pid}) still runs {timeout_s:.0f} s after SIGKILL")
        time.sleep(0.05)
    _reap(proc.pid)
    return proc.pid


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child: nothing to reap
        os.waitpid(pid, os.WNOHANG)


def alive(proc: Started) -> bool:
    """True while the process runs (and is not a zombie)."""
    return _start_ticks(proc.pid) == proc.start_ticks and not _is_zombie(proc.pid)
