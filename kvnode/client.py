"""The client library of the reference node: `AsyncClient` and its blocking twin `Client`.

    from kvnode.client import Client, KvError

    with Client(["127.0.0.11:7000", "127.0.0.12:7000"], timeout=2.0) as kv:
        kv.put("cart", "apple")                  # a blind put: no context
        read = kv.get("cart")                    # Read(values=[b"apple"], context=b"...")
        kv.put("cart", b"apple,pear", read.context)  # supersedes what was read
        try:
            kv.delete("cart", kv.get("cart").context)
        except KvError as e:
            # e.definite: True -> certainly not done (history: fail)
            #             False -> may have happened (history: info)
            print(kv.node, e.code, e.definite, e)

and, in asyncio code, the same with `await`:

    async with AsyncClient("127.0.0.11:7000") as kv:
        reads = await asyncio.gather(*(kv.get(f"k{i}") for i in range(100)))

**Connections.** A client connects lazily, on its first request (or on
`connect()`), to the first address that accepts it, trying the others in
order when one refuses, times out or fails the handshake: nothing has been
sent then, so trying the next is safe. It stays with that node (`node` is its
id, for the history) until the connection breaks, and then connects afresh,
again from the first address, on the next request. A request that was sent is
never retried, here or elsewhere: if no reply comes, the caller gets an
indeterminate error and decides. A refusal because the node belongs to
another cluster is a configuration error and is raised at once.

**Pipelining.** One connection carries any number of requests at once; many
coroutines may share one `AsyncClient`, and many threads one `Client`.

**Errors** are `KvError`s whose `definite` says what a history must record:

| exception | code | definite | when |
|---|---|---|---|
| `Unavailable` | unavailable | True | too few replicas reachable; nothing was written |
| `BadRequest` | bad_request | True | the node refused the request as malformed |
| `TooManySiblings` | too_many_siblings | True | the put would exceed the sibling limit |
| `ConnectionFailed` | connection_failed, wrong_cluster, closed | True | no node could be reached; nothing was sent |
| `Timeout` | timeout | False | the node's quorum, or the client, gave up waiting |
| `ConnectionLost` | connection_lost | False | the request was sent and the connection broke |
| `KvError` | internal, protocol_error, any other | False unless the node says definite | |

`definite` is never True for an error that the node reported as
indeterminate. Arguments of the wrong type raise `TypeError` and bad
addresses `ValueError`, as programming errors, before anything is sent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import weakref
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from . import protocol
from .connection import Connection as _Connection
from .connection import ConnectionLost as _WireConnectionLost

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "ConnectionFailed",
    "ConnectionLost",
    "KvError",
    "Read",
    "Timeout",
    "TooManySiblings",
    "Unavailable",
]

_T = TypeVar("_T")

# The id an operator's client names when it proves the cluster secret.
ADMIN_NODE = "kvnode-admin"

_Data = bytes | bytearray | memoryview | str


@dataclass(frozen=True, kw_only=True, slots=True)
class Read:
    """The answer to a get: the sibling values (none if the key is absent or
    deleted, several after concurrent puts) and the causal context to pass to
    the put or delete that supersedes them (None if there is nothing to
    supersede, and always None under last-write-wins)."""

    values: list[bytes]
    context: bytes | None


# -- errors -----------------------------------------------------------------


class KvError(Exception):
    """A request that did not succeed. `code` is short and stable (the
    node's error code, or the client's own); `definite` is True if the
    operation certainly did not take effect (record `fail`), False if it may
    have (record `info`); `node` is the id of the node it went to, if any."""

    code: str = "error"
    definite: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        definite: bool | None = None,
        node: str | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if definite is not None:
            self.definite = definite
        self.node = node


class Unavailable(KvError):
    """Too few replicas were reachable to try; nothing was written."""

    code = "unavailable"
    definite = True


class Timeout(KvError):
    """No answer in time, from the replicas (the node's quorum timed out) or
    from the node (the client's `timeout`): the operation may have happened."""

    code = "timeout"
    definite = False


class BadRequest(KvError):
    """The node refused the request as malformed (a bad context, a frame too
    large); nothing was done."""

    code = "bad_request"
    definite = True


class TooManySiblings(KvError):
    """The put would leave more siblings than the node allows; nothing was
    written. Read, and put with the context, to resolve them."""

    code = "too_many_siblings"
    definite = True


class ConnectionFailed(KvError):
    """No node could be connected to (or the client is closed), so the
    request was never sent."""

    code = "connection_failed"
    definite = True


class ConnectionLost(KvError):
    """The request was sent and the connection broke before the reply came:
    the operation may have happened."""

    code = "connection_lost"
    definite = False


_BY_CODE: dict[str, type[KvError]] = {
    cls.code: cls for cls in (Unavailable, Timeout, BadRequest, TooManySiblings)
}


def _remote_error(reply: dict[str, Any], node: str | None) -> KvError:
    """The exception for an `error` reply. A known code picks its class; the
    reply's `definite` can make it indeterminate, never the reverse."""
    code = str(reply.get("code"))
    message = str(reply.get("message"))
    said_definite = reply.get("definite") is True
    cls = _BY_CODE.get(code, KvError)
    definite = said_definite and (cls.definite if cls is not KvError else True)
    return cls(f"{code} from node {node}: {message}", code=code, definite=definite, node=node)


# -- arguments --------------------------------------------------------------


def _as_bytes(data: _Data, what: str) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"{what} must be bytes or str, not {type(data).__name__}")


def _as_context(context: bytes | bytearray | memoryview | None) -> bytes | None:
    if context is None:
        return None
    if isinstance(context, bytes | bytearray | memoryview):
        return bytes(context)
    raise TypeError(f"a context must be bytes (from a Read) or None, not {type(context).__name__}")


def _parse_addresses(addresses: str | Sequence[str]) -> list[tuple[str, int]]:
    """ "host:port" strings (a str may hold several, comma-separated; an IPv6
    host in brackets) as (host, port) pairs."""
    items = addresses.split(",") if isinstance(addresses, str) else list(addresses)
    parsed = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"an address must be a 'host:port' str, not {type(item).__name__}")
        host, sep, port = item.strip().rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad address {item!r}: expected 'host:port'")
        parsed.append((host, int(port)))
    if not parsed:
        raise ValueError("a client needs at least one address")
    return parsed


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the asyncio client -----------------------------------------------------


class AsyncClient:
    """A client for asyncio code. Cheap to make (it connects on first use);
    share one among many coroutines of one event loop. `timeout` bounds each
    request from sending to reply; `connect_timeout` bounds connecting to and
    shaking hands with each address in turn."""

    def __init__(
        self,
        addresses: str | Sequence[str],
        *,
        cluster: str = "kvnode",
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        token: bytes | None = None,
        secret: bytes | None = None,
    ) -> None:
        """`token`: presented to nodes that require a client token (or the
        admin token, for admin requests). `secret`: the cluster secret, for
        an operator's tools: the client proves it in the handshake (under the
        id `ADMIN_NODE`) and may then send admin requests to a node that
        has no admin token of its own."""
        if not isinstance(cluster, str) or not cluster:
            raise ValueError("cluster must be a non-empty str")
        if not timeout > 0 or not connect_timeout > 0:
            raise ValueError("timeout and connect_timeout must be positive")
        self._addresses = _parse_addresses(addresses)
        self._cluster = cluster
        self._timeout = float(timeout)
        self._connect_timeout = float(connect_timeout)
        self._token = token
        self._secret = secret
        self._conn: _Connection | None = None
        self._node: str | None = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def node(self) -> str | None:
        """The id of the node this client talks to (from its handshake
        reply), or None before the first connection."""
        return self._node

    async def connect(self) -> str:
        """Connect now rather than on the first request (a no-op if
        connected); returns the node's id. Raises ConnectionFailed."""
        conn = await self._connection()
        return str(conn.peer["node"])

    async def get(self, key: _Data) -> Read:
        """The key's sibling values and causal context."""
        return self._read(await self._request({"type": "get", "key": _as_bytes(key, "a key")}, "get_ok"))

    async def local_get(self, key: _Data) -> Read:
        """What the connected node's own replica holds for `key`, bypassing
        the coordinator (no quorum, no read repair): for tests and final
        checks that must see each replica's state."""
        return self._read(
            await self._request({"type": "local_get", "key": _as_bytes(key, "a key")}, "local_get_ok")
        )

    def _read(self, reply: dict[str, Any]) -> Read:
        values = reply["values"]
        if not all(isinstance(v, bytes) for v in values):
            raise KvError(
                f"node {self._node} sent a get_ok whose values are not all bytes",
                code="protocol_error", definite=False, node=self._node,
            )
        return Read(values=list(values), context=reply["context"])

    async def put(
        self, key: _Data, value: _Data, context: bytes | bytearray | memoryview | None = None
    ) -> None:
        """Store `value`, superseding the siblings that `context` (from a
        `Read`) covers; without one, it stands beside every stored value."""
        await self._request(
            {
                "type": "put",
                "key": _as_bytes(key, "a key"),
                "value": _as_bytes(value, "a value"),
                "context": _as_context(context),
            },
            "put_ok",
        )

    async def delete(self, key: _Data, context: bytes | bytearray | memoryview | None = None) -> None:
        """Delete the siblings that `context` covers (a tombstone; a value
        written concurrently survives as a sibling)."""
        await self._request(
            {"type": "delete", "key": _as_bytes(key, "a key"), "context": _as_context(context)},
            "delete_ok",
        )

    async def status(self) -> dict[str, Any]:
        """The node's status: its id (`node`), ring share, peers and counters."""
        return await self.admin("status")

    async def admin(self, kind: str, **fields: Any) -> dict[str, Any]:
        """An admin request of type `kind` (e.g. "ae_round"); the reply's fields."""
        reply = await self._request({"type": kind, **fields}, f"{kind}_ok")
        return {k: v for k, v in reply.items() if k not in ("type", "id")}

    async def close(self) -> None:
        """Close the connection. Requests still waiting for a reply end in
        ConnectionLost; later ones raise ConnectionFailed. Idempotent."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals --

    async def _request(self, message: dict[str, Any], expect: str) -> dict[str, Any]:
        conn = await self._connection()
        # Nothing awaits between here and the write in `conn.request`, and
        # `_connection` returned an open connection: from now on the request
        # counts as sent, and no failure may be reported as definite.
        node = str(conn.peer["node"])
        try:
            reply = await conn.request(message, timeout=self._timeout)
        except TimeoutError:
            raise Timeout(
                f"no reply from node {node} within {self._timeout:g}s: "
                f"the {message['type']} may or may not have happened",
                node=node,
            ) from None
        except protocol.ProtocolError as e:
            # Raised by encoding, before anything was written (a frame too large).
            raise BadRequest(f"cannot send the {message['type']}: {e}", node=node) from None
        except (_WireConnectionLost, OSError) as e:
            raise ConnectionLost(
                f"connection to node {node} lost before the reply: "
                f"the {message['type']} may or may not have happened ({e})",
                node=node,
            ) from None
        if reply["type"] == "error":
            raise _remote_error(reply, node)
        if reply["type"] != expect:
            raise KvError(
                f"node {node} answered a {message['type']} with {reply['type']!r}, not {expect!r}",
                code="protocol_error", definite=False, node=node,
            )
        return reply

    async def _connection(self) -> _Connection:
        """An open connection, made if need be. Raises ConnectionFailed."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("an AsyncClient can only be used from the event loop it was first used in")
        conn = self._conn
        if conn is not None and not conn.closed and not self._closed:
            return conn
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._closed:
                raise ConnectionFailed("the client is closed", code="closed")
            conn = self._conn
            if conn is not None and not conn.closed:
                return conn
            if conn is not None:
                self._conn = None
                await conn.close()
            conn = await self._open()
            if self._closed:  # closed while we were connecting
                await conn.close()
                raise ConnectionFailed("the client is closed", code="closed")
            self._conn = conn
            self._node = str(conn.peer["node"])
            return conn

    async def _open(self) -> _Connection:
        """Try each address in order; every failure here happens before any
        request is sent, so moving on to the next address is safe."""
        reasons = []
        for host, port in self._addresses:
            where = _show(host, port)
            try:
                conn = await _Connection.open(
                    host, port, cluster=self._cluster, timeout=self._connect_timeout, token=self._token,
                    node=ADMIN_NODE if self._secret is not None else None, secret=self._secret,
                )
            except protocol.RemoteError as e:
                if e.code == "wrong_cluster":
                    raise ConnectionFailed(
                        f"the node at {where} refused us: it is not in cluster {self._cluster!r} "
                        f"(check the client's cluster= setting): {e.message}",
                        code="wrong_cluster",
                    ) from None
                reasons.append(f"{where}: refused: {e}")
                continue
            except TimeoutError:
                reasons.append(f"{where}: no answer within {self._connect_timeout:g}s")
                continue
            except (OSError, protocol.ProtocolError) as e:  # _WireConnectionLost is an OSError
                reasons.append(f"{where}: {type(e).__name__}: {e}")
                continue
            peer = conn.peer
            if peer.get("cluster") != self._cluster:
                await conn.close()
                raise ConnectionFailed(
                    f"the node at {where} is in cluster {peer.get('cluster')!r}, "
                    f"not {self._cluster!r} (check the client's cluster= setting)",
                    code="wrong_cluster",
                )
            return conn
        raise ConnectionFailed(
            "could not connect to any node, so nothing was sent: " + "; ".join(reasons)
        )


# -- the blocking client ----------------------------------------------------


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


async def _shutdown(client: AsyncClient) -> None:
    await client.close()
    # Requests whose connection just closed have their ConnectionLost
    # scheduled: let them report it; then cancel what is still connecting.
    await asyncio.sleep(0)
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _stop(
    loop: asyncio.AbstractEventLoop, thread: threading.Thread, client: AsyncClient
) -> None:
    """Close the client, stop the loop and its thread. Run once, by `close`
    or (for a Client never closed) when it is collected or at exit."""
    if loop.is_closed():
        return
    if threading.current_thread() is thread:  # collected on the loop's own thread
        loop.call_soon(loop.stop)
        return
    if thread.is_alive():
        future = asyncio.run_coroutine_threadsafe(_shutdown(client), loop)
        with contextlib.suppress(Exception):  # best effort: the loop stops regardless
            future.result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
    if not thread.is_alive():
        loop.close()


class Client:
    """The blocking client: the methods of `AsyncClient`, run on an event
    loop of its own in a private background thread, so it works from plain
    scripts, from threads, and from inside code that already runs an event
    loop. Thread-safe: many threads may share one Client, and their requests
    are pipelined on one connection."""

    def __init__(
        self,
        addresses: str | Sequence[str],
        *,
        cluster: str = "kvnode",
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        token: bytes | None = None,
        secret: bytes | None = None,
    ) -> None:
        self._async = AsyncClient(
            addresses, cluster=cluster, timeout=timeout, connect_timeout=connect_timeout, token=token,
            secret=secret,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=_run_loop, args=(self._loop,), name="kvnode-client", daemon=True
        )
        self._thread.start()
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _stop, self._loop, self._thread, self._async)

    @property
    def node(self) -> str | None:
        """The id of the node this client talks to, or None before the first connection."""
        return self._async.node

    def connect(self) -> str:
        """Connect now rather than on the first request; returns the node's id."""
        return self._call(self._async.connect())

    def get(self, key: _Data) -> Read:
        """The key's sibling values and causal context."""
        return self._call(self._async.get(key))

    def local_get(self, key: _Data) -> Read:
        """What the connected node's own replica holds for `key` (no quorum)."""
        return self._call(self._async.local_get(key))

    def put(self, key: _Data, value: _Data, context: bytes | bytearray | memoryview | None = None) -> None:
        """Store `value`, superseding the siblings that `context` covers."""
        self._call(self._async.put(key, value, context))

    def delete(self, key: _Data, context: bytes | bytearray | memoryview | None = None) -> None:
        """Delete the siblings that `context` covers."""
        self._call(self._async.delete(key, context))

    def status(self) -> dict[str, Any]:
        """The node's status: its id (`node`), ring share, peers and counters."""
        return self._call(self._async.status())

    def admin(self, kind: str, **fields: Any) -> dict[str, Any]:
        """An admin request of type `kind` (e.g. "ae_round"); the reply's fields."""
        return self._call(self._async.admin(kind, **fields))

    def close(self) -> None:
        """Close the connection and stop the background thread. Requests
        still in flight in other threads end in ConnectionLost (or
        ConnectionFailed if they had not been sent). Idempotent."""
        self._check_thread()
        with self._lock:
            self._closed = True
        self._finalizer()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_thread(self) -> None:
        if threading.get_ident() == self._thread.ident:
            raise RuntimeError("a blocking Client cannot be used from its own event loop's thread")

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        self._check_thread()
        with self._lock:
            if self._closed:
                coro.close()
                raise ConnectionFailed("the client is closed", code="closed")
            # Submitted under the lock, so before close() schedules the
            # shutdown: every submitted request completes or is cancelled.
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise ConnectionLost(
                "the client was closed while the request was in flight: "
                "it may or may not have happened",
                node=self._async.node,
            ) from None
        except BaseException:  # KeyboardInterrupt: do not leave it running
            future.cancel()
            raise
