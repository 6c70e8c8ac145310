"""The local backend's link proxy (`harness.backends.proxy`): bytes relayed,
blocked directions that neither reset nor close, heal on the same
connection, one-way grudges on a mesh, delay, loss as retransmission delay,
and a close that leaves no socket or task behind.

Each test runs its own event loop (`asyncio.run`) with loopback echo
servers. Waiting for something that must *not* happen is the one place a
test waits a fixed (short) time: `SILENCE_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from harness.backends.base import PacketShape
from harness.backends.proxy import Faults, LinkProxy, ProxyMesh

T = TypeVar("T")
SILENCE_S = 0.3  # how long "nothing arrives" is watched for
Address = tuple[str, int]


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class Echo:
    """A loopback echo server that remembers what it received and how many
    connections it accepted."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> Address:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        try:
            while data := await reader.read(65536):
                self.received += data
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self._writers:
            w.transport.abort()
        await self.server.wait_closed()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition (polling), failing after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def read_exactly(reader: asyncio.StreamReader, n: int, timeout: float = 5.0) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), timeout)


async def silent(reader: asyncio.StreamReader) -> bool:
    """True if nothing (no byte, no EOF) arrives for SILENCE_S."""
    try:
        await asyncio.wait_for(reader.read(1), SILENCE_S)
    except TimeoutError:
        return True
    return False


async def with_echo_and_link(
    body: Callable[[Echo, LinkProxy], Awaitable[None]], **link_kw: Any
) -> None:
    echo = Echo()
    target = await echo.start()
    link = LinkProxy(target, **link_kw)
    await link.start()
    try:
        await body(echo, link)
    finally:
        await link.close()
        await echo.close()


def test_bytes_flow_both_ways_and_are_counted() -> None:
    async def body(echo: Echo, link: LinkProxy) -> None:
        reader, writer = await asyncio.open_connection(*link.address)
        writer.write(b"hello")
        assert await read_exactly(reader, 5) == b"hello"
        writer.close()
        await until(lambda: link.open_connections == 0)
        assert link.counters.connections == 1
        assert link.counters.forward_bytes == 5 and link.counters.backward_bytes == 5

    run(with_echo_and_link(body))


def test_blocked_forward_holds_bytes_without_reset_and_heal_delivers_them() -> None:
    async def body(echo: Echo, link: LinkProxy) -> None:
        reader, writer = await asyncio.open_connection(*link.address)
        writer.write(b"a")
        assert await read_exactly(reader, 1) == b"a"
        link.block_forward = True
        writer.write(b"b")
        await writer.drain()  # the sender's write succeeds ...
        assert await silent(reader)  # ... and nothing comes back, not even an EOF
        assert not reader.at_eof() and not writer.is_closing()
        assert echo.received == b"a"
        link.block_forward = False
        # The same connection: what was held arrives, and new bytes flow.
        assert await read_exactly(reader, 1) == b"b"
        writer.write(b"c")
        assert await read_exactly(reader, 1) == b"c"
        assert echo.accepted == 1
        writer.close()

    run(with_echo_and_link(body))


def test_blocked_forward_in_drop_mode_discards_for_good() -> None:
    async def body(echo: Echo, link: LinkProxy) -> None:
        reader, writer = await asyncio.open_connection(*link.address)
        writer.write(b"a")
        assert await read_exactly(reader, 1) == b"a"
        link.block_forward = True
        writer.write(b"lost")
        await writer.drain()
        assert await silent(reader)
        await until(lambda: link.counters.forward_dropped == 4)
        link.block_forward = False
        writer.write(b"c")
        assert await read_exactly(reader, 1) == b"c"  # "lost" is gone, the connection is not
        assert echo.received == b"ac"
        writer.close()

    run(with_echo_and_link(body, on_block="drop"))


def test_blocked_backward_lets_requests_in_but_no_answer_out() -> None:
    async def body(echo: Echo, link: LinkProxy) -> None:
        reader, writer = await asyncio.open_connection(*link.address)
        writer.write(b"a")
        assert await read_exactly(reader, 1) == b"a"
        link.block_backward = True
        writer.write(b"b")
        await until(lambda: echo.received == b"ab")  # the target got it and answered
        assert await silent(reader)  # the answer does not get back
        link.heal()
        assert await read_exactly(reader, 1) == b"b"
        writer.close()

    run(with_echo_and_link(body))


def test_a_connection_opened_during_a_block_reaches_the_target_only_after_the_heal() -> None:
    async def body(echo: Echo, link: LinkProxy) -> None:
        link.block_backward = True  # either direction blocks a TCP handshake
        reader, writer = await asyncio.open_connection(*link.address)
        writer.write(b"hello")
        assert await silent(reader)
        assert echo.accepted == 0  # the proxy did not connect upstream
        link.block_backward = False
        assert await read_exactly(reader, 5) == b"hello"
        assert echo.accepted == 1
        writer.close()

    run(with_echo_and_link(body))


def test_a_dialer_that_gives_up_during_a_block_never_reaches_the_target() -> None:
    async def body(echo: Echo, link: LinkProxy) -> None:
        link.block_forward = True
        _, writer = await asyncio.open_connection(*link.address)
        writer.write(b"hello")
        await until(lambda: link.open_connections == 1)
        writer.close()
        await until(lambda: link.open_connections == 0)
        link.heal()
        reader2, writer2 = await asyncio.open_connection(*link.address)
        writer2.write(b"x")
        assert await read_exactly(reader2, 1) == b"x"
        assert echo.accepted == 1 and echo.received == b"x"
        writer2.close()

    run(with_echo_and_link(body))


def test_a_target_that_is_down_resets_the_dialer() -> None:
    async def main() -> None:
        echo = Echo()
        target = await echo.start()
        await echo.close()  # nothing listens there any more
        link = LinkProxy(target)
        await link.start()
        try:
            reader, writer = await asyncio.open_connection(*link.address)
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(1), 5) == b""
            assert link.counters.refused == 1
            writer.close()
        finally:
            await link.close()

    run(main())


def test_eof_is_relayed_as_a_half_close() -> None:
    async def body(echo: Echo, link: LinkProxy) -> None:
        reader, writer = await asyncio.open_connection(*link.address)
        writer.write(b"bye")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b"bye"  # echoed, then EOF
        writer.close()
        await until(lambda: link.open_connections == 0)

    run(with_echo_and_link(body))


def test_delay_adds_at_least_the_delay_each_way() -> None:
    async def body(echo: Echo, link: LinkProxy) -> None:
        reader, writer = await asyncio.open_connection(*link.address)
        writer.write(b"warm")
        await read_exactly(reader, 4)
        link.set_faults(forward=Faults(delay_s=0.15), backward=Faults(delay_s=0.1))
        started = time.monotonic()
        writer.write(b"x")
        assert await read_exactly(reader, 1) == b"x"
        assert time.monotonic() - started >= 0.25
        writer.close()

    run(with_echo_and_link(body))


def test_jitter_never_reorders_a_stream() -> None:
    async def body(echo: Echo, link: LinkProxy) -> None:
        link.set_faults(forward=Faults(delay_s=0.02, jitter_s=0.02), backward=Faults(jitter_s=0.01))
        reader, writer = await asyncio.open_connection(*link.address)
        sent = b"".join(b"%03d," % i for i in range(100))
        for i in range(0, len(sent), 4):
            writer.write(sent[i:i + 4])
            await writer.drain()
            await asyncio.sleep(0)  # let the proxy read chunk by chunk
        assert await read_exactly(reader, len(sent)) == sent
        writer.close()

    run(with_echo_and_link(body, rng=random.Random(1)))


class ScriptedRandom(random.Random):
    """`random()` returns the scripted values, then 0.99 forever."""

    def __init__(self, values: list[float]) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0) if self.values else 0.99


def test_loss_delays_chunks_instead_of_corrupting_the_stream() -> None:
    async def body(echo: Echo, link: LinkProxy) -> None:
        reader, writer = await asyncio.open_connection(*link.address)
        writer.write(b"warm")
        await read_exactly(reader, 4)
        link.set_faults(forward=Faults(loss=0.5))
        started = time.monotonic()
        for i in range(4):  # the first chunk is "lost" twice: 0.2 s + 0.4 s late
            writer.write(b"%d" % i)
            assert await read_exactly(reader, 1) == b"%d" % i
        assert link.counters.retransmits == 2
        assert time.monotonic() - started >= 0.6
        assert echo.received == b"warm0123"
        writer.close()

    run(with_echo_and_link(body, rng=ScriptedRandom([0.0, 0.0])))


def test_mesh_one_way_grudge_blocks_one_direction_of_both_links() -> None:
    async def main() -> None:
        echoes = {n: Echo() for n in "abc"}
        addresses = {n: {"client": await e.start()} for n, e in echoes.items()}
        mesh = ProxyMesh(addresses, seed=1)
        await mesh.start()
        try:
            # Connections established before the cut: a->b, b->a, c->b.
            conns = {}
            for dialer, target in [("a", "b"), ("b", "a"), ("c", "b")]:
                reader, writer = await asyncio.open_connection(*mesh.address(dialer, target, "client"))
                writer.write(b".")
                assert await read_exactly(reader, 1) == b"."
                conns[dialer + target] = (reader, writer)
            for e in echoes.values():
                e.received.clear()

            mesh.cut({"b": frozenset({"a"})})  # b drops what a sends
            ab, ba = mesh.link("a", "b", "client"), mesh.link("b", "a", "client")
            assert ab.forward.blocked and not ab.backward.blocked
            assert ba.backward.blocked and not ba.forward.blocked
            others = [link for (x, y, _), link in mesh.links.items() if {x, y} != {"a", "b"}]
            assert len(others) == 4
            assert not any(link.forward.blocked or link.backward.blocked for link in others)

            (ra, wa), (rb, wb), (rc, wc) = conns["ab"], conns["ba"], conns["cb"]
            wa.write(b"from-a")  # a's request never reaches b
            wb.write(b"from-b")  # b's request reaches a, a's answer never gets back
            await until(lambda: echoes["a"].received == b"from-b")
            wc.write(b"from-c")  # c talks to b as usual
            assert await read_exactly(rc, 6) == b"from-c"
            assert await silent(ra) and await silent(rb)
            assert echoes["b"].received == b"from-c"
            # A new connection from b to a cannot even shake hands (the SYN-ACK is dropped).
            rn, wn = await asyncio.open_connection(*mesh.address("b", "a", "client"))
            wn.write(b"new")
            assert await silent(rn)
            assert echoes["a"].accepted == 1

            mesh.heal()
            assert await read_exactly(ra, 6) == b"from-a"
            assert await read_exactly(rb, 6) == b"from-b"
            assert await read_exactly(rn, 3) == b"new"
            for _, w in [*conns.values(), (rn, wn)]:
                w.close()
        finally:
            await mesh.close()
            for e in echoes.values():
                await e.close()

    run(main())


def test_mesh_shape_touches_every_link_of_the_shaped_nodes() -> None:
    async def main() -> None:
        # never started: faults only; two ports per node, each link and port a proxy of its own
        mesh = ProxyMesh({n: {"client": ("127.0.0.1", 9), "peer": ("127.0.0.1", 10)} for n in "abc"})
        assert len(mesh.links) == 3 * 2 * 2
        mesh.shape(["a"], PacketShape(delay_ms=100, jitter_ms=10, loss=0.1))
        for pair in [("a", "b"), ("b", "a"), ("a", "c"), ("c", "a")]:
            for port in ("client", "peer"):
                link = mesh.link(*pair, port)
                assert link.forward == link.backward == Faults(delay_s=0.1, jitter_s=0.01, loss=0.1)
        assert mesh.link("b", "c", "peer").forward == Faults() and mesh.link("c", "b", "client").backward == Faults()
        mesh.shape(["a", "b"], PacketShape(delay_ms=100))
        assert mesh.link("a", "b", "peer").forward.delay_s == pytest.approx(0.2)  # through both, in series
        assert mesh.link("a", "c", "client").forward.delay_s == pytest.approx(0.1)
        mesh.cut({"c": frozenset({"a"})})
        for port in ("client", "peer"):  # a partition cuts every port
            assert mesh.link("a", "c", port).forward == Faults(blocked=True, delay_s=0.1)
            assert mesh.link("c", "a", port).backward == Faults(blocked=True, delay_s=0.1)
        mesh.heal()
        assert all(link.forward == link.backward == Faults() for link in mesh.links.values())
        with pytest.raises(ValueError):
            mesh.cut({"z": frozenset({"a"})})

    run(main())


def test_the_same_seed_samples_the_same_jitter_and_loss() -> None:
    """A mesh's links draw jitter and loss from the seed (`--seed` on the
    local backend): the same seed replays the same delays, link by link."""

    def sampled(seed: int | None) -> list[float]:
        mesh = ProxyMesh({n: {"client": ("127.0.0.1", 9), "peer": ("127.0.0.1", 10)} for n in "abc"}, seed=seed)
        mesh.shape(["a", "b"], PacketShape(delay_ms=50, jitter_ms=40, loss=0.3))
        return [link._sample_delay(direction) for _, link in sorted(mesh.links.items())
                for direction in ("forward", "backward") for _ in range(20)]

    first = sampled(7)
    assert sampled(7) == first
    assert len(set(first)) > 10  # jitter and loss did vary the delays
    assert sampled(8) != first


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to count sockets")
def test_close_leaves_no_socket_or_task() -> None:
    async def main() -> None:
        echo = Echo()
        target = await echo.start()
        fds_before = _open_fds()
        link = LinkProxy(target)
        address = await link.start()
        # An active connection, a held one and one waiting for its handshake.
        r1, w1 = await asyncio.open_connection(*address)
        w1.write(b"x")
        await read_exactly(r1, 1)
        link.block_forward = True
        w1.write(b"held")
        r2, w2 = await asyncio.open_connection(*address)
        await until(lambda: link.open_connections == 2)

        await link.close()

        proxy_tasks = [t for t in asyncio.all_tasks()
                       if not t.done() and t.get_coro().__qualname__.startswith(("LinkProxy", "_Stream"))]
        assert proxy_tasks == []
        assert link.open_connections == 0
        for reader in (r1, r2):  # each dialer sees its connection end
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(), 5) == b""
        with pytest.raises(OSError):
            await asyncio.open_connection(*address)
        w1.close()
        w2.close()
        await echo.close()
        await asyncio.sleep(0)  # let the transports' close callbacks run
        assert _open_fds() <= fds_before

    run(main())
