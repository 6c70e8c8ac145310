"""One outgoing protocol connection: handshake, then pipelined requests.

Used by the client library and by a node talking to its peers (through
`transport`). Each request gets a fresh id and a future; one reader task
matches replies to futures by id, so any number of requests may be in flight
on one connection and complete in any order. When the connection dies, every
request still waiting fails with `ConnectionLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

from . import auth, protocol


class ConnectionLost(ConnectionError):
    """The connection closed (or broke) before the reply arrived: the request
    may or may not have been carried out."""


class NotSent(ConnectionError):
    """The connection was already closed: the request was not sent."""


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: dict[str, Any]) -> None:
        self._reader = reader
        self._writer = writer
        self.peer = peer  # the hello_ok reply: the node's id, cluster, version
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._closed = False
        self._outbox = protocol.Outbox(writer)
        loop = asyncio.get_running_loop()
        self._heard_at = loop.time()  # when the last frame came in (the handshake's, at first)
        self._reader_task = loop.create_task(self._read_loop())

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        cluster: str,
        node: str | None = None,
        timeout: float = 5.0,
        secret: bytes | None = None,
        token: bytes | None = None,
    ) -> Connection:
        """Connect and shake hands; raises OSError (refused, unreachable),
        TimeoutError, or `protocol.RemoteError` if the node refuses us.

        A node (`node` set) that holds the cluster `secret` answers the
        node's challenge and checks the node's own proof in return; a client
        may present a `token`."""
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=protocol.MAX_FRAME + 64)
            try:
                reply = await cls._handshake(reader, writer, cluster, node, secret, token)
            except BaseException:
                writer.close()
                raise
        return cls(reader, writer, reply)

    @staticmethod
    async def _handshake(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cluster: str,
        node: str | None, secret: bytes | None, token: bytes | None,
    ) -> dict[str, Any]:
        client_nonce = auth.make_challenge() if secret is not None and node is not None else None
        writer.write(protocol.encode({
            "type": "hello", "id": 0, "version": protocol.VERSION, "cluster": cluster, "node": node,
            "nonce": client_nonce, "token": token,
        }))
        reply = await protocol.read_frame(reader)
        transcript = None
        if reply is not None and reply["type"] == "challenge":
            if secret is None or node is None or client_nonce is None:
                raise protocol.RemoteError("unauthorized", "the node wants a shared secret; none is configured", True)
            transcript = auth.Transcript(cluster=cluster, client=node, server=reply["node"],
                                         client_nonce=client_nonce, server_nonce=reply["nonce"])
            writer.write(protocol.encode({"type": "auth", "id": 0, "proof": auth.prove(secret, "client", transcript)}))
            reply = await protocol.read_frame(reader)
        if reply is None:
            raise ConnectionLost("the node closed the connection during the handshake")
        protocol.raise_if_error(reply)
        if reply["type"] != "hello_ok":
            raise protocol.ProtocolError(f"expected hello_ok, got {reply['type']}")
        # Mutual: the node must prove it holds the secret too.
        if (secret is not None and node is not None
                and (transcript is None or not auth.verify(secret, "server", transcript, reply.get("proof")))):
            raise protocol.RemoteError(
                    "unauthorized", f"node {reply['node']} did not prove it holds the cluster secret", True)
        return reply

    @property
    def closed(self) -> bool:
        return self._closed

    async def _read_loop(self) -> None:
        error: BaseException = ConnectionLost("connection closed by the node")
        try:
            frames = protocol.FrameReader(self._reader)
            while True:
                reply = await frames.next()
                if reply is None:
                    break
                self._heard_at = asyncio.get_running_loop().time()
                future = self._pending.pop(reply["id"], None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except (OSError, protocol.ProtocolError) as e:
            error = ConnectionLost(f"connection broken: {e}")
        except asyncio.CancelledError:
            error = ConnectionLost("connection closed")
        finally:
            self._closed = True
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(error)
            self._pending.clear()
            self._writer.close()

    async def request(self, message: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send a request and wait for its reply (an `error` reply is returned,
        not raised). Raises ConnectionLost or TimeoutError: both mean the
        request may have been carried out."""
        if self._closed:
            raise NotSent("connection already closed")
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._outbox.send({**message, "id": request_id})
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._pending.pop(request_id, None)

    def silent_for(self) -> float:
        """Seconds since the last frame came in on this connection."""
        return asyncio.get_running_loop().time() - self._heard_at

    def abort(self) -> None:
        """Drop the connection at once, unsent bytes and all (a stalled one
        would never flush them); every request waiting fails with
        `ConnectionLost`."""
        self._closed = True
        self._reader_task.cancel()
        self._writer.transport.abort()

    async def close(self) -> None:
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader_task
        self._closed = True
        # A reader task cancelled before it first ran never reaches its finally.
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
