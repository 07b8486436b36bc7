"""Wire format between workers and parameter-server shards: one TCP connection per (worker, shard).

A frame is  !I header length | header (UTF-8 JSON object) | !Q payload length | payload (raw float32,
little-endian). Requests carry "op": "init" | "pull" | "push" | "bye"; every reply carries "ok" and, when
false, "error".
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

MAX_HEADER_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 1 << 34
_HEADER = struct.Struct("!I")
_PAYLOAD = struct.Struct("!Q")
WIRE_DTYPE = np.dtype("<f4")


class ProtocolError(ConnectionError):
    """The peer closed the connection or sent something that is not a frame."""


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            raise ProtocolError("connection closed by peer")
        chunks += chunk
    return bytes(chunks)


def send_frame(sock: socket.socket, header: dict[str, Any], payload: bytes = b"") -> None:
    encoded = json.dumps(header).encode()
    sock.sendall(b"".join((_HEADER.pack(len(encoded)), encoded, _PAYLOAD.pack(len(payload)), payload)))


def recv_frame(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    (header_len,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if header_len > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {header_len} bytes is too large")
    try:
        header = json.loads(_recv_exact(sock, header_len))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    (payload_len,) = _PAYLOAD.unpack(_recv_exact(sock, _PAYLOAD.size))
    if payload_len > MAX_PAYLOAD_BYTES or payload_len % WIRE_DTYPE.itemsize:
        raise ProtocolError(f"bad payload length {payload_len}")
    return header, _recv_exact(sock, payload_len)


def to_wire(values: npt.NDArray[Any]) -> bytes:
    return np.ascontiguousarray(values, dtype=WIRE_DTYPE).tobytes()


def from_wire(payload: bytes) -> npt.NDArray[np.float32]:
    return np.frombuffer(payload, dtype=WIRE_DTYPE).astype(np.float32)
