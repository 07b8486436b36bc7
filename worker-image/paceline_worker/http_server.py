"""Per-rank HTTP endpoint: GET /metrics, GET /assignment, PUT /assignment, GET /healthz."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from prometheus_client import CollectorRegistry, exposition

from .assignment_store import AssignmentStore, OfferOutcome

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024

_STATUS_BY_OUTCOME = {
    OfferOutcome.ACCEPTED: HTTPStatus.ACCEPTED,
    OfferOutcome.STALE: HTTPStatus.CONFLICT,
    OfferOutcome.INVALID: HTTPStatus.BAD_REQUEST,
    OfferOutcome.NOT_RANK_ZERO: HTTPStatus.MISDIRECTED_REQUEST,
}


@dataclass(frozen=True, kw_only=True)
class EndpointState:
    """What the handler needs: the assignment store, the metrics registry and a status snapshot."""

    store: AssignmentStore
    registry: CollectorRegistry
    status: Callable[[], dict[str, Any]]


def _handler_class(state: EndpointState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "paceline-worker"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(
                    HTTPStatus.OK, exposition.generate_latest(state.registry), exposition.CONTENT_TYPE_LATEST
                )
            elif path == "/assignment":
                self._send_json(HTTPStatus.OK, {**state.store.snapshot(), **state.status()})
            elif path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain")
            else:
                self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such path {path}"})

        def do_PUT(self) -> None:
            if self.path.split("?", 1)[0] != "/assignment":
                self._send_json(HTTPStatus.NOT_FOUND, {"error": "PUT is only supported on /assignment"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY_BYTES:
                self._send_json(HTTPStatus.BAD_REQUEST, {"error": "missing or too large Content-Length"})
                return
            result = state.store.offer(self.rfile.read(length))
            payload: dict[str, Any] = {"result": result.outcome.value, "message": result.message}
            if result.assignment is not None:
                payload["pending"] = result.assignment.to_json_dict()
            if result.outcome is not OfferOutcome.ACCEPTED:
                payload["error"] = result.message
            self._send_json(_STATUS_BY_OUTCOME[result.outcome], payload)

    return Handler


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class BackgroundHttpServer:
    """A ThreadingHTTPServer running in a daemon thread (IPv6 when the host is an IPv6 address)."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], *, host: str, port: int) -> None:
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        self._server = server_class((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="paceline-http",
            daemon=True,
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class WorkerHttpServer(BackgroundHttpServer):
    """The worker's /metrics, /assignment and /healthz endpoint."""

    def __init__(self, state: EndpointState, *, host: str, port: int) -> None:
        super().__init__(_handler_class(state), host=host, port=port)
