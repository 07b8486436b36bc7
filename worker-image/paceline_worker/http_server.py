"""The one HTTP endpoint of workers, parameter servers and launchers: a route table served by a
ThreadingHTTPServer in a daemon thread. Routes and payloads are the wire contract's
(`paceline_worker.wire.Route`); every write must bear the job's control token (`control_auth`)."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, exposition

from .assignment_store import AssignmentStore, OfferOutcome
from .control_auth import ControlAuth
from .wire import AUTHORIZATION, Route

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class Response:
    status: HTTPStatus
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: HTTPStatus, payload: Mapping[str, Any]) -> Response:
        return cls(status=status, body=json.dumps(payload).encode())


# handler(query parameters, request body) -> response
Handler = Callable[[dict[str, str], bytes], Response]
Routes = dict[tuple[str, str], Handler]


def common_routes(registry: CollectorRegistry, status: Callable[[], Mapping[str, Any]]) -> Routes:
    """GET /metrics, /healthz and /status: what every worker and parameter server serves."""

    def metrics(query: dict[str, str], body: bytes) -> Response:
        return Response(
            status=HTTPStatus.OK,
            body=exposition.generate_latest(registry),
            content_type=exposition.CONTENT_TYPE_LATEST,
        )

    healthy = Response(status=HTTPStatus.OK, body=b"ok\n", content_type="text/plain")
    return {
        ("GET", Route.METRICS): metrics,
        ("GET", Route.HEALTHZ): lambda q, b: healthy,
        ("GET", Route.STATUS): lambda q, b: Response.json(HTTPStatus.OK, status()),
    }


_STATUS_BY_OUTCOME = {
    OfferOutcome.ACCEPTED: HTTPStatus.ACCEPTED,
    OfferOutcome.STALE: HTTPStatus.CONFLICT,
    OfferOutcome.INVALID: HTTPStatus.BAD_REQUEST,
    OfferOutcome.NOT_RANK_ZERO: HTTPStatus.MISDIRECTED_REQUEST,
}


def assignment_routes(store: AssignmentStore, status: Callable[[], Mapping[str, Any]]) -> Routes:
    """GET /assignment (current, pending, history) and PUT /assignment (a new version, applied at a step)."""

    def put(query: dict[str, str], body: bytes) -> Response:
        result = store.offer(body)
        payload: dict[str, Any] = {"result": result.outcome.value, "message": result.message}
        if result.assignment is not None:
            payload["pending"] = result.assignment.to_json_dict()
        if result.outcome is not OfferOutcome.ACCEPTED:
            payload["error"] = result.message
        return Response.json(_STATUS_BY_OUTCOME[result.outcome], payload)

    def get(query: dict[str, str], body: bytes) -> Response:
        return Response.json(HTTPStatus.OK, {**store.snapshot(), **status()})

    return {("GET", Route.ASSIGNMENT): get, ("PUT", Route.ASSIGNMENT): put}


def _handler_class(
    routes: Mapping[tuple[str, str], Handler], auth: ControlAuth, max_body_bytes: int = MAX_BODY_BYTES
) -> type[BaseHTTPRequestHandler]:
    class RequestHandler(BaseHTTPRequestHandler):
        server_version = "paceline"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _dispatch(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            refusal = auth.check(method, self.headers.get(AUTHORIZATION))
            if refusal is not None:  # before the body is read: an unauthenticated write costs nothing more
                response = Response.json(refusal.status, {"error": refusal.message, "reason": refusal.value})
                self.close_connection = True
                self._reply(response, challenge=refusal.status == HTTPStatus.UNAUTHORIZED)
                return
            handler = routes.get((method, parts.path))
            body = b""
            if method in ("PUT", "POST"):
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                except ValueError:
                    length = -1
                if not 0 <= length <= max_body_bytes:
                    self._reply(Response.json(HTTPStatus.BAD_REQUEST, {"error": "missing or too large body"}))
                    return
                body = self.rfile.read(length)
            if handler is None:
                allowed = sorted(m for m, p in routes if p == parts.path)
                status = HTTPStatus.METHOD_NOT_ALLOWED if allowed else HTTPStatus.NOT_FOUND
                self._reply(Response.json(status, {"error": f"no route {method} {parts.path}"}))
                return
            try:
                response = handler(query, body)
            except Exception as exc:  # a handler bug must not kill the server thread
                log.exception("handler for %s %s failed", method, parts.path)
                response = Response.json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)})
            self._reply(response)

        def _reply(self, response: Response, *, challenge: bool = False) -> None:
            self.send_response(response.status)
            if challenge:
                self.send_header("WWW-Authenticate", 'Bearer realm="paceline"')
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

    return RequestHandler


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class HttpEndpoint:
    """Serves `routes` on host:port (IPv6 when the host is an IPv6 address) from a daemon thread; writes only
    with `auth`'s token."""

    def __init__(
        self,
        routes: Mapping[tuple[str, str], Handler],
        *,
        host: str,
        port: int,
        auth: ControlAuth,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        self._server = server_class((host, port), _handler_class(dict(routes), auth, max_body_bytes))
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
