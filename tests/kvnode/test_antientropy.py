"""Tests for kvnode.antientropy: replicas over real storage engines, wired by
an in-memory transport that round-trips every message through the wire
encoding and the protocol schema (with the ae_* entries merged in), converge
after one round, whatever each held: one-sided keys, concurrent siblings and
deletes included."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvnode import antientropy, protocol
from kvnode.antientropy import AntiEntropy
from kvnode.clock import ManualClock
from kvnode.merkle import leaf_of
from kvnode.offload import InlineOffload
from kvnode.replica import Replica
from kvnode.ring import Ring
from kvnode.storage import Engine, InlineBackground
from kvnode.transport import PeerUnreachable
from kvnode.versions import DvvResolver, LwwResolver, Resolver, SiblingSet


def test_the_exchange_speaks_the_wire_protocol() -> None:
    assert antientropy.SCHEMA and all(protocol.SCHEMA[k] == v for k, v in antientropy.SCHEMA.items())
    assert antientropy.REQUESTS <= protocol.PEER_REQUESTS


def wire(message: dict[str, Any], rid: int) -> dict[str, Any]:
    """What the other side decodes: msgpack, then the schema check."""
    return protocol.decode_body(protocol.encode({**message, "id": rid})[protocol.LENGTH.size :])


class FakeTransport:
    """Dispatches request() straight to the peer's AntiEntropy.handle."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.ids = 0
        self.sent: list[str] = []

    async def reachable(self, peer: str) -> bool:
        return peer not in self.cluster.down

    async def request(self, peer: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        if peer in self.cluster.down:
            raise PeerUnreachable(peer)
        if peer in self.cluster.silent:
            raise TimeoutError(peer)
        self.ids += 1
        self.sent.append(message["type"])
        reply = await self.cluster.nodes[peer].ae.handle(wire(message, self.ids))
        return wire(reply, self.ids)

    async def close(self) -> None:
        return None


class Node:
    def __init__(self, name: str, path: Path, cluster: Cluster, resolver: Resolver, **options: Any) -> None:
        self.name = name
        self.engine = Engine.open(path, sync="never", background=InlineBackground())
        self.replica = Replica(self.engine, resolver, InlineOffload())
        self.transport = FakeTransport(cluster)
        self.ae = AntiEntropy(
            name, lambda: cluster.ring, cluster.n, self.replica, self.transport, cluster.clock,
            offload=InlineOffload(), **options,
        )

    async def put(self, key: bytes, value: bytes | None, context: bytes | None = None) -> None:
        """A write this node coordinates, stored only here."""
        await self.replica.update(key, context=context, value=value, node=self.name)
        self.ae.note_write(key)

    async def delete(self, key: bytes) -> None:
        """A delete with the context of this node's current state."""
        await self.put(key, None, (await self.replica.read(key)).client_context())

    def states(self) -> dict[bytes, bytes]:
        return dict(self.engine.scan())


class Cluster:
    def __init__(self, tmp: Path, names: list[str], *, n: int = 3, partitions: int = 8,
                 resolver: Resolver | None = None, **options: Any) -> None:
        self.ring = Ring.build(names, partitions=partitions)
        self.n = n
        self.clock = ManualClock(wall_ns=1_000)
        self.down: set[str] = set()
        self.silent: set[str] = set()
        res = resolver or DvvResolver()
        self.nodes = {name: Node(name, tmp / name, self, res, **options) for name in names}

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def close(self) -> None:
        for node in self.nodes.values():
            node.engine.close()

    def replicas_of(self, key: bytes) -> list[Node]:
        return [self.nodes[x] for x in self.ring.preference_list(key, self.n)]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def factory(names: list[str], **kw: Any) -> Cluster:
        c = Cluster(tmp_path / str(len(made)), names, **kw)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close()


def folded(nodes: list[Node], resolver: Resolver) -> dict[bytes, bytes]:
    """Per key, the merge of every node's state: what all must converge to."""
    result: dict[bytes, Any] = {}
    for node in nodes:
        for key, raw in node.states().items():
            state = resolver.decode(raw)
            result[key] = resolver.merge(result[key], state) if key in result else state
    return {k: v.encode() for k, v in result.items()}


def test_one_round_converges_three_replicas_of_every_kind_of_difference(make: Callable[..., Cluster]) -> None:
    c = make(["a", "b", "c"])
    a, b, cc = c["a"], c["b"], c["c"]

    async def scenario() -> None:
        # Keys on one side only, on every side.
        for i in range(30):
            await [a, b, cc][i % 3].put(f"only{i}".encode(), f"v{i}".encode())
        # Concurrent blind writes: siblings.
        await a.put(b"sib", b"from-a")
        await b.put(b"sib", b"from-b")
        await cc.put(b"sib", b"from-c")
        # Written everywhere, then deleted on one replica only.
        await a.put(b"gone", b"old")
        state = await a.replica.read(b"gone")
        for other in (b, cc):
            await other.replica.merge(b"gone", state)
        await b.delete(b"gone")
        # Equal everywhere: not repaired.
        await a.put(b"same", b"x")
        for other in (b, cc):
            await other.replica.merge(b"same", await a.replica.read(b"same"))

        expected = folded([a, b, cc], DvvResolver())
        result = await a.ae.round()
        assert result["errors"] == result["unreachable"] == 0
        assert result["partitions"] == 8
        assert result["keys_repaired"] >= 32
        for node in (a, b, cc):
            assert node.states() == expected, node.name

        sib = SiblingSet.decode(expected[b"sib"])
        assert sorted(sib.values()) == [b"from-a", b"from-b", b"from-c"]
        gone = SiblingSet.decode(expected[b"gone"])
        assert gone.is_tombstone_only() and gone.values() == []
        for node in (a, b, cc):
            assert (await node.replica.read(b"gone")).values() == []

        # A second round from any node finds nothing, at one round trip per pair.
        for node in (a, b, cc):
            node.transport.sent.clear()
            again = await node.ae.round()
            assert again["keys_repaired"] == 0
            assert again["exchanges"] == 16
            assert node.transport.sent == ["ae_hashes"] * 16
        roots = [await node.ae.summary() for node in (a, b, cc)]
        assert roots[0] == roots[1] == roots[2]
        assert sum(p["keys"] for p in roots[0].values()) == len(expected)

    asyncio.run(scenario())


def test_exchange_repairs_both_sides_and_counts_each_key_once(make: Callable[..., Cluster]) -> None:
    c = make(["a", "b"], n=2, partitions=1)
    a, b = c["a"], c["b"]

    async def scenario() -> None:
        await a.put(b"k1", b"a1")
        await b.put(b"k2", b"b2")
        await a.put(b"k3", b"a3")
        await b.put(b"k3", b"b3")
        assert await a.ae.exchange(0, "b") == 3
        assert a.states() == b.states() == folded([a, b], DvvResolver())
        assert await b.ae.exchange(0, "a") == 0
        # Writes noted after the trees were built are seen by the next exchange.
        await b.put(b"k4", b"b4")
        await a.delete(b"k1")
        assert await b.ae.exchange(0, "a") == 2
        assert a.states() == b.states()
        assert (await b.replica.read(b"k1")).values() == []

    asyncio.run(scenario())


@pytest.mark.parametrize("seed", range(6))
def test_random_divergence_converges_in_one_round(make: Callable[..., Cluster], seed: int) -> None:
    rnd = random.Random(seed)
    c = make(["a", "b", "c"], partitions=4)
    nodes = list(c.nodes.values())

    async def scenario() -> None:
        for i in range(rnd.randrange(1, 120)):
            node = rnd.choice(nodes)
            key = f"k{rnd.randrange(25)}".encode()
            roll = rnd.random()
            if roll < 0.6:
                context = (await node.replica.read(key)).client_context() if rnd.random() < 0.5 else None
                await node.put(key, f"v{i}".encode(), context)
            elif roll < 0.8:
                await node.delete(key)
            else:  # a replication message that did arrive
                await rnd.choice(nodes).replica.merge(key, await node.replica.read(key))
        expected = folded(nodes, DvvResolver())
        result = await rnd.choice(nodes).ae.round()
        assert result["errors"] == 0
        for node in nodes:
            assert node.states() == expected
        for node in nodes:
            assert (await node.ae.round())["keys_repaired"] == 0

    asyncio.run(scenario())


def test_only_replicated_partitions_and_their_replicas_are_compared(make: Callable[..., Cluster]) -> None:
    c = make(["a", "b", "c", "d"], n=2, partitions=8)

    async def scenario() -> None:
        keys = [f"key{i}".encode() for i in range(60)]
        for i, key in enumerate(keys):
            await c.replicas_of(key)[i % 2].put(key, b"v")
        for name in "abcd":
            result = await c[name].ae.round()
            assert result["partitions"] == len([p for p in range(8) if name in c.ring.walk(p)[:2]])
            assert result["exchanges"] >= result["partitions"]
        for key in keys:
            primaries = c.replicas_of(key)
            states = [await n.replica.read_raw(key) for n in primaries]
            assert states[0] is not None and states[0] == states[1]
            for other in set(c.nodes.values()) - set(primaries):
                assert await other.replica.read_raw(key) is None

    asyncio.run(scenario())


def test_down_and_silent_peers_are_counted_and_caught_up_later(make: Callable[..., Cluster]) -> None:
    c = make(["a", "b", "c"], partitions=4)
    a, b, cc = c["a"], c["b"], c["c"]

    async def scenario() -> None:
        for i, node in enumerate((a, b, cc)):
            await node.put(f"k{i}".encode(), b"v")
        c.down.add("c")
        result = await a.ae.round()
        assert result["unreachable"] == 4 and result["errors"] == 0
        assert a.states() == b.states() != cc.states()
        c.down.clear()
        c.silent.add("b")
        result = await a.ae.round()
        assert result["errors"] == 4 and result["unreachable"] == 0
        assert a.states() == cc.states() == folded([a, b, cc], DvvResolver())
        c.silent.clear()
        await a.ae.round()
        assert a.states() == b.states() == cc.states()
        assert a.ae.counters["errors"] == 4 and a.ae.counters["unreachable"] == 4

    asyncio.run(scenario())


def test_tiny_batches_still_converge(make: Callable[..., Cluster]) -> None:
    c = make(["a", "b"], n=2, partitions=1, leaves_per_request=3, reply_bytes=1, push_bytes=1,
             fanout=4, depth=2)
    a, b = c["a"], c["b"]

    async def scenario() -> None:
        for i in range(80):
            await (a if i % 2 else b).put(f"k{i}".encode(), b"x" * i)
        assert await a.ae.exchange(0, "b") == 80
        assert a.states() == b.states() and len(a.states()) == 80
        assert b.transport.sent == []
        # b answers one non-empty leaf per reply (its budget is one byte).
        b_leaves = {leaf_of(f"k{i}".encode(), 16) for i in range(0, 80, 2)}
        assert a.transport.sent.count("ae_keys") >= len(b_leaves) > 1
        assert a.transport.sent.count("ae_push") == 40  # one item per push

    asyncio.run(scenario())


def test_last_write_wins_states_converge_to_the_latest(make: Callable[..., Cluster]) -> None:
    clock = ManualClock(wall_ns=5)
    c = make(["a", "b"], n=2, partitions=2, resolver=LwwResolver(clock=clock))
    a, b = c["a"], c["b"]

    async def scenario() -> None:
        await a.put(b"k", b"old")
        clock.advance(1)
        await b.put(b"k", b"new")
        await b.put(b"only-b", b"1")
        await b.ae.round()
        assert (await a.replica.read(b"k")).values() == [b"new"]
        assert a.states() == b.states()

    asyncio.run(scenario())


def test_bad_requests_get_error_replies(make: Callable[..., Cluster]) -> None:
    c = make(["a", "b"], n=2, partitions=2)
    ae = c["a"].ae

    async def ask(message: dict[str, Any]) -> dict[str, Any]:
        return await ae.handle(wire(message, 7))

    async def scenario() -> None:
        shape = {"fanout": 16, "depth": 3}
        bad = [
            {"type": "ae_hashes", "partition": 2, **shape, "level": 0, "indexes": [0]},
            {"type": "ae_hashes", "partition": 0, "fanout": 4, "depth": 3, "level": 0, "indexes": [0]},
            {"type": "ae_hashes", "partition": 0, **shape, "level": 4, "indexes": [0]},
            {"type": "ae_hashes", "partition": 0, **shape, "level": 1, "indexes": [99]},
            {"type": "ae_keys", "partition": 0, **shape, "leaves": []},
            {"type": "ae_keys", "partition": 0, **shape, "leaves": ["x"]},
            {"type": "ae_push", "partition": 0, "items": [[b"k"]]},
            {"type": "ae_push", "partition": 0, "items": [[b"k", b"not msgpack \xc1"]]},
        ]
        for message in bad:
            reply = await ask(message)
            assert reply["type"] == "error" and reply["code"] == "bad_request", message
            assert reply["definite"] is True
        wrong = next(k for k in (f"k{i}".encode() for i in range(99)) if c.ring.partition_of(k) == 1)
        state = DvvResolver().update(SiblingSet(), context=None, value=b"v", node="b").encode()
        reply = await ask({"type": "ae_push", "partition": 0, "items": [[wrong, state]]})
        assert reply["code"] == "bad_request"
        assert c["a"].states() == {}
        reply = await ask({"type": "ae_push", "partition": 1, "items": [[wrong, state], [wrong, state]]})
        assert reply == {"type": "ae_push_ok", "merged": 1}
        reply = await ask({"type": "ae_hashes", "partition": 0, **shape, "level": 0, "indexes": [0]})
        assert reply["hashes"] == [bytes(16)]

    asyncio.run(scenario())


def test_run_keeps_going_through_failures_until_cancelled(make: Callable[..., Cluster]) -> None:
    c = make(["a", "b"], n=2, partitions=2, rng=random.Random(1))
    a, b = c["a"], c["b"]

    async def broken(peer: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        raise RuntimeError("a bug in the transport")

    async def scenario() -> None:
        await b.put(b"k", b"v")
        a.transport.request = broken  # type: ignore[method-assign]
        task = asyncio.create_task(a.ae.run(0.001))
        while a.ae.counters["rounds"] < 3:
            await asyncio.sleep(0.001)
        assert a.ae.counters["errors"] >= 6
        del a.transport.request  # back to the class's method
        while a.states() != b.states():
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scenario(), 30))
