"""Actors' and learners' HTTP client for a learner's endpoint (Route.RL_*): push a batch, fetch parameters."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus

import torch

from ..control_auth import read_token
from ..wire import Env, Route, authorization
from .models import decode_parameters
from .segment import Segment, encode_segment

NPZ = "application/octet-stream"


class LearnerGone(ConnectionError):
    """The learner stayed unreachable past the deadline."""


@dataclass(frozen=True, kw_only=True)
class PushReply:
    version: int  # the learner's policy version when it took the batch
    done: bool  # the learner reached its stopping rule: actors exit


@dataclass(frozen=True, kw_only=True)
class PolicyReply:
    version: int
    done: bool
    state: dict[str, torch.Tensor] | None  # None: nothing newer than asked for
    meta: dict[str, float]


def learner_url(address: str) -> str:
    return f"http://{address}"


class LearnerClient:
    def __init__(
        self,
        address: str,
        *,
        retry_s: float = 120.0,
        request_timeout_s: float = 60.0,
        token: bytes | None = None,
    ) -> None:
        """`token`: what batches bear (default: the job's token from PACELINE_TOKEN_FILE)."""
        self.base = learner_url(address)
        token = token if token is not None else read_token(os.environ.get(Env.TOKEN_FILE))
        self._auth = authorization(token.decode()) if token else {}
        self.retry_s = retry_s
        self.request_timeout_s = request_timeout_s

    def _call(self, request: urllib.request.Request, timeout: float) -> tuple[str, bytes]:
        """Retries connection failures (the learner may be starting or restarting) until `retry_s` passes."""
        deadline = time.monotonic() + self.retry_s
        delay = 0.05
        while True:
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    return response.headers.get("Content-Type", ""), response.read()
            except urllib.error.HTTPError as exc:
                if exc.code != HTTPStatus.SERVICE_UNAVAILABLE:  # 503: the learner is stopping, retry
                    raise
                error: Exception = exc
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                error = exc
            if time.monotonic() >= deadline:
                raise LearnerGone(f"learner at {self.base} unreachable: {error}") from error
            time.sleep(delay)
            delay = min(2 * delay, 1.0)

    def push(self, segment: Segment) -> PushReply:
        body = encode_segment(segment)
        request = urllib.request.Request(
            self.base + Route.RL_TRAJECTORIES,
            data=body,
            method="PUT",
            headers={"Content-Type": NPZ, **self._auth},
        )
        _, reply = self._call(request, self.request_timeout_s)
        doc = json.loads(reply)
        return PushReply(version=int(doc["version"]), done=bool(doc["done"]))

    def policy(self, *, after: int, wait_s: float = 0.0) -> PolicyReply:
        """The newest parameters if newer than `after`; waits up to `wait_s` on the learner for one."""
        url = f"{self.base}{Route.RL_POLICY}?after={after}&wait={wait_s}"
        return self._fetch(url, wait_s)

    def peer(self, *, round_: int, wait_s: float = 0.0) -> PolicyReply:
        """A peer learner's parameters at averaging round `round_` (-1: its latest)."""
        return self._fetch(f"{self.base}{Route.RL_PEER}?round={round_}&wait={wait_s}", wait_s)

    def _fetch(self, url: str, wait_s: float) -> PolicyReply:
        content_type, body = self._call(urllib.request.Request(url), self.request_timeout_s + wait_s)
        if content_type.startswith(NPZ):
            version, state, meta = decode_parameters(body)
            return PolicyReply(version=version, done=bool(meta.pop("done", 0.0)), state=state, meta=meta)
        doc = json.loads(body)
        return PolicyReply(version=int(doc["version"]), done=bool(doc["done"]), state=None, meta={})
