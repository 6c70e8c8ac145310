"""A damaged block on one node is a failed replica, not a failed request.

In-process, over real storage engines with one byte of a table flipped on
disk: the coordinator answers a get from the healthy replicas and read
repair rewrites the damaged copy; a put whose own copy is damaged is made by
another primary, and its copy rewrites this one; a peer's `corrupt` reply is
a missing reply; anti-entropy skips the damaged range, fetches its keys from
the replicas and rewrites them; rebalancing moves everything else and logs
the damage once. End to end (`slow`): the same through three `kvnode serve`
processes on loopback.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvnode import protocol
from kvnode.antientropy import AntiEntropy
from kvnode.client import Client, KvError
from kvnode.clock import ManualClock
from kvnode.config import ClusterSettings
from kvnode.coordinator import Coordinator
from kvnode.handoff import HintStore, _engine_key
from kvnode.log import EventLog
from kvnode.offload import InlineOffload
from kvnode.rebalance import Rebalancer
from kvnode.replica import Replica
from kvnode.ring import Ring
from kvnode.storage import CorruptionError, Engine, InlineBackground
from kvnode.versions import DvvResolver

from ..storage.helpers import corrupt_block
from .cluster import LocalCluster

KEYS = [b"key%04d" % i for i in range(300)]


class Router:
    """An in-memory transport to the other in-process nodes, answering the
    peer requests the coordinator sends as the server does (a damaged copy
    answers a `corrupt` error for that request)."""

    def __init__(self, nodes: dict[str, InProcessNode]) -> None:
        self.nodes = nodes

    def connected_to(self, peer: str) -> bool:
        return True

    async def reachable(self, peer: str) -> bool:
        return True

    async def request(self, peer: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        node, kind = self.nodes[peer], message["type"]
        try:
            if kind == "replica_get":
                return {"type": "replica_get_ok", "state": await node.replica.read_raw(message["key"])}
            if kind == "replica_put":
                await node.replica.merge(message["key"], node.replica.decode(message["state"]))
                return {"type": "replica_put_ok"}
            if kind == "coordinate":
                await node.coordinator.put(message["key"], message["value"], message["context"])
                return {"type": f"{message['op']}_ok"}
            if kind.startswith("ae_"):
                return await node.ae.handle(message)
        except CorruptionError as e:
            return protocol.error(0, "corrupt", str(e))
        raise AssertionError(f"unexpected request {kind}")

    async def close(self) -> None:
        return None


class InProcessNode:
    def __init__(self, name: str, path: Path, nodes: dict[str, InProcessNode], ring: Ring, log: EventLog) -> None:
        self.name = name
        self.engine = Engine.open(path, sync="never", background=InlineBackground(), block_size=512)
        self.replica = Replica(self.engine, DvvResolver(), InlineOffload())
        transport = Router(nodes)
        self.coordinator = Coordinator(
            node=name, ring=ring, settings=ClusterSettings(), replica=self.replica, transport=transport,
            clock=ManualClock(wall_ns=1), log=log,
        )
        self.ae = AntiEntropy(name, lambda: ring, 3, self.replica, transport, ManualClock(wall_ns=1),
                              offload=InlineOffload(), log=log)
        self.replica.on_write.append(self.ae.note_write)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, InProcessNode]]:
    ring = Ring.build(["a", "b", "c"], partitions=8)
    made: dict[str, InProcessNode] = {}
    log = EventLog("test", ManualClock(wall_ns=1), io.StringIO())
    for name in ring.nodes:
        made[name] = InProcessNode(name, tmp_path / name, made, ring, log)
    yield made
    for node in made.values():
        node.engine.close()


def _events(log: str) -> list[str]:
    """The event names of a structured log, in order."""
    return [json.loads(line)["event"] for line in log.splitlines()]


def _damage(node: InProcessNode) -> list[bytes]:
    """Flush the node's copies to a table and flip a byte of its block 1;
    the keys the block held."""
    node.engine.flush()
    (sst,) = Path(node.engine.path).glob("*.sst")
    corrupt_block(sst, 1)
    (error,) = node.engine.verify()
    lost = [k for k in KEYS if error.covers(k)]
    assert lost
    return lost


async def _fill(nodes: dict[str, InProcessNode]) -> None:
    for key in KEYS:
        await nodes["a"].coordinator.put(key, b"v-" + key, None)
    await _settle(nodes)


async def _settle(nodes: dict[str, InProcessNode]) -> None:
    for node in nodes.values():
        for task in list(node.coordinator._background):
            await task


def test_a_get_answers_from_the_healthy_replicas_and_repairs_the_damaged_copy(
    nodes: dict[str, InProcessNode],
) -> None:
    async def scenario() -> None:
        await _fill(nodes)
        a = nodes["a"]
        lost = _damage(a)
        with pytest.raises(CorruptionError):
            await a.replica.read(lost[0])
        for key in lost:
            result = await a.coordinator.get(key)
            assert result.values == [b"v-" + key]
        await _settle(nodes)
        assert a.coordinator.counters.damaged_replicas == len(lost)
        for key in lost:  # async read repair rewrote the damaged copies
            assert (await a.replica.read(key)).values() == [b"v-" + key]
        assert a.replica.damaged == set(lost)

    asyncio.run(scenario())


def test_a_peers_corrupt_reply_is_a_missing_reply_and_gets_repaired(nodes: dict[str, InProcessNode]) -> None:
    async def scenario() -> None:
        await _fill(nodes)
        lost = _damage(nodes["a"])
        b = nodes["b"]
        for key in lost:
            assert (await b.coordinator.get(key)).values == [b"v-" + key]
        await _settle(nodes)
        assert b.coordinator.counters.damaged_replicas == len(lost)
        assert b.coordinator.counters.errors == {}
        for key in lost:
            assert (await nodes["a"].replica.read(key)).values() == [b"v-" + key]

    asyncio.run(scenario())


def test_a_put_on_a_damaged_copy_is_made_elsewhere_and_rewrites_it(nodes: dict[str, InProcessNode]) -> None:
    async def scenario() -> None:
        await _fill(nodes)
        a, b = nodes["a"], nodes["b"]
        lost = _damage(a)
        context = (await b.coordinator.get(lost[0])).context
        await a.coordinator.put(lost[0], b"new", context)  # through the damaged node
        assert a.coordinator.counters.forwarded == 1
        await b.coordinator.put(lost[1], b"newer", None)  # through another node
        await _settle(nodes)
        assert (await a.replica.read(lost[0])).values() == [b"new"]
        assert sorted((await a.replica.read(lost[1])).values()) == sorted([b"v-" + lost[1], b"newer"])
        # Its stored state may lack dots made here before the damage: the
        # next version of the key is still made by another primary.
        await a.coordinator.put(lost[0], b"newest", (await a.coordinator.get(lost[0])).context)
        assert a.coordinator.counters.forwarded == 2
        await _settle(nodes)
        for node in nodes.values():
            assert (await node.replica.read(lost[0])).values() == [b"newest"]

    asyncio.run(scenario())


def test_anti_entropy_skips_the_damaged_range_and_refetches_its_keys(nodes: dict[str, InProcessNode]) -> None:
    async def scenario() -> None:
        await _fill(nodes)
        a = nodes["a"]
        lost = _damage(a)
        result = await a.ae.round()
        assert result["errors"] == 0 and result["partitions"] == 8
        assert result["corrupt_ranges"] == 1 and result["keys_repaired"] == len(lost)
        for key in lost:
            assert (await a.replica.read(key)).values() == [b"v-" + key]
        again = await a.ae.round()
        assert again["keys_repaired"] == 0 and again["errors"] == 0

    asyncio.run(scenario())


def test_a_peers_round_rewrites_the_damaged_copy_too(nodes: dict[str, InProcessNode]) -> None:
    async def scenario() -> None:
        await _fill(nodes)
        lost = _damage(nodes["a"])
        result = await nodes["b"].ae.round()
        assert result["errors"] == 0 and result["keys_repaired"] == len(lost)
        for key in lost:
            assert (await nodes["a"].replica.read(key)).values() == [b"v-" + key]

    asyncio.run(scenario())


class _Accepting:
    def __init__(self) -> None:
        self.got: list[bytes] = []

    async def request(self, peer: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.got.append(message["key"])
        return {"type": "replica_put_ok"}


def test_rebalance_moves_the_rest_and_logs_a_damaged_block_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        engine = Engine.open(tmp_path, sync="never", background=InlineBackground(), block_size=512)
        try:
            engine.write_batch([("put", k, b"state-" + k) for k in KEYS])
            engine.flush()
            (sst,) = tmp_path.glob("*.sst")
            corrupt_block(sst, 1)
            stream = io.StringIO()
            transport = _Accepting()
            rebalancer = Rebalancer(
                node="gone", ring=lambda: Ring.build(["b", "c", "d"], partitions=8), n=3,
                replica=Replica(engine, DvvResolver(), InlineOffload()), transport=transport,  # type: ignore[arg-type]
                offload=InlineOffload(), log=EventLog("gone", ManualClock(wall_ns=1), stream), timeout=1.0,
            )
            first = await rebalancer.run_pass()
            second = await rebalancer.run_pass()
            (error,) = engine.verify()
            lost = [k for k in KEYS if error.covers(k)]
            assert first == {"moved": len(KEYS) - len(lost), "kept": 0}
            assert second == {"moved": 0, "kept": 0}
            assert not set(transport.got) & set(lost)
            assert _events(stream.getvalue()).count("rebalance_corrupt_range") == 1
        finally:
            engine.close()

    asyncio.run(scenario())


def test_a_damaged_block_of_the_hint_store_loses_its_hints_only(tmp_path: Path) -> None:
    events = io.StringIO()
    clock = ManualClock(wall_ns=1)

    def open_store() -> HintStore:
        return HintStore.open(tmp_path, clock=clock, offload=InlineOffload(), merge=lambda a, b: b,
                              log=EventLog("f", clock, events))

    async def scenario() -> None:
        store = open_store()
        for key in KEYS:
            await store.add("n2", key, b"state-" + key)
        store._engine.flush()
        store.close()
        (sst,) = tmp_path.glob("*.sst")
        corrupt_block(sst, 1)
        store = open_store()  # refused before: a damaged block stopped the node from starting
        try:
            (error,) = store._engine.verify()
            lost = [k for k in KEYS if error.covers(_engine_key("n2", k))]
            assert lost and store.pending() == {"n2": len(KEYS) - len(lost)}
            await store.add("n2", lost[0], b"again")
            assert (await store.get("n2", lost[0])) is not None
            sent: list[bytes] = []

            async def send(key: bytes, state: bytes) -> bool:
                sent.append(key)
                return True

            delivered, failed = await store.deliver("n2", send)
            assert (delivered, failed) == (len(KEYS) - len(lost) + 1, 0)
            assert set(sent) == (set(KEYS) - set(lost)) | {lost[0]}
            with pytest.raises(CorruptionError):
                await store.get("n2", lost[1])
            assert _events(events.getvalue()).count("hints_corrupt_range") == 1
        finally:
            store.close()

    asyncio.run(scenario())


# ----------------------------------------------------------- end to end


def _state(value: bytes) -> bytes:
    return DvvResolver().update(DvvResolver().decode(None), context=None, value=value, node="seed").encode()


@pytest.mark.slow
def test_three_nodes_serve_around_a_damaged_block(tmp_path: Path) -> None:
    keys = [b"key%04d" % i for i in range(400)]
    for node in ("n1", "n2", "n3"):  # every replica holds every key (n=3 of 3)
        with Engine.open(tmp_path / node) as db:
            db.write_batch([("put", k, _state(b"v-" + k)) for k in keys])
            db.flush()
    (sst,) = (tmp_path / "n1").glob("*.sst")
    corrupt_block(sst, 3)
    with Engine.open(tmp_path / "n1", read_only=True) as db:
        (error,) = db.verify()
    lost = [k for k in keys if error.covers(k)]
    assert len(lost) >= 3
    c = LocalCluster(tmp_path, 3, settings={"read_repair": "off", "ae_interval": 0})
    with c:
        n1 = Client(c.addr("n1"), cluster=c.cluster)
        n2 = Client(c.addr("n2"), cluster=c.cluster)
        try:
            with pytest.raises(KvError) as info:
                n1.local_get(lost[0])
            assert info.value.code == "corrupt"
            # A quorum get through the damaged node: two healthy replicas answer.
            assert n1.get(lost[0]).values == [b"v-" + lost[0]]
            # Through another node: n1's corrupt reply costs that request only.
            for _ in range(3):
                assert n2.get(lost[1]).values == [b"v-" + lost[1]]
            # A write through another node rewrites n1's copy.
            n2.put(lost[1], b"rewritten", n2.get(lost[1]).context)
            assert n1.local_get(lost[1]).values == [b"rewritten"]
            # Anti-entropy on n1 skips the damaged range and refetches the rest of it.
            result = n1.admin("ae_round")["result"]
            assert result["errors"] == 0 and result["partitions"] > 0, result
            assert result["corrupt_ranges"] == 1 and result["keys_repaired"] == len(lost) - 1, result
            for key in lost[2:]:
                assert n1.local_get(key).values == [b"v-" + key]
            assert n1.status()["node"] == "n1"
        finally:
            n1.close()
            n2.close()
        assert c.terminate("n1") == 0
    events = _events((tmp_path / "n1.log").read_text())
    assert "rebalance_error" not in events and "internal_error" not in events
    assert events.count("ae_corrupt_range") == 1
