"""Who may write to a worker, parameter server or launcher: requests that bear the job's token.

Reads (GET /metrics, /healthz, /status, ...) stay open. Every write (any method but GET and HEAD) needs
`Authorization: Bearer <token>`, the token the operator put in the job's Secret and mounted into the pod
(PACELINE_TOKEN_FILE). No header → 401; another token → 403; and a server that has no token (the file is
missing or empty) refuses every write with 403 — it never falls back to accepting them. Tokens are compared in
constant time. Standard library only.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable, Mapping
from enum import StrEnum
from http import HTTPStatus
from pathlib import Path
from typing import Self

from .wire import BEARER, Env

log = logging.getLogger(__name__)

READ_METHODS = frozenset({"GET", "HEAD"})


class Refusal(StrEnum):
    """Why a write was refused (the `reason` label of the refused-writes counters)."""

    MISSING = "missing"  # no bearer token in the request
    WRONG = "wrong"  # a token, not the job's
    UNCONFIGURED = "unconfigured"  # this server has no token to compare with

    @property
    def status(self) -> HTTPStatus:
        return HTTPStatus.UNAUTHORIZED if self is Refusal.MISSING else HTTPStatus.FORBIDDEN

    @property
    def message(self) -> str:
        return {
            Refusal.MISSING: "control writes need 'Authorization: Bearer <token>' (the job's control token)",
            Refusal.WRONG: "the bearer token is not this job's control token",
            Refusal.UNCONFIGURED: (
                "this endpoint has no control token (PACELINE_TOKEN_FILE); it refuses every write"
            ),
        }[self]


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != BEARER.strip().lower() or not token:
        return None
    return token


def authorize(method: str, header: str | None, token: bytes | None) -> Refusal | None:
    """None when the request may proceed: a read, or a write bearing `token`; else why it may not."""
    if method.upper() in READ_METHODS:
        return None
    presented = bearer_token(header)
    if presented is None:
        return Refusal.MISSING
    if not token:
        return Refusal.UNCONFIGURED
    if not hmac.compare_digest(presented.encode(), token):
        return Refusal.WRONG
    return None


def read_token(path: str | None) -> bytes | None:
    """The token in `path` (surrounding whitespace stripped), or None when unset, missing or empty."""
    if not path:
        return None
    try:
        token = Path(path).read_bytes().strip()
    except OSError:
        return None
    return token or None


class ControlAuth:
    """A server's write check: its token (None: refuse every write) and what to do with each refusal."""

    def __init__(
        self,
        token: bytes | None,
        *,
        on_refused: Callable[[Refusal], None] | None = None,
        path: str | None = None,
    ) -> None:
        self.token = token
        self._on_refused = on_refused
        self._path = path  # re-read when a token does not match: a kubelet refreshes a mounted Secret

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] = os.environ,
        *,
        on_refused: Callable[[Refusal], None] | None = None,
        who: str = "endpoint",
    ) -> Self:
        """The token from PACELINE_TOKEN_FILE; without one, a log line says that every write is refused."""
        path = env.get(Env.TOKEN_FILE)
        token = read_token(path)
        if token is None:
            where = f"{Env.TOKEN_FILE}={path}" if path else f"{Env.TOKEN_FILE} is not set"
            log.error(
                "%s has no control token (%s: missing or empty): it refuses every control write (403)",
                who,
                where,
            )
        return cls(token, on_refused=on_refused, path=path or None)

    def check(self, method: str, header: str | None) -> Refusal | None:
        """`authorize`, counting and logging a refusal."""
        refusal = authorize(method, header, self.token)
        if refusal in (Refusal.WRONG, Refusal.UNCONFIGURED) and self._path is not None:
            fresh = read_token(self._path)
            if fresh is not None and fresh != self.token:
                self.token = fresh
                refusal = authorize(method, header, self.token)
        if refusal is not None:
            log.warning("refused a control write (%s): %s", refusal.value, refusal.message)
            if self._on_refused is not None:
                self._on_refused(refusal)
        return refusal
