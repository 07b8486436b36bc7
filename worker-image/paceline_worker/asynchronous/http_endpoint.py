"""A small route table served by a ThreadingHTTPServer in a daemon thread (PS and async workers)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, exposition

from ..http_server import BackgroundHttpServer

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


def metrics_route(registry: CollectorRegistry) -> Handler:
    def handle(query: dict[str, str], body: bytes) -> Response:
        return Response(
            status=HTTPStatus.OK,
            body=exposition.generate_latest(registry),
            content_type=exposition.CONTENT_TYPE_LATEST,
        )

    return handle


def health_route(query: dict[str, str], body: bytes) -> Response:
    return Response(status=HTTPStatus.OK, body=b"ok\n", content_type="text/plain")


def _handler_class(routes: Mapping[tuple[str, str], Handler]) -> type[BaseHTTPRequestHandler]:
    class RequestHandler(BaseHTTPRequestHandler):
        server_version = "paceline-async"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _dispatch(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            handler = routes.get((method, parts.path))
            body = b""
            if method == "PUT":
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_BODY_BYTES:
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

        def _reply(self, response: Response) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

    return RequestHandler


class HttpEndpoint(BackgroundHttpServer):
    """A parameter server's HTTP endpoint serving the given routes."""

    def __init__(self, routes: Mapping[tuple[str, str], Handler], *, host: str, port: int) -> None:
        super().__init__(_handler_class(dict(routes)), host=host, port=port)
