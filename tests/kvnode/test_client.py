"""Tests for kvnode.client against a fake node on loopback.

The fake node speaks `kvnode.protocol` (handshake, get/put/delete/status)
from a plain dict, and each test gives it the misbehaviour it needs: errors,
silence, hanging up, answering out of order, another cluster's name. Async
tests run it in the test's own loop; blocking-client tests run it on a loop
in a background thread. Nothing sleeps: the only waits are bounded timeouts
that the test expects to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from kvnode import protocol
from kvnode.client import (
    AsyncClient,
    BadRequest,
    Client,
    ConnectionFailed,
    ConnectionLost,
    KvError,
    Read,
    Timeout,
    TooManySiblings,
    Unavailable,
)

T = TypeVar("T")
Handler = Callable[["FakeNode", dict[str, Any], asyncio.StreamWriter], Awaitable[None]]

SHORT = 0.2  # for timeouts a test expects to expire


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run an async test body, bounded so that a bug cannot hang the suite."""

    async def bounded() -> T:
        async with asyncio.timeout(10):
            return await coro

    return asyncio.run(bounded())


class FakeNode:
    """A stand-in for a kvnode on 127.0.0.1 (an OS-assigned port). It answers
    the handshake, then hands each request to `handler` (by default: answer
    it from `data`). It records every request in `received`."""

    def __init__(
        self,
        *,
        node: str = "f1",
        cluster: str = "kvnode",
        handler: Handler | None = None,
        handshake: bool = True,
        check_cluster: bool = True,
    ) -> None:
        self.node = node
        self.cluster = cluster
        self.handler: Handler = handler or FakeNode.answer
        self.handshake = handshake
        self.check_cluster = check_cluster
        self.data: dict[bytes, bytes] = {}
        self.received: list[dict[str, Any]] = []
        # Set at the first request: one to await in the node's loop, one to
        # wait on from another thread.
        self.first_request = asyncio.Event()
        self.first_request_seen = threading.Event()
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> FakeNode:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        # Closing a connection ends its handler (it reads end-of-stream).
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def __aenter__(self) -> FakeNode:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            hello = await protocol.read_frame(reader)
            assert hello is not None and hello["type"] == "hello"
            if not self.handshake:
                await reader.read()  # accept the connection, never answer
                return
            if self.check_cluster and hello["cluster"] != self.cluster:
                writer.write(protocol.encode(protocol.error(
                    hello["id"], "wrong_cluster",
                    f"this node is in cluster {self.cluster!r}, not {hello['cluster']!r}",
                )))
                return
            writer.write(protocol.encode(
                {"type": "hello_ok", "id": 0, "version": protocol.VERSION,
                 "cluster": self.cluster, "node": self.node, "proof": None}
            ))
            while (message := await protocol.read_frame(reader)) is not None:
                self.received.append(message)
                self.first_request.set()
                self.first_request_seen.set()
                await self.handler(self, message, writer)
        except (OSError, protocol.ProtocolError):
            pass
        finally:
            writer.close()

    async def answer(self, message: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        writer.write(protocol.encode(self.reply(message)))

    def reply(self, message: dict[str, Any]) -> dict[str, Any]:
        kind, request_id = message["type"], message["id"]
        if kind == "get":
            key = message["key"]
            if key in self.data:
                return {"type": "get_ok", "id": request_id, "values": [self.data[key]],
                        "context": b"ctx:" + key}
            return {"type": "get_ok", "id": request_id, "values": [], "context": None}
        if kind == "put":
            self.data[message["key"]] = message["value"]
            return {"type": "put_ok", "id": request_id}
        if kind == "delete":
            self.data.pop(message["key"], None)
            return {"type": "delete_ok", "id": request_id}
        if kind == "status":
            return {"type": "status_ok", "id": request_id, "node": self.node,
                    "share": 0.25, "peers": ["f1", "f2"], "counters": {"requests": len(self.received)}}
        return protocol.error(request_id, "bad_request", f"unexpected {kind}")


def replying_error(code: str, *, definite: bool | None = None) -> Handler:
    async def handler(node: FakeNode, message: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        reply = protocol.error(message["id"], code, "the fake node says no")
        if definite is not None:
            reply["definite"] = definite
        writer.write(protocol.encode(reply))

    return handler


async def silent(node: FakeNode, message: dict[str, Any], writer: asyncio.StreamWriter) -> None:
    """Read the request, never answer it."""


async def hang_up(node: FakeNode, message: dict[str, Any], writer: asyncio.StreamWriter) -> None:
    """Read the request and close the connection without answering."""
    writer.close()


def first_then_answer(first: Handler) -> Handler:
    """`first` for the first request the node gets, a normal answer after."""

    async def handler(node: FakeNode, message: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        if len(node.received) == 1:
            await first(node, message, writer)
        else:
            await node.answer(message, writer)

    return handler


@contextlib.contextmanager
def refused_address() -> Iterator[str]:
    """A loopback address where a connection is refused: a port bound (so
    nobody else takes it) but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


class LoopThread:
    """An event loop on a background thread, for a fake node that must keep
    answering while the test's thread blocks in a `Client` call."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def __enter__(self) -> LoopThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@contextlib.contextmanager
def threaded_node(**kwargs: Any) -> Iterator[FakeNode]:
    with LoopThread() as lt:
        node = lt.run(FakeNode(**kwargs).start())
        try:
            yield node
        finally:
            lt.run(node.stop())


# -- requests and replies ----------------------------------------------------


def test_get_put_delete_status_round_trip() -> None:
    async def main() -> None:
        async with FakeNode(node="n7") as fake, AsyncClient(fake.address) as kv:
            assert kv.node is None  # lazy: nothing happens before the first request
            assert fake.connections == 0
            assert await kv.get("k") == Read(values=[], context=None)
            assert kv.node == "n7"
            await kv.put("k", "v")
            read = await kv.get(b"k")
            assert read == Read(values=[b"v"], context=b"ctx:k")
            await kv.put(b"k", b"w", read.context)
            await kv.delete("k", (await kv.get("k")).context)
            assert await kv.get("k") == Read(values=[], context=None)
            status = await kv.status()
            assert status["node"] == "n7" and status["peers"] == ["f1", "f2"]
            assert "type" not in status and "id" not in status
            sent = [(m["type"], m.get("key"), m.get("value"), m.get("context")) for m in fake.received]
            assert sent == [
                ("get", b"k", None, None),
                ("put", b"k", b"v", None),
                ("get", b"k", None, None),
                ("put", b"k", b"w", b"ctx:k"),
                ("get", b"k", None, None),
                ("delete", b"k", None, b"ctx:k"),
                ("get", b"k", None, None),
                ("status", None, None, None),
            ]
            assert fake.connections == 1

    run(main())


def test_str_keys_and_values_are_sent_as_utf8() -> None:
    async def main() -> None:
        async with FakeNode() as fake, AsyncClient(fake.address) as kv:
            await kv.put("ключ", "значение")
            await kv.put(bytearray(b"ba"), memoryview(b"mv"), bytearray(b"c"))
            assert fake.received[0]["key"] == "ключ".encode()
            assert fake.received[0]["value"] == "значение".encode()
            assert (fake.received[1]["key"], fake.received[1]["value"]) == (b"ba", b"mv")
            assert fake.received[1]["context"] == b"c"
            assert (await kv.get("ключ")).values == ["значение".encode()]

    run(main())


def test_connect_returns_the_node_id() -> None:
    async def main() -> None:
        async with FakeNode(node="n3") as fake, AsyncClient([fake.address]) as kv:
            assert await kv.connect() == "n3"
            assert await kv.connect() == "n3"
            assert kv.node == "n3" and fake.connections == 1

    run(main())


@pytest.mark.parametrize(
    ("code", "cls", "definite"),
    [
        ("unavailable", Unavailable, True),
        ("bad_request", BadRequest, True),
        ("too_many_siblings", TooManySiblings, True),
        ("timeout", Timeout, False),
        ("internal", KvError, False),
        ("a_code_from_the_future", KvError, False),
    ],
)
def test_error_replies_map_to_exceptions(code: str, cls: type[KvError], definite: bool) -> None:
    async def main() -> None:
        async with FakeNode(handler=replying_error(code)) as fake, AsyncClient(fake.address) as kv:
            with pytest.raises(KvError) as info:
                await kv.put("k", "v")
            e = info.value
            assert type(e) is cls
            assert (e.code, e.definite, e.node) == (code, definite, "f1")
            assert "the fake node says no" in str(e)

    run(main())


def test_an_indeterminate_reply_is_never_made_definite() -> None:
    # The node knows best when it says "may have happened"; the client must
    # not record `fail` for it, whatever the code.
    async def main() -> None:
        handler = replying_error("unavailable", definite=False)
        async with FakeNode(handler=handler) as fake, AsyncClient(fake.address) as kv:
            with pytest.raises(Unavailable) as info:
                await kv.put("k", "v")
            assert info.value.definite is False

    run(main())


def test_a_reply_of_the_wrong_type_is_indeterminate() -> None:
    async def put_ok_to_everything(node: FakeNode, message: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        writer.write(protocol.encode({"type": "put_ok", "id": message["id"]}))

    async def main() -> None:
        async with FakeNode(handler=put_ok_to_everything) as fake, AsyncClient(fake.address) as kv:
            with pytest.raises(KvError) as info:
                await kv.get("k")
            assert (info.value.code, info.value.definite) == ("protocol_error", False)
            assert "put_ok" in str(info.value)

    run(main())


# -- timeouts and lost connections ------------------------------------------


def test_a_node_that_never_replies_is_an_indeterminate_timeout() -> None:
    async def main() -> None:
        async with FakeNode(handler=silent) as fake, AsyncClient(fake.address, timeout=SHORT) as kv:
            with pytest.raises(Timeout) as info:
                await kv.put("k", "v")
            assert (info.value.code, info.value.definite, info.value.node) == ("timeout", False, "f1")
            assert "may or may not" in str(info.value)
            assert len(fake.received) == 1

    run(main())


def test_a_timed_out_connection_stays_usable() -> None:
    # A late reply cannot be mistaken for another request's: ids differ.
    async def main() -> None:
        fake = FakeNode(handler=first_then_answer(silent))
        async with fake, AsyncClient(fake.address, timeout=SHORT) as kv:
            with pytest.raises(Timeout):
                await kv.get("k")
            await kv.put("k", "v")
            assert (await kv.get("k")).values == [b"v"]
            assert fake.connections == 1

    run(main())


def test_a_node_that_hangs_up_mid_request_is_an_indeterminate_loss() -> None:
    async def main() -> None:
        fake = FakeNode(handler=first_then_answer(hang_up))
        async with fake, AsyncClient(fake.address) as kv:
            with pytest.raises(ConnectionLost) as info:
                await kv.put("k", "v")
            assert (info.value.code, info.value.definite, info.value.node) == ("connection_lost", False, "f1")
            # The next request connects afresh.
            await kv.put("k", "w")
            assert fake.connections == 2
            assert [m["value"] for m in fake.received] == [b"v", b"w"]

    run(main())


def test_a_sent_request_is_never_retried_on_another_node() -> None:
    async def main() -> None:
        async with (
            FakeNode(node="a", handler=hang_up) as a,
            FakeNode(node="b") as b,
            AsyncClient([a.address, b.address]) as kv,
        ):
            with pytest.raises(ConnectionLost):
                await kv.put("k", "v")
            assert len(a.received) == 1
            assert b.received == [] and b.connections == 0

    run(main())


def test_requests_in_flight_when_the_client_closes_are_indeterminate() -> None:
    async def main() -> None:
        async with FakeNode(handler=silent) as fake:
            kv = AsyncClient(fake.address)
            await kv.connect()
            pending = asyncio.ensure_future(kv.put("k", "v"))
            await fake.first_request.wait()
            await kv.close()
            with pytest.raises(ConnectionLost) as info:
                await pending
            assert info.value.definite is False

    run(main())


# -- connecting and failing over --------------------------------------------


def test_a_refused_address_fails_over_to_the_next() -> None:
    async def main() -> None:
        with refused_address() as refused:
            async with FakeNode(node="good") as good, AsyncClient([refused, good.address]) as kv:
                await kv.put("k", "v")
                assert kv.node == "good"
                assert len(good.received) == 1

    run(main())


def test_a_node_that_never_shakes_hands_fails_over_to_the_next() -> None:
    async def main() -> None:
        async with (
            FakeNode(node="mute", handshake=False) as mute,
            FakeNode(node="good") as good,
            AsyncClient([mute.address, good.address], connect_timeout=SHORT) as kv,
        ):
            assert await kv.connect() == "good"
            assert mute.connections == 1

    run(main())


def test_every_address_refused_is_a_definite_connection_failure() -> None:
    async def main() -> None:
        with refused_address() as one, refused_address() as two:
            async with AsyncClient(f"{one},{two}") as kv:
                with pytest.raises(ConnectionFailed) as info:
                    await kv.put("k", "v")
                e = info.value
                assert (e.code, e.definite, e.node) == ("connection_failed", True, None)
                assert one in str(e) and two in str(e)
                assert kv.node is None

    run(main())


def test_a_node_of_another_cluster_is_refused_with_a_clear_message() -> None:
    async def main() -> None:
        async with (
            FakeNode(node="x", cluster="other") as wrong,
            FakeNode(node="good") as good,
            AsyncClient([wrong.address, good.address], cluster="kvnode") as kv,
        ):
            with pytest.raises(ConnectionFailed) as info:
                await kv.get("k")
            e = info.value
            assert (e.code, e.definite) == ("wrong_cluster", True)
            assert "'kvnode'" in str(e) and "cluster=" in str(e)
            assert "this node is in cluster 'other'" in str(e)  # the node's own words
            # A misconfiguration is reported, not papered over by failing over.
            assert good.connections == 0

    run(main())


def test_a_node_that_names_another_cluster_in_its_reply_is_refused() -> None:
    async def main() -> None:
        fake = FakeNode(cluster="other", check_cluster=False)
        async with fake, AsyncClient(fake.address) as kv:
            with pytest.raises(ConnectionFailed) as info:
                await kv.put("k", "v")
            assert (info.value.code, info.value.definite) == ("wrong_cluster", True)
            assert "'other'" in str(info.value) and "'kvnode'" in str(info.value)
            assert fake.received == []

    run(main())


def test_a_closed_client_refuses_requests_definitely() -> None:
    async def main() -> None:
        async with FakeNode() as fake:
            kv = AsyncClient(fake.address)
            await kv.put("k", "v")
            await kv.close()
            await kv.close()
            with pytest.raises(ConnectionFailed) as info:
                await kv.get("k")
            assert (info.value.code, info.value.definite) == ("closed", True)
            assert len(fake.received) == 1

    run(main())


def test_a_frame_too_large_is_refused_before_sending() -> None:
    async def main() -> None:
        async with FakeNode() as fake, AsyncClient(fake.address) as kv:
            with pytest.raises(BadRequest) as info:
                await kv.put("k", b"x" * protocol.MAX_FRAME)
            assert info.value.definite is True
            await kv.put("k", "small")  # the connection is still fine
            assert [m["value"] for m in fake.received] == [b"small"]

    run(main())


def test_bad_arguments_are_programming_errors() -> None:
    for bad in ["", "nohost", "host:", ":7000", "host:port", "host:0", "host:70000", []]:
        with pytest.raises(ValueError):
            AsyncClient(bad)
    with pytest.raises(ValueError):
        AsyncClient("127.0.0.1:1", timeout=0)

    async def main() -> None:
        kv = AsyncClient("127.0.0.1:1")
        with pytest.raises(TypeError):
            await kv.get(1)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await kv.put("k", None)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await kv.put("k", "v", "a context is bytes")  # type: ignore[arg-type]
        await kv.close()

    run(main())
    assert AsyncClient("[::1]:7000, 127.0.0.1:7001")._addresses == [("::1", 7000), ("127.0.0.1", 7001)]


# -- pipelining ---------------------------------------------------------------


def test_pipelined_requests_get_their_own_replies_out_of_order() -> None:
    count = 50
    held: list[dict[str, Any]] = []

    async def answer_all_at_once_shuffled(
        node: FakeNode, message: dict[str, Any], writer: asyncio.StreamWriter
    ) -> None:
        held.append(message)
        if len(held) == count:  # every request is in flight at once
            random.Random(7).shuffle(held)
            for m in held:
                writer.write(protocol.encode(node.reply(m)))

    async def main() -> None:
        fake = FakeNode(handler=answer_all_at_once_shuffled)
        fake.data = {f"k{i}".encode(): f"v{i}".encode() for i in range(count)}
        async with fake, AsyncClient(fake.address) as kv:
            reads = await asyncio.gather(*(kv.get(f"k{i}") for i in range(count)))
            assert [r.values for r in reads] == [[f"v{i}".encode()] for i in range(count)]
            assert [r.context for r in reads] == [f"ctx:k{i}".encode() for i in range(count)]
            assert [m["id"] for m in held] != sorted(m["id"] for m in held)
            assert fake.connections == 1

    run(main())


# -- the blocking client --------------------------------------------------------


def test_blocking_client_works_inside_a_running_event_loop() -> None:
    with threaded_node(node="b1") as fake:

        async def main() -> None:
            # A blocking call here blocks this loop; the client has its own.
            with Client(fake.address) as kv:
                assert kv.connect() == "b1"
                kv.put("k", "v")
                read = kv.get("k")
                assert read == Read(values=[b"v"], context=b"ctx:k")
                kv.delete("k", read.context)
                assert kv.get("k").values == []
                assert kv.status()["node"] == "b1"
                assert kv.node == "b1"

        run(main())


def test_blocking_client_is_shared_by_threads() -> None:
    with threaded_node() as fake, Client([fake.address]) as kv:
        errors: list[BaseException] = []

        def worker(t: int) -> None:
            try:
                for i in range(20):
                    kv.put(f"{t}-{i}", f"v{t}-{i}")
                    assert kv.get(f"{t}-{i}").values == [f"v{t}-{i}".encode()]
            except BaseException as e:  # reported below, in the test's thread
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert errors == []
        assert len(fake.data) == 160
        assert fake.connections == 1


def test_blocking_client_raises_the_same_errors() -> None:
    with threaded_node(handler=first_then_answer(silent)) as fake:
        kv = Client(fake.address, timeout=SHORT)
        with pytest.raises(Timeout) as info:
            kv.get("k")
        assert info.value.definite is False
        kv.put("k", "v")
        kv.close()
        kv.close()
        with pytest.raises(ConnectionFailed) as closed:
            kv.get("k")
        assert closed.value.definite is True
        assert not kv._thread.is_alive()

    with refused_address() as refused, Client(refused) as kv, pytest.raises(ConnectionFailed) as failed:
        kv.get("k")
    assert failed.value.definite is True


def test_blocking_close_makes_requests_in_flight_indeterminate() -> None:
    with threaded_node(handler=silent) as fake:
        kv = Client(fake.address)
        kv.connect()
        outcome: list[BaseException] = []

        def waiter() -> None:
            try:
                kv.put("k", "v")
            except BaseException as e:  # checked below, in the test's thread
                outcome.append(e)

        thread = threading.Thread(target=waiter)
        thread.start()
        assert fake.first_request_seen.wait(timeout=10)
        kv.close()
        thread.join(timeout=10)
        assert len(outcome) == 1
        assert isinstance(outcome[0], ConnectionLost) and outcome[0].definite is False
