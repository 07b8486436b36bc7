"""Worker side of the PS protocol: one persistent connection per shard, retried until the PS is up."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .config import PsAddress
from .protocol import ProtocolError, from_wire, recv_frame, send_frame, to_wire
from .sharding import ParameterSpec

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]


class PushResult(NamedTuple):
    """What the shard reports for one applied update."""

    shard: int
    read_version: int
    version: int  # model version after the update
    staleness: int
    learning_rate: float
    momentum: float
    dropped: bool = False  # staler than the shard's maxStaleness: not applied


class PsError(RuntimeError):
    """The shard refused a request (its message says why)."""


class ShardConnection:
    def __init__(
        self,
        address: PsAddress,
        *,
        shard: int,
        worker: str,
        connect_timeout_s: float,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        """Connect, retrying for `connect_timeout_s`; `cancelled()` true stops the retries at once
        (ConnectionAbortedError), e.g. when the worker was asked to stop."""
        self.address = address
        self.shard = shard
        self.worker = worker
        self._sock = self._connect(connect_timeout_s, cancelled)

    def _connect(self, timeout: float, cancelled: Callable[[], bool]) -> socket.socket:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if cancelled():
                raise ConnectionAbortedError(f"stopped connecting to PS shard {self.shard}")
            try:
                sock = socket.create_connection((self.address.host, self.address.port), timeout=10)
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise ConnectionError(
                        f"PS shard {self.shard} at {self.address} unreachable: {exc}"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(None)
            return sock

    def request(self, header: dict[str, Any], payload: bytes = b"") -> tuple[dict[str, Any], bytes]:
        send_frame(self._sock, {**header, "shard": self.shard, "worker": self.worker}, payload)
        reply, body = recv_frame(self._sock)
        if not reply.get("ok"):
            raise PsError(f"PS shard {self.shard} at {self.address}: {reply.get('error', 'unknown error')}")
        return reply, body

    def init(
        self,
        *,
        fingerprint: str,
        values: FloatArray,
        learning_rate: float,
        momentum: float,
        model: Sequence[ParameterSpec] = (),
        shards: int = 1,
    ) -> tuple[int, FloatArray]:
        """Join the shard; `model` (every parameter's name and shape) and `shards` let it checkpoint."""
        header = {
            "op": "init",
            "fingerprint": fingerprint,
            "learningRate": learning_rate,
            "momentum": momentum,
            "model": [[spec.name, list(spec.shape)] for spec in model],
            "shards": shards,
        }
        reply, body = self.request(header, to_wire(values))
        return int(reply["version"]), from_wire(body)

    def pull(self) -> tuple[int, FloatArray]:
        reply, body = self.request({"op": "pull"})
        return int(reply["version"]), from_wire(body)

    def push(self, *, read_version: int, gradient: FloatArray) -> tuple[PushResult, FloatArray]:
        reply, body = self.request({"op": "push", "readVersion": read_version}, to_wire(gradient))
        result = PushResult(
            shard=self.shard,
            read_version=read_version,
            version=int(reply["version"]),
            staleness=int(reply["staleness"]),
            dropped=bool(reply.get("dropped", False)),
            learning_rate=float(reply["learningRate"]),
            momentum=float(reply["momentum"]),
        )
        return result, from_wire(body)

    def bye(self) -> None:
        try:
            self.request({"op": "bye"})
        except (PsError, ProtocolError, OSError) as exc:
            log.warning("could not say goodbye to PS shard %d: %s", self.shard, exc)

    def close(self) -> None:
        self._sock.close()
