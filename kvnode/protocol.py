"""The wire protocol between clients and nodes, and between nodes.

Transport is TCP. Each frame is a 4-byte big-endian length followed by that
many bytes of msgpack: a map with at least `type` (a string) and `id` (an
integer chosen by the sender of a request and echoed in its reply, so that
requests can be pipelined on one connection and answered out of order).

A connection starts with a handshake. The connecting side sends

    {"type": "hello", "id": 0, "version": 1, "cluster": "c1", "node": "n2" | None,
     "nonce": bytes | None, "token": bytes | None}

(`node` is the peer's id, None for a client) and the node answers `hello_ok`
with its own id, or an `error` and closes: a peer from another cluster, or a
protocol version it does not speak, is refused. When the cluster's nodes share
a secret, a connecting node must prove it holds it: the node answers `hello`
with a `challenge` (its own nonce), the peer replies `auth` (an HMAC over both
nonces, both ids and the cluster), and only then comes `hello_ok`, carrying
the node's own proof so the peer can check it in turn (`kvnode.auth`). A
client (node None) may have to present a token instead.

Requests and their replies (every field named here is required):

| request | fields | reply |
|---|---|---|
| `get` | key | `get_ok`: values (list of bytes), context (bytes or nil) |
| `put` | key, value, context (bytes or nil) | `put_ok` |
| `delete` | key, context | `delete_ok` |
| `local_get` | key | `local_get_ok`: this replica's own values and context (no quorum) |
| `preference_list` | key | `preference_list_ok`: nodes, the key's N primaries as this node's ring places them |
| `status` | | `status_ok`: node, ring share, peers, counters |
| `replica_get` | key | `replica_get_ok`: state (bytes or nil) |
| `replica_put` | key, state | `replica_put_ok` (after the state is durable) |
| `coordinate` | op ("put"/"delete"), key, value, context | as `put`/`delete` |
| `ae_hashes`, `ae_keys`, `ae_push` | see SCHEMA | anti-entropy between replicas |
| `ae_round` | | `ae_round_ok`: run an anti-entropy round now (admin) |
| `gossip` | from, members, ring_epoch, ring | `gossip_ok`: the same, what the asker lacks |
| `ring_get`, `ring_set` | (epoch, ring) | the versioned ring, read or installed if newer |
| `join` | seed | `join_ok`: this node joined the seed's cluster (admin) |
| `leave` | | `leave_ok`: this node hands its partitions over (admin) |

Any request may instead get `{"type": "error", "code": ..., "message": ...,
"definite": bool}`. `definite` tells the client whether the operation
certainly did not happen (`unavailable`, `bad_request`, `too_many_siblings`)
or may have (`timeout`, `internal`): exactly what a history must record as
`fail` versus `info`.

Bad input: a frame over `MAX_FRAME` (16 MiB), bytes that are not msgpack, a
map without a type or id, an unknown type or a field of the wrong type gets an
error reply where an id can be found, and the connection is closed; the node
goes on serving every other connection.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Mapping
from typing import Any

import msgpack

from . import auth, membership

VERSION = 1
MAX_FRAME = 16 << 20
LENGTH = struct.Struct(">I")

# Error codes, and whether each means "certainly not done".
DEFINITE = {
    "unavailable": True,
    "bad_request": True,
    "too_many_siblings": True,
    "wrong_cluster": True,
    "unauthorized": True,
    "timeout": False,
    "internal": False,
}

_BYTES = (bytes,)
_OPT_BYTES = (bytes, type(None))
_OPT_STR = (str, type(None))

# For each message type, its required fields and their allowed types.
SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "hello": {"version": (int,), "cluster": (str,), "node": _OPT_STR, **auth.HELLO_FIELDS},
    "hello_ok": {"version": (int,), "cluster": (str,), "node": (str,), **auth.HELLO_OK_FIELDS},
    **auth.SCHEMA,  # challenge, auth: the handshake's middle steps when peers share a secret
    **membership.SCHEMA,  # gossip, gossip_ok
    "get": {"key": _BYTES},
    "get_ok": {"values": (list,), "context": _OPT_BYTES},
    "put": {"key": _BYTES, "value": _BYTES, "context": _OPT_BYTES},
    "put_ok": {},
    "delete": {"key": _BYTES, "context": _OPT_BYTES},
    "delete_ok": {},
    "local_get": {"key": _BYTES},
    "local_get_ok": {"values": (list,), "context": _OPT_BYTES},
    "preference_list": {"key": _BYTES},
    "preference_list_ok": {"nodes": (list,)},
    "status": {},
    "status_ok": {"node": (str,)},
    "replica_get": {"key": _BYTES},
    "replica_get_ok": {"state": _OPT_BYTES},
    "replica_put": {"key": _BYTES, "state": _BYTES},
    "replica_put_ok": {},
    "coordinate": {"op": (str,), "key": _BYTES, "value": _OPT_BYTES, "context": _OPT_BYTES},
    # Anti-entropy (kvnode.antientropy). The hashes of nodes `indexes` of
    # `level` of the peer's Merkle tree of `partition` (fanout/depth must match
    # the peer's or it answers bad_request).
    "ae_hashes": {"partition": (int,), "fanout": (int,), "depth": (int,), "level": (int,), "indexes": (list,)},
    "ae_hashes_ok": {"hashes": (list,)},
    # The peer's [key, state] pairs in leaf buckets `leaves`; the reply's
    # `leaves`: how many of the requested leaves (a prefix) its items cover.
    "ae_keys": {"partition": (int,), "fanout": (int,), "depth": (int,), "leaves": (list,)},
    "ae_keys_ok": {"items": (list,), "leaves": (int,)},
    # [key, state] pairs for the peer to merge; `merged`: how many changed its copy.
    "ae_push": {"partition": (int,), "items": (list,)},
    "ae_push_ok": {"merged": (int,)},
    # Run one anti-entropy round now (admin).
    "ae_round": {},
    "ae_round_ok": {"result": (dict,)},
    # Ring changes (joins and leaves). A ring dict is `Ring.to_dict()` plus
    # "addresses": {node: "host:port"}.
    "ring_get": {},
    "ring_get_ok": {"epoch": (int,), "ring": (dict,), "node": (str,)},
    "ring_set": {"epoch": (int,), "ring": (dict,)},
    "ring_set_ok": {"epoch": (int,)},
    "join": {"seed": (str,)},  # admin: join the cluster that `seed` (host:port) belongs to
    "join_ok": {"epoch": (int,)},
    "leave": {},  # admin: hand this node's partitions to the others and leave
    "leave_ok": {"epoch": (int,)},
    "error": {"code": (str,), "message": (str,), "definite": (bool,)},
}

REQUESTS = frozenset(
    {"get", "put", "delete", "local_get", "preference_list", "status", "replica_get", "replica_put", "coordinate",
     "ae_hashes", "ae_keys", "ae_push", "ae_round", "gossip", "ring_get", "ring_set", "join", "leave"}
)
# Only for nodes of the cluster: when peers share a secret, a connection must
# have proved it holds the secret before it may send these.
PEER_REQUESTS = frozenset(
    {"replica_get", "replica_put", "coordinate", "ae_hashes", "ae_keys", "ae_push", "gossip",
     "ring_get", "ring_set"}
)


class ProtocolError(Exception):
    """A frame or message that breaks the protocol. `request_id` is the id
    of the offending message when one could be read, so it can be answered."""

    def __init__(self, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class RemoteError(Exception):
    """An `error` reply, raised on the side that sent the request."""

    def __init__(self, code: str, message: str, definite: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.definite = definite


def encode(message: Mapping[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit")
    return LENGTH.pack(len(body)) + body


def error(request_id: int, code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "id": request_id, "code": code, "message": message,
            "definite": DEFINITE.get(code, False)}


def decode_body(body: bytes) -> dict[str, Any]:
    """Parse and validate one frame's body against `SCHEMA`."""
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types
        raise ProtocolError(f"malformed msgpack: {type(e).__name__}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"a frame must hold a map, not {type(message).__name__}")
    request_id = message.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool) or not 0 <= request_id < 2**63:
        raise ProtocolError("a frame needs an integer id")
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in SCHEMA:
        raise ProtocolError(f"unknown message type {kind!r:.40}", request_id)
    for name, types in SCHEMA[kind].items():
        if name not in message:
            raise ProtocolError(f"{kind}: missing field {name!r}", request_id)
        value = message[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ProtocolError(f"{kind}: field {name!r} has the wrong type ({type(value).__name__})", request_id)
    return message


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None at a clean end of stream."""
    try:
        head = await reader.readexactly(LENGTH.size)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise ProtocolError("connection closed inside a frame header") from None
    (length,) = LENGTH.unpack(head)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed inside a frame") from None
    return decode_body(body)


class FrameReader:
    """Frames from one stream, read in large chunks: under load one read
    brings many pipelined frames, where `read_frame` awaits twice per frame."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buffer = bytearray()

    async def next(self) -> dict[str, Any] | None:
        """The next message, or None at a clean end of stream; raises
        ProtocolError like `read_frame`."""
        buffer = self._buffer
        while True:
            if len(buffer) >= LENGTH.size:
                (length,) = LENGTH.unpack_from(buffer)
                if length > MAX_FRAME:
                    raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
                end = LENGTH.size + length
                if len(buffer) >= end:
                    body = bytes(buffer[LENGTH.size : end])
                    del buffer[:end]
                    return decode_body(body)
            chunk = await self._reader.read(1 << 16)
            if not chunk:
                if buffer:
                    raise ProtocolError("connection closed inside a frame")
                return None
            buffer += chunk


class Outbox:
    """Frames bound for one stream, written together once per turn of the
    event loop: under load, many replies (or pipelined requests) leave in one
    system call instead of one each."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._frames: list[bytes] = []

    def send(self, message: Mapping[str, Any]) -> None:
        """Queue `message` (raises ProtocolError, sending nothing, if too large)."""
        frame = encode(message)
        if not self._frames:
            asyncio.get_running_loop().call_soon(self._flush)
        self._frames.append(frame)

    def _flush(self) -> None:
        frames, self._frames = self._frames, []
        if frames and not self._writer.is_closing():
            self._writer.write(b"".join(frames))


def raise_if_error(reply: Mapping[str, Any]) -> None:
    if reply.get("type") == "error":
        raise RemoteError(str(reply.get("code")), str(reply.get("message")), bool(reply.get("definite")))
