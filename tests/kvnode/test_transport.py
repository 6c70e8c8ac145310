"""The peer transport (kvnode.transport.TcpTransport) against a fake peer on
127.0.0.1: a connection that answers nothing for a whole timeout is dropped,
so that the next request gets a fresh one instead of waiting behind a stalled
stream; a connection that answers other requests is kept."""

from __future__ import annotations

import asyncio
from typing import Any

from kvnode import protocol
from kvnode.clock import SystemClock
from kvnode.connection import ConnectionLost
from kvnode.transport import TcpTransport


class FakePeer:
    """Shakes hands, then answers `status` at once and `get` never. Every
    request on the connections listed in `deaf` goes unanswered."""

    def __init__(self, deaf: set[int]) -> None:
        self.deaf = deaf
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        number = self.accepted
        try:
            hello = await protocol.read_frame(reader)
            assert hello is not None and hello["type"] == "hello"
            writer.write(protocol.encode({"type": "hello_ok", "id": 0, "node": "p", "cluster": "c",
                                          "version": protocol.VERSION, "proof": None}))
            while (request := await protocol.read_frame(reader)) is not None:
                if number in self.deaf or request["type"] == "get":
                    continue
                writer.write(protocol.encode({"type": "status_ok", "id": request["id"], "node": "p"}))
        except (OSError, protocol.ProtocolError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def run(peer: FakePeer, body: Any) -> None:
    async def main() -> None:
        address = await peer.start()
        transport = TcpTransport("n1", "c", {"p": address}, clock=SystemClock(), connect_timeout=1.0)
        try:
            await body(transport)
        finally:
            await transport.close()
            await peer.stop()

    asyncio.run(main())


def test_a_connection_silent_for_a_whole_timeout_is_replaced() -> None:
    peer = FakePeer(deaf={1})  # the first connection stalls: nothing ever comes back on it

    async def body(transport: TcpTransport) -> None:
        waiting = asyncio.ensure_future(transport.request("p", {"type": "status"}, 5.0))
        await asyncio.sleep(0.05)
        try:
            await transport.request("p", {"type": "status"}, 0.3)
            raise AssertionError("a request on a deaf connection was answered")
        except TimeoutError:
            pass
        # The request still waiting on the stalled connection fails as lost ...
        try:
            await asyncio.wait_for(waiting, 1.0)
            raise AssertionError("a request on a deaf connection was answered")
        except ConnectionLost:
            pass
        # ... and the next one goes over a fresh connection, which answers.
        reply = await transport.request("p", {"type": "status"}, 1.0)
        assert reply["type"] == "status_ok"
        assert peer.accepted == 2

    run(peer, body)


def test_a_slow_request_on_a_connection_that_answers_others_keeps_it() -> None:
    peer = FakePeer(deaf=set())

    async def body(transport: TcpTransport) -> None:
        slow = asyncio.ensure_future(transport.request("p", {"type": "get", "key": b"k"}, 0.5))
        for _ in range(10):  # replies keep coming on the same connection meanwhile
            assert (await transport.request("p", {"type": "status"}, 1.0))["type"] == "status_ok"
            await asyncio.sleep(0.08)
        try:
            await slow
            raise AssertionError("a request the peer never answers was answered")
        except TimeoutError:
            pass
        assert (await transport.request("p", {"type": "status"}, 1.0))["type"] == "status_ok"
        assert peer.accepted == 1, "a connection that was answering was dropped"

    run(peer, body)
