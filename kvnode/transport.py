"""All of a node's traffic to its peers goes through a `Transport`.

That one seam is what a deterministic simulation replaces with an in-memory
network. `TcpTransport` keeps one pipelined `Connection` per peer, opened on
first use and reopened after it breaks.

Reachability, for quorum decisions: a peer is reachable when a connection to
it is open or can be opened within the connect timeout. A killed node refuses
connections at once, so a coordinator can say `unavailable` (nothing was
sent) before writing anything. A node behind a partition that still accepts
connections but never answers counts as reachable; requests to it then time
out, which is indeterminate, as it must be.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from .clock import Clock
from .connection import Connection, ConnectionLost, NotSent
from .protocol import RemoteError


class PeerUnreachable(ConnectionError):
    """No connection could be opened to the peer: nothing was sent."""


class Transport(Protocol):
    async def reachable(self, peer: str) -> bool:
        """Whether `peer` can be sent a request now (see module docstring).
        Never raises; never sends a request."""
        ...

    def connected_to(self, peer: str) -> bool:
        """Whether a connection to `peer` is open now (no I/O): a fast yes
        for `reachable`; False means "ask `reachable`", not "down"."""
        ...

    async def request(self, peer: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send a request to `peer` and return its reply (an `error` reply is
        returned, not raised). Raises PeerUnreachable if nothing was sent,
        TimeoutError or ConnectionLost if it was sent but not answered."""
        ...

    async def close(self) -> None: ...


class TcpTransport:
    # After a failed connect, a peer is not retried for this long: a coordinator
    # serving many requests would otherwise wait out a connect per request.
    RETRY_AFTER = 0.1

    def __init__(
        self,
        node: str,
        cluster: str,
        peers: dict[str, tuple[str, int]],
        *,
        clock: Clock,
        connect_timeout: float,
        secret: bytes | None = None,
    ) -> None:
        self._node = node
        self._cluster = cluster
        self._peers = peers
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._secret = secret
        self._conns: dict[str, Connection] = {}
        self._connecting: dict[str, asyncio.Future[Connection]] = {}
        self._failed_at: dict[str, float] = {}

    async def _connection(self, peer: str) -> Connection:
        conn = self._conns.get(peer)
        if conn is not None and not conn.closed:
            return conn
        pending = self._connecting.get(peer)
        if pending is not None:
            return await asyncio.shield(pending)
        failed = self._failed_at.get(peer)
        if failed is not None and self._clock.monotonic() - failed < self.RETRY_AFTER:
            raise PeerUnreachable(f"{peer}: connect failed {self._clock.monotonic() - failed:.3f}s ago")
        if peer not in self._peers:
            raise PeerUnreachable(f"{peer}: not a member of this cluster")
        host, port = self._peers[peer]
        future: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self._connecting[peer] = future
        try:
            conn = await Connection.open(
                host, port, cluster=self._cluster, node=self._node, timeout=self._connect_timeout,
                secret=self._secret,
            )
        except (OSError, TimeoutError, ConnectionLost, RemoteError) as e:
            self._failed_at[peer] = self._clock.monotonic()
            error = PeerUnreachable(f"{peer} at {host}:{port}: {e or type(e).__name__}")
            future.set_exception(error)
            future.exception()  # retrieved: waiters get it via shield
            raise error from None
        finally:
            del self._connecting[peer]
        self._failed_at.pop(peer, None)
        self._conns[peer] = conn
        future.set_result(conn)
        return conn

    async def reachable(self, peer: str) -> bool:
        try:
            await self._connection(peer)
        except PeerUnreachable:
            return False
        return True

    async def request(self, peer: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        conn = await self._connection(peer)
        try:
            return await conn.request(message, timeout)
        except NotSent as e:
            raise PeerUnreachable(f"{peer}: {e}") from None
        except TimeoutError:
            if conn.silent_for() >= timeout and not conn.closed:
                # Not one frame back for a whole timeout: the stream is
                # stalled (TCP backing off after losses, or a backlog of
                # requests abandoned ahead of this one), and every later
                # request would wait behind it. A fresh connection starts
                # clean; the requests still waiting here fail as lost.
                conn.abort()
                if self._conns.get(peer) is conn:
                    del self._conns[peer]
            raise

    def connected_to(self, peer: str) -> bool:
        conn = self._conns.get(peer)
        return conn is not None and not conn.closed

    def set_peer(self, peer: str, address: tuple[str, int]) -> None:
        """Learn (or update) where a peer listens, e.g. a node that joined."""
        if self._peers.get(peer) != address:
            self._peers[peer] = address
            self._failed_at.pop(peer, None)
            self._conns.pop(peer, None)

    def connected(self) -> dict[str, bool]:
        return {p: (c := self._conns.get(p)) is not None and not c.closed for p in self._peers}

    async def close(self) -> None:
        for conn in list(self._conns.values()):
            with contextlib.suppress(Exception):
                await conn.close()
        self._conns.clear()
