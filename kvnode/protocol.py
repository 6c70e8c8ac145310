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

Each request kind may be sent only by the roles `ACCESS` names (below); any
other sender gets `unauthorized` for that request and keeps its connection.

Bad input: a frame over `MAX_FRAME` (16 MiB), bytes that are not msgpack, or
a map without an id gets an error reply (id 0) and the connection is closed;
a whole frame with an id but an unknown type or a field of the wrong type
gets a `bad_request` reply for that id and the connection goes on. The node
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
    # A replica's stored copy failed its checksum: nothing wrong was served,
    # but whether a write that met it took effect is not known.
    "corrupt": False,
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

# Who may send each request: the one table the node dispatches by.
#   client: a connection that presented the client token (anyone, when the
#           node requires none);
#   peer:   a node of the cluster: it proved the shared secret in the
#           handshake, or, on a node that has neither a secret nor any token,
#           named itself (such a node trusts its network; see kvnode.auth);
#   admin:  the admin token, or the proved secret (on a node with neither,
#           any client).
CLIENT, PEER, ADMIN = "client", "peer", "admin"
ROLES = (CLIENT, PEER, ADMIN)
_C, _P, _A = frozenset({CLIENT}), frozenset({PEER}), frozenset({ADMIN})
ACCESS: dict[str, frozenset[str]] = {
    "get": _C, "put": _C, "delete": _C,
    "local_get": _C,  # one replica's own copy, as a client may read it
    "preference_list": _C,  # read-only placement
    "status": _C | _A,  # read-only; an operator holding only the admin token may see it
    "replica_get": _P, "replica_put": _P, "coordinate": _P,
    "ae_hashes": _P, "ae_keys": _P, "ae_push": _P,
    "gossip": _P, "ring_get": _P, "ring_set": _P,
    "ae_round": _A, "join": _A, "leave": _A,  # change what the node holds or the ring
}
REQUESTS = frozenset(ACCESS)
# Only for nodes of the cluster (replica traffic, membership, ring changes).
PEER_REQUESTS = frozenset(k for k, who in ACCESS.items() if who == _P)
ADMIN_REQUESTS = frozenset(k for k, who in ACCESS.items() if who == _A)


def allowed(kind: str, roles: frozenset[str]) -> bool:
    """Whether a connection holding `roles` may send a request of `kind`."""
    return bool(ACCESS.get(kind, frozenset()) & roles)


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


class ByteBudget:
    """Bytes of partial frames a node holds across all its connections, with
    a cap: a connection that needs more than its free allowance waits for
    room (its partial-frame deadline bounds the wait), so many slow senders
    of large frames cannot make the node hold unbounded memory."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._freed = asyncio.Event()

    async def acquire(self, n: int) -> None:
        # One frame larger than the whole budget may still come in alone.
        while self.used + n > self.capacity and self.used > 0:
            self._freed.clear()
            await self._freed.wait()
        self.used += n

    def release(self, n: int) -> None:
        if n > 0:
            self.used -= n
            self._freed.set()  # every waiter looks again


class FrameTimeout(ProtocolError):
    """A frame begun but not finished within the partial-frame deadline."""


class FrameReader:
    """Frames from one stream, read in large chunks: under load one read
    brings many pipelined frames, where `read_frame` awaits twice per frame.

    A node's reader is bounded: `deadline` (seconds) for a frame begun to be
    complete, and `budget` for the bytes of partial frames beyond the `free`
    allowance each connection has (so small requests never wait for room)."""

    CHUNK = 1 << 16

    def __init__(
        self,
        reader: asyncio.StreamReader,
        *,
        deadline: float | None = None,
        budget: ByteBudget | None = None,
        free: int = 1 << 17,
    ) -> None:
        self._reader = reader
        self._buffer = bytearray()
        self._deadline = deadline
        self._budget = budget
        self._free = free
        self._charged = 0  # bytes of the buffer counted against the budget
        self._began: float | None = None  # loop time the current partial frame began

    @property
    def partial(self) -> bool:
        """Whether a frame has begun and not finished."""
        return bool(self._buffer)

    async def next(self) -> dict[str, Any] | None:
        """The next message, or None at a clean end of stream; raises
        ProtocolError like `read_frame`, FrameTimeout past the deadline."""
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
                    self._began = asyncio.get_running_loop().time() if buffer else None
                    self._settle()
                    return decode_body(body)
            chunk = await self._read()
            if not chunk:
                if buffer:
                    raise ProtocolError("connection closed inside a frame")
                return None
            if not buffer:
                self._began = asyncio.get_running_loop().time()
            buffer += chunk
            if self._budget is not None:
                more = max(0, len(buffer) - self._free) - self._charged
                if more > 0:
                    await self._within_deadline(self._budget.acquire(more))
                    self._charged += more

    async def _read(self) -> bytes:
        if not self._buffer or self._deadline is None:
            return await self._reader.read(self.CHUNK)
        return await self._within_deadline(self._reader.read(self.CHUNK))

    async def _within_deadline(self, work: Any) -> Any:
        if self._deadline is None or self._began is None:
            return await work
        try:
            async with asyncio.timeout_at(self._began + self._deadline):
                return await work
        except TimeoutError:
            raise FrameTimeout(f"a frame begun {self._deadline:g}s ago is not complete") from None

    def _settle(self) -> None:
        if self._budget is not None:
            keep = max(0, len(self._buffer) - self._free)
            self._budget.release(self._charged - keep)
            self._charged = keep

    def close(self) -> None:
        """Give back what this reader holds of the budget."""
        self._buffer.clear()
        self._settle()


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
