"""Where the ranks of one generation meet: a TCP store on the host of the generation's rank 0.

Every rank connects (rank 0 hosts the store, at the generation's own port) and marks itself present; the
rendezvous is complete once all ranks of the world are. Joining runs in a background thread, so ranks still
training in the previous generation can join early and keep training until everybody, including ranks of
pods that are still starting, is there: the switch then costs one step boundary, not a process start.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import torch.distributed as dist

from .wire import Generation

log = logging.getLogger(__name__)

CONNECT_ATTEMPT_S = 2.0  # one client connection attempt; retried until the rendezvous is closed
POLL_S = 0.05


class RendezvousError(RuntimeError):
    """The rendezvous could not complete (its store failed or it timed out)."""


class Rendezvous:
    """One rank's membership in a generation's rendezvous."""

    def __init__(
        self, generation: Generation, *, local_rank: int, local_world_size: int, timeout_s: float
    ) -> None:
        self.generation = generation
        self.rank = generation.node_rank * local_world_size + local_rank
        self.world_size = generation.nnodes * local_world_size
        self._timeout = timedelta(seconds=timeout_s)
        self._store: dist.TCPStore | None = None
        self._complete = threading.Event()
        self._closed = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"rendezvous-{generation.generation}", daemon=True
        )

    def start(self) -> Rendezvous:
        self._thread.start()
        return self

    @property
    def complete(self) -> bool:
        return self._complete.is_set()

    @property
    def failed(self) -> BaseException | None:
        return self._error

    def wait(self, *, timeout_s: float, abort: Callable[[], bool]) -> bool:
        """Block until complete (True); False when `abort()` turns true. Raises on failure or timeout."""
        deadline = time.monotonic() + timeout_s
        while not self._complete.wait(POLL_S):
            if self._error is not None:
                raise RendezvousError(f"generation {self.generation.generation}: {self._error}")
            if abort():
                return False
            if time.monotonic() >= deadline:
                raise RendezvousError(
                    f"generation {self.generation.generation}: not all {self.world_size} ranks joined "
                    f"within {timeout_s:.0f}s"
                )
        return True

    def store(self) -> dist.Store:
        """The store for the process group (only once complete)."""
        if not self.complete or self._store is None:
            raise RendezvousError("the rendezvous is not complete")
        return dist.PrefixStore(f"paceline/generation/{self.generation.generation}/group", self._store)

    def close(self) -> None:
        """Leave: withdraw this rank if the rendezvous is not complete, and stop the thread."""
        self._closed.set()
        self._thread.join(timeout=CONNECT_ATTEMPT_S + 1)
        store, self._store = self._store, None
        if store is not None and not self.complete:
            with contextlib.suppress(RuntimeError, dist.DistError):
                store.delete_key(self._key(self.rank))

    def _key(self, rank: int) -> str:
        return f"paceline/generation/{self.generation.generation}/rank/{rank}"

    def _run(self) -> None:
        try:
            store = self._connect()
            if store is None:
                return
            self._store = store
            store.set(self._key(self.rank), "present")
            everyone = [self._key(rank) for rank in range(self.world_size)]
            while not self._closed.is_set():
                if store.check(everyone):
                    self._complete.set()
                    return
                self._closed.wait(POLL_S)
        except (RuntimeError, dist.DistError) as exc:
            self._error = exc

    def _connect(self) -> dist.TCPStore | None:
        g = self.generation
        if self.rank == 0:
            return dist.TCPStore(
                g.master_addr,
                g.master_port,
                self.world_size,
                is_master=True,
                timeout=self._timeout,
                wait_for_workers=False,
            )
        while not self._closed.is_set():
            try:
                return dist.TCPStore(
                    g.master_addr,
                    g.master_port,
                    self.world_size,
                    is_master=False,
                    timeout=timedelta(seconds=CONNECT_ATTEMPT_S),
                )
            except (RuntimeError, dist.DistError):
                log.debug("generation %d: rank 0's store not up yet", g.generation)
        return None
