"""`kubectl logs` for pods the process runtime runs (dev/test only).

The API server answers `kubectl logs` by asking the pod's node — its kubelet endpoint, at the node's
InternalIP and `daemonEndpoints.kubeletEndpoint.Port` — for the container's log. kwok serves that endpoint
for its fake nodes and reads the log from the file a `Logs` object (kwok.x-k8s.io/v1alpha1, one per pod,
named like it) names, in the CRI log format a kubelet reads (`<RFC 3339 time> <stream> F <line>`). So the
process runtime, like a container runtime:

- writes each process's output both to the plain ``logs/pods/<namespace>_<pod>.log`` (appended across pods
  of the same name, as before) and to a CRI log ``logs/pods/<namespace>_<pod>_<uid>/<container>.log``;
- creates the pod's `Logs` object (owned by the pod, so it goes with it) naming that file, and the previous
  pod of the same name's file as `previousLogsFile` (`kubectl logs --previous` after a job restart, which
  re-creates every worker pod under its name);
- listens on each node's loopback InternalIP at the kubelet port and forwards to kwok, which binds
  127.0.0.1 only (the nodes' addresses are distinct 127.x addresses).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("paceline.runtime.logs")

GROUP, VERSION, PLURAL = "kwok.x-k8s.io", "v1alpha1", "logs"


def cri_line(stream: str, line: bytes, when: datetime) -> bytes:
    """One line in the CRI log format (a full line: tag F), without its trailing newline in the message."""
    stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    return f"{stamp} {stream} F ".encode() + line.rstrip(b"\n") + b"\n"


def cri_path(pod_logs: Path, *, namespace: str, name: str, uid: str, container: str) -> Path:
    """Where a pod's container log lives, kubelet style: one directory per pod UID."""
    return pod_logs / f"{namespace}_{name}_{uid}" / f"{container}.log"


def previous_log(pod_logs: Path, *, namespace: str, name: str, uid: str, container: str) -> Path | None:
    """The newest log of an earlier pod with the same name (a job restart re-creates pods by name)."""
    earlier = [
        p
        for p in pod_logs.glob(f"{namespace}_{name}_*/{container}.log")
        if p.parent.name != f"{namespace}_{name}_{uid}"
    ]
    return max(earlier, key=lambda p: p.stat().st_mtime) if earlier else None


def logs_object(pod: Mapping[str, Any], *, logs_file: Path, previous: Path | None) -> dict[str, Any]:
    """The kwok `Logs` object that points kwok's kubelet-like server at a pod's log file."""
    meta = pod["metadata"]
    # without an earlier pod of this name, --previous names a file that does not exist and says why
    missing = logs_file.with_name(f"no-earlier-pod-named-{meta['name']}.log")
    entry: dict[str, Any] = {
        "logsFile": str(logs_file),
        "previousLogsFile": str(previous or missing),
        "follow": True,
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Logs",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}
            ],
        },
        "spec": {"logs": [entry]},  # no container names: every container of the pod reads this file
    }


def pump(streams: Mapping[str, IO[bytes]], *, plain: Path, cri: Path) -> threading.Thread:
    """Copy a process's stdout/stderr line by line into the plain log and the CRI log (a daemon thread that
    ends when every stream is closed)."""
    cri.parent.mkdir(parents=True, exist_ok=True)

    def run() -> None:
        selector = selectors.DefaultSelector()
        pending = {pipe.fileno(): b"" for pipe in streams.values()}  # a line's start, until its newline
        for stream, pipe in streams.items():
            selector.register(pipe.fileno(), selectors.EVENT_READ, stream)
        with plain.open("ab") as plain_out, cri.open("ab") as cri_out:
            while selector.get_map():
                for key, _ in selector.select():
                    chunk = os.read(key.fd, 65536)  # unbuffered: select sees everything not yet read
                    if chunk:
                        *lines, pending[key.fd] = (pending[key.fd] + chunk).split(b"\n")
                    else:  # end of stream: its last line may lack a newline
                        lines, pending[key.fd] = [pending[key.fd]] if pending[key.fd] else [], b""
                        selector.unregister(key.fd)
                    now = datetime.now(UTC)
                    for line in lines:
                        plain_out.write(line + b"\n")
                        cri_out.write(cri_line(key.data, line, now))
                    plain_out.flush()
                    cri_out.flush()
        for pipe in streams.values():
            pipe.close()

    thread = threading.Thread(target=run, daemon=True, name=f"logs {cri.parent.name}")
    thread.start()
    return thread


class KubeletPorts:
    """Loopback listeners at each node's InternalIP:kubelet port, forwarding to kwok on 127.0.0.1."""

    def __init__(self, *, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.selector = selectors.DefaultSelector()
        self.listening: dict[tuple[str, int], socket.socket] = {}
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True, name="kubelet ports")
        self.thread.start()

    def ensure(self, endpoints: Iterable[tuple[str, int]]) -> None:
        """Listen on every (ip, port) given (loopback addresses only) that is not 127.0.0.1 itself."""
        for ip, port in endpoints:
            if ip == self.target_host or not ip.startswith("127.") or (ip, port) in self.listening:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((ip, port))
                sock.listen(16)
            except OSError as err:
                log.warning("cannot listen on %s:%d for kubectl logs: %s", ip, port, err)
                sock.close()
                self.listening[(ip, port)] = sock  # do not retry every pass
                continue
            sock.setblocking(False)
            with self.lock:
                self.listening[(ip, port)] = sock
                self.selector.register(sock, selectors.EVENT_READ, port)
            log.info("kubelet endpoint %s:%d forwards to kwok", ip, port)

    def _accept_loop(self) -> None:
        while True:
            with self.lock:
                empty = not self.selector.get_map()
            if empty:
                threading.Event().wait(0.5)
                continue
            for key, _ in self.selector.select(timeout=0.5):
                with contextlib.suppress(OSError):
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    conn.setblocking(True)
                    threading.Thread(target=self._forward, args=(conn, key.data), daemon=True).start()

    def _forward(self, conn: socket.socket, port: int) -> None:
        try:
            upstream = socket.create_connection((self.target_host, port), timeout=10)
            upstream.settimeout(None)
        except OSError:
            conn.close()
            return
        done = threading.Event()

        def copy(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            done.set()

        threading.Thread(target=copy, args=(upstream, conn), daemon=True).start()
        copy(conn, upstream)
        done.wait(3600)
        conn.close()
        upstream.close()


def kubelet_endpoints(
    nodes: Iterable[Mapping[str, Any]], is_fake: Callable[[Mapping[str, Any]], bool]
) -> set[tuple[str, int]]:
    """(InternalIP, kubelet port) of every fake node that kwok has marked with its endpoint."""
    out = set()
    for node in nodes:
        if not is_fake(node):
            continue
        status = node.get("status") or {}
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
        ips = [a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalIP"]
        if port and ips:
            out.add((str(ips[0]), int(port)))
    return out
