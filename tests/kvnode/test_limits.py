"""What one connection may hold of a node (`config.Limits`): requests in
flight (backpressure), a deadline for a partial frame, the node's budget of
partial-frame bytes, the connection cap; and a failure in one request stays
in that request (a corrupt block, an oversized key, a bug).

In-process nodes (`tests.kvnode.inprocess`), so the tests read the node's own
counters; the flood test at the end runs real processes (`slow`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvnode import protocol
from kvnode.client import Client
from kvnode.config import Limits
from kvnode.connection import Connection, ConnectionLost
from kvnode.server import Node
from kvnode.storage import CorruptionError

from .cluster import LocalCluster
from .inprocess import CLUSTER, node_config, running

FAST = Limits(max_rate=1e9)  # no pacing unless a test asks for it


def _frame(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


HELLO = _frame({"type": "hello", "id": 0, "version": 1, "cluster": CLUSTER, "node": None, "nonce": None,
                "token": None})


async def _raw(node: Node) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, protocol.FrameReader]:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(HELLO)
    frames = protocol.FrameReader(reader)
    hello_ok = await frames.next()
    assert hello_ok is not None and hello_ok["type"] == "hello_ok"
    return reader, writer, frames


async def _closed_by_node(reader: asyncio.StreamReader, within: float = 20.0) -> bool:
    """Whether the node closes the connection (read to EOF) within `within` s."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(1 << 16):
                pass
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


@contextlib.contextmanager
def _unretrieved_task_errors(loop: asyncio.AbstractEventLoop) -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(None)


def test_requests_in_flight_per_connection_are_capped_and_all_answered(tmp_path: Path) -> None:
    async def main() -> None:
        limits = Limits(max_inflight=3, max_rate=1e9)
        async with running(node_config(tmp_path, "open", limits)) as node:
            _, writer, frames = await _raw(node)
            writer.write(b"".join(_frame({"type": "status", "id": i}) for i in range(1, 201)))
            replies = [await frames.next() for _ in range(200)]
            assert sorted(r["id"] for r in replies if r and r["type"] == "status_ok") == list(range(1, 201))
            assert node.counters["inflight_peak"] <= 3
            writer.close()

    asyncio.run(main())


def test_a_client_that_pipelines_without_reading_is_held_back_and_others_are_served(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(node_config(tmp_path, "open", Limits(max_inflight=8), size=1)) as node:
            with _unretrieved_task_errors(asyncio.get_running_loop()) as errors:
                _, flood, _ = await _raw(node)
                # The flood: about 400 KB of status requests, replies never read.
                flood.write(b"".join(_frame({"type": "status", "id": i}) for i in range(1, 20_001)))
                good = await Connection.open("127.0.0.1", node.port, cluster=CLUSTER, timeout=5)
                for i in range(30):
                    reply = await good.request({"type": "put", "key": b"k%d" % i, "value": b"v", "context": None},
                                               10)
                    assert reply["type"] == "put_ok", reply
                    assert (await good.request({"type": "status"}, 10))["type"] == "status_ok"
                # Held back: far fewer of the 20,000 were even read, and never more than 8 at once.
                assert node.counters["requests"] < 15_000
                assert node.counters["inflight_peak"] <= 8
                await good.close()
                flood.close()
            assert errors == []

    asyncio.run(main())


def test_a_partial_frame_after_the_handshake_has_a_deadline(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(node_config(tmp_path, "open", Limits(frame_deadline=0.3, max_rate=1e9))) as node:
            idle_reader, idle, _ = await _raw(node)
            reader, writer, _ = await _raw(node)
            writer.write(struct.pack(">I", 1 << 20) + b"x" * 1000)  # 1 MiB announced, 1000 bytes sent
            assert await _closed_by_node(reader)
            # A connection that is merely idle (no frame begun) stays.
            idle.write(_frame({"type": "status", "id": 1}))
            frames = protocol.FrameReader(idle_reader)
            reply = await frames.next()
            assert reply is not None and reply["type"] == "status_ok"
            assert node.status()["buffered_bytes"] == 0
            idle.close()
            writer.close()

    asyncio.run(main())


def test_partial_frames_stay_within_the_nodes_byte_budget(tmp_path: Path) -> None:
    budget = 1 << 20

    async def main() -> None:
        limits = Limits(max_buffered=budget, frame_deadline=2.0, max_rate=1e9)
        async with running(node_config(tmp_path, "open", limits)) as node:
            slow = [await _raw(node) for _ in range(6)]
            for _, writer, _ in slow:  # 6 x 4 MiB of partial frames offered: 24 times the budget
                writer.write(struct.pack(">I", 8 << 20) + b"x" * (4 << 20))

            def held() -> int:
                return sum(len(link.frames._buffer) for link in node._links if link.frames is not None)

            good = await Connection.open("127.0.0.1", node.port, cluster=CLUSTER, timeout=5)
            peak = 0
            for _ in range(40):  # small requests go on meanwhile
                assert (await good.request({"type": "status"}, 10))["type"] == "status_ok"
                peak = max(peak, held())
                assert node.status()["buffered_bytes"] <= budget
            free = protocol.FrameReader(asyncio.StreamReader())._free
            assert peak <= budget + len(slow) * (free + protocol.FrameReader.CHUNK)
            for reader, _, _ in slow:  # and the deadline ends them all
                assert await _closed_by_node(reader)
            assert node.status()["buffered_bytes"] == 0
            await good.close()

    asyncio.run(main())


def test_at_the_connection_cap_the_longest_idle_connection_is_closed(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(node_config(tmp_path, "open", Limits(max_connections=3, max_rate=1e9))) as node:
            oldest = await _raw(node)
            others = [await _raw(node) for _ in range(2)]
            for i, (_, writer, frames) in enumerate(others):  # active since the oldest
                writer.write(_frame({"type": "status", "id": i + 1}))
                assert (await frames.next() or {}).get("type") == "status_ok"
            newcomer = await Connection.open("127.0.0.1", node.port, cluster=CLUSTER, timeout=5)
            assert await _closed_by_node(oldest[0])
            assert (await newcomer.request({"type": "status"}, 10))["type"] == "status_ok"
            _, writer, frames = others[0]
            writer.write(_frame({"type": "status", "id": 9}))
            assert (await frames.next() or {}).get("type") == "status_ok"
            assert node.counters["connections_evicted"] == 1
            await newcomer.close()

    asyncio.run(main())


def test_at_the_connection_cap_with_none_idle_the_newcomer_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        limits = Limits(max_connections=2, max_rate=1e9, frame_deadline=30)
        async with running(node_config(tmp_path, "open", limits)) as node:
            busy = [await _raw(node) for _ in range(2)]
            status = _frame({"type": "status", "id": 5})
            for _, writer, _ in busy:  # each has a frame begun: not idle
                writer.write(status[:3])
            for _ in range(100):  # until the node has read those bytes
                if all(link.frames is not None and link.frames.partial for link in node._links):
                    break
                await asyncio.sleep(0.01)
            with pytest.raises((ConnectionLost, OSError)):  # closed, or reset over our unread hello
                await Connection.open("127.0.0.1", node.port, cluster=CLUSTER, timeout=5)
            for _, writer, frames in busy:  # the busy ones lost nothing
                writer.write(status[3:])
                assert (await frames.next() or {}).get("type") == "status_ok"
                writer.close()

    asyncio.run(main())


def test_an_oversized_key_is_a_bad_request(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(node_config(tmp_path, "open")) as node:
            conn = await Connection.open("127.0.0.1", node.port, cluster=CLUSTER, timeout=5)
            big = b"k" * (node.engine.options.max_key_size + 1)
            for message in ({"type": "get", "key": big}, {"type": "local_get", "key": big},
                            {"type": "put", "key": big, "value": b"v", "context": None}):
                reply = await conn.request(message, 10)
                assert reply["type"] == "error" and reply["code"] == "bad_request", reply
                assert "exceeds" in reply["message"]
            await conn.close()

    asyncio.run(main())


def test_a_corrupt_block_fails_that_request_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with running(node_config(tmp_path, "open")) as node:
            real_get = node.engine.get

            def get(key: bytes) -> bytes | None:
                if key == b"bad":
                    raise CorruptionError("table 7 block 3: checksum mismatch", table=7, block=3)
                return real_get(key)

            monkeypatch.setattr(node.engine, "get", get)
            with _unretrieved_task_errors(asyncio.get_running_loop()) as errors:
                peer = await Connection.open("127.0.0.1", node.port, cluster=CLUSTER, node="n2", timeout=5)
                for kind in ("replica_get", "replica_get", "local_get"):
                    conn = peer if kind == "replica_get" else await Connection.open(
                        "127.0.0.1", node.port, cluster=CLUSTER, timeout=5)
                    reply = await conn.request({"type": kind, "key": b"bad"}, 10)
                    assert reply["type"] == "error" and reply["code"] == "corrupt", reply
                    assert not reply["definite"]
                    assert (await conn.request({"type": kind, "key": b"other"}, 10))["type"] == f"{kind}_ok"
                    assert not conn.closed
                    if conn is not peer:
                        await conn.close()
                await peer.close()
            assert errors == []

    asyncio.run(main())


def test_a_bug_in_one_request_is_internal_for_it_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with running(node_config(tmp_path, "open")) as node:

            async def broken(key: bytes) -> Any:
                raise RuntimeError("a bug")

            monkeypatch.setattr(node.replica, "read", broken)
            with _unretrieved_task_errors(asyncio.get_running_loop()) as errors:
                conn = await Connection.open("127.0.0.1", node.port, cluster=CLUSTER, timeout=5)
                reply = await conn.request({"type": "local_get", "key": b"k"}, 10)
                assert reply["code"] == "internal" and not reply["definite"]
                assert (await conn.request({"type": "status"}, 10))["type"] == "status_ok"
                await conn.close()
            assert errors == []

    asyncio.run(main())


def test_fuzz_of_frames_split_at_random_points_with_random_pauses(tmp_path: Path) -> None:
    """Requests cut into random pieces sent with random pauses (some longer
    than the partial-frame deadline): a stream that finishes each frame in
    time gets every reply; one that pauses too long inside a frame is
    closed, and the node holds no budget afterwards."""
    deadline = 0.15
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stack = contextlib.AsyncExitStack()

    async def setup() -> Node:
        limits = Limits(frame_deadline=deadline, max_rate=1e9, max_buffered=1 << 20)
        return await stack.enter_async_context(running(node_config(tmp_path, "open", limits)))

    node = asyncio.run_coroutine_threadsafe(setup(), loop).result(30)

    async def one(sizes: list[int], cuts: list[int], pauses: list[float]) -> None:
        # Values up to 300 KB: beyond a connection's free allowance, so the byte budget is used.
        messages = [{"type": "put", "id": i + 1, "key": b"k%d" % i, "value": b"v" * n, "context": None}
                    for i, n in enumerate(sizes)]
        stream = b"".join(_frame(m) for m in messages)
        points = sorted({c % len(stream) for c in cuts} | {0, len(stream)})
        pieces = [stream[a:b] for a, b in itertools.pairwise(points)]
        reader, writer, frames = await _raw(node)
        ends = set(itertools.accumulate(len(_frame(m)) for m in messages))
        sent, late = 0, False
        for piece, pause in zip(pieces, itertools.cycle(pauses or [0.0]), strict=False):
            writer.write(piece)
            sent += len(piece)
            if sent not in ends and pause > deadline * 2:
                late = True  # a pause inside a frame, well past the deadline
                await asyncio.sleep(pause)
                break
            await asyncio.sleep(min(pause, deadline / 4))
        if late:
            assert await _closed_by_node(reader)
        else:
            replies = [await frames.next() or {} for _ in messages]
            assert sorted(r.get("id") for r in replies) == [m["id"] for m in messages]
            assert not [r for r in replies if r.get("code") in ("internal", "bad_request")], replies
        writer.close()

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(sizes=st.lists(st.integers(0, 300_000), min_size=1, max_size=4),
           cuts=st.lists(st.integers(0, 10**6), max_size=8),
           pauses=st.lists(st.sampled_from([0.0, 0.001, 0.01, 0.4]), max_size=4))
    def check(sizes: list[int], cuts: list[int], pauses: list[float]) -> None:
        asyncio.run_coroutine_threadsafe(one(sizes, cuts, pauses), loop).result(60)

    try:
        check()

        async def budget_drained() -> int:
            for _ in range(200):
                if node.status()["buffered_bytes"] == 0:
                    break
                await asyncio.sleep(0.01)
            return int(node.status()["buffered_bytes"])

        assert asyncio.run_coroutine_threadsafe(budget_drained(), loop).result(30) == 0
    finally:
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# ------------------------------------------------------ real processes (slow)


def _flood(s: socket.socket, stop: threading.Event, read: bool) -> None:
    """Pipeline status requests at the node until `stop` (then the socket
    is shut down under it); read the replies or not."""
    s.sendall(HELLO)
    batch = b"".join(_frame({"type": "status", "id": i}) for i in range(1, 1001))
    if read:
        threading.Thread(target=lambda: _drain(s, stop), daemon=True).start()
    with contextlib.suppress(OSError):
        while not stop.is_set():
            s.sendall(batch)  # blocks while the node holds the connection back


def _drain(s: socket.socket, stop: threading.Event) -> None:
    with contextlib.suppress(OSError):
        while not stop.is_set() and s.recv(1 << 16):
            pass


@pytest.mark.slow
def test_under_a_pipelining_flood_others_are_served_and_peers_never_see_the_node_dead(tmp_path: Path) -> None:
    settings = {"gossip_interval": 0.2, "suspect_after": 1.5, "dead_after": 3.0}
    with LocalCluster(tmp_path, 3, settings=settings) as c, Client(c.addr("n2"), cluster=c.cluster) as watcher:
        deadline = 100
        while watcher.status()["membership"].get("n1", {}).get("state") != "alive" and deadline:
            deadline -= 1
            threading.Event().wait(0.1)
        stop = threading.Event()
        sockets = [socket.create_connection(("127.0.0.1", c.ports["n1"])) for _ in range(2)]
        floods = [threading.Thread(target=_flood, args=(s, stop, read), daemon=True)
                  for s, read in zip(sockets, (False, True), strict=True)]
        for t in floods:
            t.start()
        try:
            with Client(c.addr("n1"), cluster=c.cluster, timeout=5.0) as good:
                states = set()
                first = heartbeat = watcher.status()["membership"]["n1"]["heartbeat"]
                # Until n1 has gossiped 25 more times (5 s at 0.2 s, longer than
                # dead_after), or until it plainly stalls.
                for i in range(20_000):
                    good.put(f"k{i % 20}", f"v{i}")
                    assert good.get(f"k{i % 20}").values
                    if i % 10 == 0:
                        seen = watcher.status()["membership"]["n1"]
                        states.add(seen["state"])
                        heartbeat = seen["heartbeat"]
                        if heartbeat >= first + 25:
                            break
                n1 = good.status()
        finally:
            stop.set()
            for s in sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            for t in floods:
                t.join(30)
        assert heartbeat >= first + 25 and "dead" not in states, (first, heartbeat, states)
        assert n1["counters"]["inflight_peak"] <= 512  # a peer connection's cap at most
