"""Parameter-server shard process: `python -m paceline_worker.asynchronous.ps` (PACELINE_ROLE=ps).

Serves the worker protocol (protocol.py) on PACELINE_PS_PORT and HTTP on PACELINE_METRICS_PORT:
GET /metrics, GET|PUT /hyperparameters, GET /staleness?after=N, GET /status, GET /healthz.
Exits 0 on SIGTERM, or PACELINE_PS_LINGER_S after all WORLD_SIZE workers said goodbye. With
PACELINE_CHECKPOINT_DIR it restores its shard from the checkpoint files there at start, and checkpoints
every PACELINE_CHECKPOINT_INTERVAL_STEPS model versions and when it stops (ps_checkpoint.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import socketserver
import threading
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..control_auth import ControlAuth
from ..http_server import HttpEndpoint, Response, Routes, common_routes
from ..wire import Env, HyperparameterError, Route, parse_update, staleness_page
from .config import PsConfig, ps_config_from_env
from .hyperparameters import StaleVersionError
from .protocol import ProtocolError, from_wire, recv_frame, send_frame, to_wire
from .ps_checkpoint import load_states, restore_shard, save_state
from .ps_metrics import PsMetrics
from .shard import AppliedUpdate, ParameterShard, ShardError
from .sharding import ParameterSpec

log = logging.getLogger("paceline_worker.asynchronous.ps")


class ParameterServer:
    """One shard: the TCP worker protocol, the HTTP control endpoint and the shutdown logic."""

    def __init__(self, config: PsConfig) -> None:
        self.config = config
        self.shard = ParameterShard(
            shard=config.shard, initial=config.hyperparameters, max_staleness=config.max_staleness
        )
        self.metrics = PsMetrics(job=config.job, shard=config.shard)
        self.shard.on_update = self._on_update
        self.checkpoint_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
        self._saved: tuple[int, int] | None = None  # (model version, hyperparameters version) last saved
        self._save_lock = threading.Lock()
        self._save_due = threading.Event()
        self._closing = False
        self.restored_version: int | None = None
        self._restore()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._connections = 0
        self._finished: set[str] = set()
        self.stop_event = threading.Event()
        self._tcp = self._tcp_server()
        auth = ControlAuth.from_env(
            {Env.TOKEN_FILE: config.token_file or ""},
            on_refused=self.metrics.refused,
            who=f"parameter server {config.shard}",
        )
        self._http = HttpEndpoint(
            self._routes(), host=config.bind_address, port=config.metrics_port, auth=auth
        )

    # ---- worker protocol -------------------------------------------------------------------------
    def _tcp_server(self) -> socketserver.ThreadingTCPServer:
        server = self

        class Connection(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._serve_connection(self.request)

        family = socket.AF_INET6 if ":" in self.config.bind_address else socket.AF_INET

        class Server(socketserver.ThreadingTCPServer):
            address_family = family
            allow_reuse_address = True
            daemon_threads = True

        return Server((self.config.bind_address, self.config.port), Connection)

    def _serve_connection(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._connections += 1
            self._sockets.add(sock)
            self.metrics.observe_connections(self._connections)
        try:
            while not self._closing:
                header, payload = recv_frame(sock)
                reply, body = self._handle(header, payload)
                send_frame(sock, reply, body)
        except (ProtocolError, OSError):
            pass
        finally:
            with self._lock:
                self._connections -= 1
                self._sockets.discard(sock)
                self.metrics.observe_connections(self._connections)

    def _handle(self, header: Mapping[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
        op = header.get("op")
        worker = str(header.get("worker", "?"))
        try:
            if header.get("shard", self.config.shard) != self.config.shard:
                raise ShardError(
                    f"this is shard {self.config.shard}, the worker expected shard {header.get('shard')}: "
                    "PACELINE_PS_ADDRS must list the shards in PACELINE_PS_SHARD order"
                )
            if op == "init":
                model = [
                    ParameterSpec(name=str(name), shape=tuple(int(d) for d in shape))
                    for name, shape in header.get("model") or []
                ]
                snap = self.shard.initialise(
                    fingerprint=str(header["fingerprint"]),
                    values=from_wire(payload),
                    learning_rate=float(header["learningRate"]),
                    momentum=float(header["momentum"]),
                    model=model,
                    shards=int(header.get("shards", 1)),
                )
                hyper = self.shard.hyperparameters
                if hyper is not None:
                    self.metrics.observe_hyperparameters(hyper)
                self.metrics.observe_parameters(self.shard.numel)
                log.info("worker %s joined shard %d at version %d", worker, self.config.shard, snap.version)
                return {"ok": True, "version": snap.version}, to_wire(snap.values)
            if op == "pull":
                snap = self.shard.read()
                return {"ok": True, "version": snap.version}, to_wire(snap.values)
            if op == "push":
                record, snap = self.shard.apply(
                    worker=worker, read_version=int(header["readVersion"]), gradient=from_wire(payload)
                )
                reply = {
                    "ok": True,
                    "version": snap.version,
                    "staleness": record.staleness,
                    "dropped": record.dropped,
                }
                return {**reply, "momentum": record.momentum, "learningRate": record.learning_rate}, to_wire(
                    snap.values
                )
            if op == "bye":
                self._goodbye(worker)
                return {"ok": True, "version": self.shard.version}, b""
            raise ShardError(f"unknown op {op!r}")
        except (ShardError, KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}, b""

    def _goodbye(self, worker: str) -> None:
        with self._lock:
            self._finished.add(worker)
            done = self.config.workers > 0 and len(self._finished) >= self.config.workers
        log.info("worker %s finished (%d of %s)", worker, len(self._finished), self.config.workers or "?")
        if done:
            log.info("all %d workers finished; exiting in %.1fs", self.config.workers, self.config.linger_s)
            threading.Timer(self.config.linger_s, self.stop_event.set).start()

    # ---- checkpoints ---------------------------------------------------------------------------------
    def _restore(self) -> None:
        """Resume from the checkpoint files in PACELINE_CHECKPOINT_DIR, if they hold this shard's tensors."""
        if self.checkpoint_dir is None:
            return
        states = load_states(self.checkpoint_dir)
        if not states:
            log.info(
                "no PS checkpoint in %s: the first worker's parameters start the model", self.checkpoint_dir
            )
            return
        shards = (
            self.config.shards if self.config.shards_known else max(states, key=lambda s: s.saved_at).shards
        )
        restored = restore_shard(states, shard=self.config.shard, shards=shards)
        if isinstance(restored, str):
            log.warning(
                "PS shard %d cannot restore from %s: %s; the first worker's parameters start the model",
                self.config.shard,
                self.checkpoint_dir,
                restored,
            )
            return
        self.shard.restore(restored)
        self.restored_version = restored.version
        self._saved = (restored.version, restored.hyperparameters.version)
        hyper = self.shard.hyperparameters
        if hyper is not None:
            self.metrics.observe_hyperparameters(hyper)
        self.metrics.observe_parameters(self.shard.numel)
        self.metrics.observe_version(restored.version)
        log.info(
            "PS shard %d restored from %s at model version %d: %d values from the file(s) of shard(s) %s%s",
            self.config.shard,
            self.checkpoint_dir,
            restored.version,
            restored.values.size,
            ",".join(map(str, restored.sources)),
            " (re-sharded by parameter name)" if restored.resharded else "",
        )

    def _on_update(self, record: AppliedUpdate) -> None:
        """Called under the shard's lock after every update: metrics, and wake the checkpoint writer."""
        self.metrics.observe_update(record)
        interval = self.config.checkpoint_interval
        saved = 0 if self._saved is None else self._saved[0]
        if self.checkpoint_dir is not None and interval and record.version - saved >= interval:
            self._save_due.set()

    def _checkpoint_loop(self) -> None:
        while True:
            self._save_due.wait()
            self._save_due.clear()
            if self._closing:
                return
            self.checkpoint()

    def checkpoint(self) -> Path | None:
        """Write this shard's state now (if it changed since the last write); the file, or None."""
        if self.checkpoint_dir is None:
            return None
        with self._save_lock:
            state = self.shard.state()
            if state is None or self._saved == (state.version, state.hyperparameters.version):
                return None
            try:
                path = save_state(self.checkpoint_dir, state)
            except OSError as exc:
                log.warning("PS shard %d could not write its checkpoint: %s", self.config.shard, exc)
                return None
            self._saved = (state.version, state.hyperparameters.version)
        log.debug("PS shard %d checkpointed model version %d to %s", self.config.shard, state.version, path)
        return path

    # ---- HTTP --------------------------------------------------------------------------------------
    def _routes(self) -> Routes:
        return {
            **common_routes(self.metrics.registry, self.status),
            ("GET", Route.HYPERPARAMETERS): self._get_hyperparameters,
            ("PUT", Route.HYPERPARAMETERS): self._put_hyperparameters,
            ("GET", Route.STALENESS): self._get_staleness,
        }

    def status(self) -> dict[str, Any]:
        hyper = self.shard.hyperparameters
        with self._lock:
            connections, finished = self._connections, sorted(self._finished)
        return {
            "shard": self.config.shard,
            "initialised": self.shard.initialised,
            "version": self.shard.version,
            "parameters": self.shard.numel,
            "fingerprint": self.shard.fingerprint,
            "hyperparameters": None if hyper is None else hyper.to_json_dict(),
            "connectedWorkers": connections,
            "maxStaleness": self.shard.max_staleness,
            "droppedUpdates": self.shard.dropped,
            "finishedWorkers": finished,
            "checkpoint": {
                "directory": None if self.checkpoint_dir is None else str(self.checkpoint_dir),
                "intervalUpdates": self.config.checkpoint_interval,
                "savedVersion": None if self._saved is None else self._saved[0],
                "restoredVersion": self.restored_version,
            },
        }

    def _get_hyperparameters(self, query: dict[str, str], body: bytes) -> Response:
        hyper = self.shard.hyperparameters
        store = self.shard.store
        return Response.json(
            HTTPStatus.OK,
            {
                "current": None if hyper is None else hyper.to_json_dict(),
                "applied": [] if store is None else store.history(),
            },
        )

    def _put_hyperparameters(self, query: dict[str, str], body: bytes) -> Response:
        try:
            hyper, first_update = self.shard.set_hyperparameters(parse_update(body))
        except StaleVersionError as exc:
            return Response.json(HTTPStatus.CONFLICT, {"error": str(exc)})
        except HyperparameterError as exc:
            return Response.json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except ShardError as exc:
            return Response.json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"{exc}; retry later"})
        self.metrics.observe_hyperparameters(hyper)
        log.info("hyperparameters version %d in force: %s", hyper.version, hyper.to_json_dict())
        return Response.json(
            HTTPStatus.OK,
            {
                "result": "applied",
                "current": hyper.to_json_dict(),
                "appliedAtModelVersion": first_update,  # not shard.version now: workers keep pushing
            },
        )

    def _get_staleness(self, query: dict[str, str], body: bytes) -> Response:
        try:
            after = int(query.get("after", "0"))
        except ValueError:
            return Response.json(HTTPStatus.BAD_REQUEST, {"error": "after must be an integer"})
        updates = self.shard.updates_after(after)
        rows = [
            {
                "index": u.index,
                "worker": u.worker,
                "readVersion": u.read_version,
                "staleness": u.staleness,
                "learningRate": u.learning_rate,
                "momentum": u.momentum,
            }
            for u in updates
        ]
        page = staleness_page(shard=self.config.shard, version=self.shard.version, after=after, updates=rows)
        return Response.json(HTTPStatus.OK, page)

    # ---- lifecycle ---------------------------------------------------------------------------------
    @property
    def tcp_address(self) -> tuple[str, int]:
        host, port = self._tcp.server_address[:2]
        return str(host), int(port)

    @property
    def http_address(self) -> tuple[str, int]:
        return self._http.address

    def start(self) -> ParameterServer:
        threading.Thread(target=self._tcp.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        if self.checkpoint_dir is not None:
            threading.Thread(target=self._checkpoint_loop, name="ps-checkpoint", daemon=True).start()
        self._http.start()
        log.info(
            "PS shard %d serving workers on %s:%d, HTTP on %s:%d",
            self.config.shard,
            *self.tcp_address,
            *self.http_address,
        )
        return self

    def stop(self) -> None:
        """Stop serving workers (open connections too), write the final checkpoint, stop HTTP."""
        self._tcp.shutdown()
        self._tcp.server_close()
        self._closing = True
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._save_due.set()
        path = self.checkpoint()
        if path is not None:
            log.info(
                "PS shard %d checkpointed model version %d to %s", self.config.shard, self.shard.version, path
            )
        self._http.stop()


def main(env: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = ps_config_from_env(os.environ if env is None else env)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    server = ParameterServer(config).start()
    signal.signal(signal.SIGTERM, lambda signum, frame: server.stop_event.set())
    try:
        while not server.stop_event.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    server.stop()
    log.info("PS shard %d stopped at model version %d", config.shard, server.shard.version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
