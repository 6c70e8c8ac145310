"""Gossip membership and failure detection (`kvnode.membership`), and the
randomness seam it draws from (`kvnode.rng`).

Everything runs in one process on a `ManualClock`: gossipers talk through an
in-memory network defined here (every message is msgpack-encoded and checked
against `membership.SCHEMA` on the way, as the real protocol would), and time
moves only when a test advances it. Nothing sleeps, nothing opens a socket.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import shutil
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvnode import membership
from kvnode.clock import ManualClock
from kvnode.membership import (
    Entry,
    GenerationError,
    Gossiper,
    GossipSettings,
    MembershipTable,
    load_and_bump_generation,
    merge_tables,
    read_generation,
)
from kvnode.rng import make_rng
from kvnode.transport import PeerUnreachable

T = TypeVar("T")

SETTINGS = GossipSettings(interval=1.0, fanout=3, suspect_after=3.0, dead_after=6.0)


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


# ------------------------------------------------------------ the fake network


def wire(message: dict[str, Any]) -> dict[str, Any]:
    """What the peer would receive: msgpack round trip plus the SCHEMA check
    that `protocol.decode_body` makes."""
    decoded = msgpack.unpackb(msgpack.packb(message, use_bin_type=True), raw=False)
    assert isinstance(decoded, dict)
    schema = membership.SCHEMA[decoded["type"]]
    for name, types in schema.items():
        assert name in decoded, f"{decoded['type']}: missing {name}"
        assert isinstance(decoded[name], types), f"{decoded['type']}: {name} is {type(decoded[name])}"
    return decoded


class Network:
    """Gossipers by node id; links can be cut, nodes paused (no answers)."""

    def __init__(self) -> None:
        self.nodes: dict[str, Gossiper] = {}
        self.cut: set[frozenset[str]] = set()
        self.paused: set[str] = set()
        self.sent = 0

    def transport(self, source: str) -> FakeTransport:
        return FakeTransport(self, source)

    def partition(self, node: str) -> None:
        self.cut |= {frozenset((node, other)) for other in self.nodes if other != node}

    def heal(self) -> None:
        self.cut.clear()


class FakeTransport:
    def __init__(self, net: Network, source: str) -> None:
        self._net = net
        self._source = source

    async def request(self, peer: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        net = self._net
        if peer not in net.nodes or frozenset((self._source, peer)) in net.cut:
            raise PeerUnreachable(f"{peer}: no route")
        if peer in net.paused:
            raise TimeoutError(f"{peer} does not answer")
        net.sent += 1
        return wire(net.nodes[peer].handle(wire(message)))


class Cluster:
    """n gossipers on one ManualClock; `round()` advances one interval and
    ticks every running node once, in a seeded random order."""

    def __init__(
        self,
        n: int,
        *,
        settings: GossipSettings = SETTINGS,
        seeds: Iterable[str] = ("n0",),
        know_peers: bool = False,
    ) -> None:
        self.clock = ManualClock()
        self.net = Network()
        self.settings = settings
        self.seeds = list(seeds)
        self.names = [f"n{i}" for i in range(n)]
        self.addresses = {name: f"127.0.0.{10 + i}:7000" for i, name in enumerate(self.names)}
        self.know_peers = know_peers
        self.order_rng = make_rng("cluster", 7, stream="order")
        self.generations = dict.fromkeys(self.names, 1)
        self.events: dict[str, list[tuple[str, str | None, str]]] = {}
        for name in self.names:
            self.start(name)

    def start(self, name: str, generation: int | None = None) -> Gossiper:
        if generation is not None:
            self.generations[name] = generation
        g = Gossiper(
            name, self.addresses[name], generation=self.generations[name], seeds=self.seeds,
            transport=self.net.transport(name), clock=self.clock,
            rng=make_rng(name, 42, stream=f"gossip{self.generations[name]}"),
            settings=self.settings, peers=self.addresses if self.know_peers else None,
        )
        events = self.events.setdefault(name, [])
        g.on_change(lambda node, old, new: events.append((node, old, new)))
        self.net.nodes[name] = g
        return g

    def __getitem__(self, name: str) -> Gossiper:
        return self.net.nodes[name]

    async def round(self) -> None:
        self.clock.advance(self.settings.interval)
        order = [n for n in self.names if n not in self.net.paused]
        self.order_rng.shuffle(order)
        for name in order:
            await self.net.nodes[name].tick()

    async def rounds_until(self, condition: Callable[[], bool], limit: int) -> int:
        for i in range(1, limit + 1):
            await self.round()
            if condition():
                return i
        raise AssertionError(f"not reached in {limit} rounds")

    def everyone_knows_everyone(self) -> bool:
        return all(set(self[n].table.nodes()) == set(self.names) for n in self.names)

    def states(self, of: str) -> dict[str, str]:
        return {n: self[n].state(of) for n in self.names if n != of}


# ---------------------------------------------------------------- the merge

nodes = st.sampled_from(["a", "b", "c", "d"])
entries = st.builds(
    Entry,
    address=st.sampled_from(["h1:1", "h2:2"]),
    generation=st.integers(0, 3),
    heartbeat=st.integers(0, 3),
    status=st.sampled_from(["alive", "leaving", "left"]),
)
tables = st.dictionaries(nodes, entries, max_size=4)


@given(tables, tables)
def test_merge_is_commutative(a: dict[str, Entry], b: dict[str, Entry]) -> None:
    assert merge_tables(a, b) == merge_tables(b, a)


@given(tables, tables, tables)
def test_merge_is_associative_and_idempotent(a: dict[str, Entry], b: dict[str, Entry], c: dict[str, Entry]) -> None:
    assert merge_tables(merge_tables(a, b), c) == merge_tables(a, merge_tables(b, c))
    assert merge_tables(a, a) == a
    ab = merge_tables(a, b)
    assert merge_tables(ab, b) == ab


@given(tables, tables)
def test_merge_keeps_the_highest_generation_and_heartbeat(a: dict[str, Entry], b: dict[str, Entry]) -> None:
    merged = merge_tables(a, b)
    assert set(merged) == set(a) | set(b)
    for node, entry in merged.items():
        versions = [t[node].version for t in (a, b) if node in t]
        assert entry.version == max(versions)
        assert entry in [t[node] for t in (a, b) if node in t]


@given(st.lists(st.tuples(nodes, entries), max_size=12), st.randoms(use_true_random=False))
def test_table_merge_ends_the_same_in_any_order(updates: list[tuple[str, Entry]], rnd: Any) -> None:
    def apply(seq: list[tuple[str, Entry]]) -> dict[str, Entry]:
        table = MembershipTable("self", ManualClock(), SETTINGS)
        for node, entry in seq:
            table.merge(node, entry)
        return table.entries()

    shuffled = list(updates)
    rnd.shuffle(shuffled)
    assert apply(updates) == apply(shuffled)
    expected: dict[str, Entry] = {}
    for node, entry in updates:
        expected = merge_tables(expected, {node: entry})
    assert apply(updates) == expected


@given(nodes, entries)
def test_entries_survive_the_wire(node: str, entry: Entry) -> None:
    assert Entry.from_wire(wire({"type": "gossip", "from": "x", "members": [entry.to_wire(node)],
                                 "ring_epoch": 0, "ring": None})["members"][0]) == (node, entry)


@pytest.mark.parametrize("item", [
    "n1",
    {"node": "", "address": "h:1", "generation": 1, "heartbeat": 1, "status": "alive"},
    {"node": "n1", "address": 5, "generation": 1, "heartbeat": 1, "status": "alive"},
    {"node": "n1", "address": "h:1", "generation": -1, "heartbeat": 1, "status": "alive"},
    {"node": "n1", "address": "h:1", "generation": 1, "heartbeat": True, "status": "alive"},
    {"node": "n1", "address": "h:1", "generation": 1, "heartbeat": 1, "status": "zombie"},
    {"node": "n1", "address": "h:1", "generation": 1, "heartbeat": 1},
])
def test_malformed_members_are_refused_and_nothing_is_merged(item: object) -> None:
    c = Cluster(1)
    good = {"node": "n9", "address": "h:9", "generation": 1, "heartbeat": 1, "status": "alive"}
    with pytest.raises(ValueError):
        c["n0"].handle({"type": "gossip", "from": "n1", "members": [good, item], "ring_epoch": 0, "ring": None})
    assert c["n0"].table.nodes() == ["n0"]


def test_settings_are_validated() -> None:
    for bad in ({"interval": 0}, {"fanout": 0}, {"suspect_after": 5, "dead_after": 5},
                {"suspect_after": 0}, {"timeout": -1}):
        with pytest.raises(ValueError):
            GossipSettings(**bad)


# -------------------------------------------------------- failure detection


def test_a_silent_node_is_suspect_then_dead_within_bounds_then_alive_again() -> None:
    async def scenario() -> None:
        c = Cluster(2, settings=GossipSettings(interval=1.0, fanout=3, suspect_after=3.0, dead_after=6.0))
        await c.rounds_until(c.everyone_knows_everyone, 5)
        await c.round()
        a = c["n0"]
        heartbeat = a.table.get("n1").heartbeat  # type: ignore[union-attr]
        c.net.paused.add("n1")  # SIGSTOP: n1 neither ticks nor answers
        stopped = c.clock.monotonic()
        first: dict[str, float] = {}
        for step in range(1, 41):  # 10 s in quarter seconds; n0 gossips every second
            c.clock.advance(0.25)
            if step % 4 == 0:
                await a.tick()
            first.setdefault(a.state("n1"), c.clock.monotonic() - stopped)
        # n1's last heartbeat reached n0 at most one interval before n1 stopped
        assert 3.0 - 1.0 <= first["suspect"] <= 3.0
        assert 6.0 - 1.0 <= first["dead"] <= 6.0
        assert a.table.get("n1").heartbeat == heartbeat  # type: ignore[union-attr]
        events = [e for e in c.events["n0"] if e[0] == "n1"]
        assert events[-2:] == [("n1", "alive", "suspect"), ("n1", "suspect", "dead")]
        assert not a.alive("n1")

        c.net.paused.discard("n1")  # SIGCONT: the heartbeat rises again
        await c.round()
        assert a.state("n1") == "alive" and a.alive("n1")
        assert c.events["n0"][-1] == ("n1", "dead", "alive")

    run(scenario())


def test_a_restarted_node_is_alive_again_through_its_higher_generation() -> None:
    async def scenario() -> None:
        c = Cluster(3)
        await c.rounds_until(c.everyone_knows_everyone, 5)
        c.net.paused.add("n2")
        for _ in range(8):
            await c.round()
        assert c.states("n2") == {"n0": "dead", "n1": "dead"}
        # restart: a new process, a higher generation, its heartbeat back at 0,
        # which is below what the others remember: only the generation counts
        old = c["n0"].table.get("n2")
        assert old is not None and old.heartbeat > 1
        c.net.paused.discard("n2")
        c.start("n2", generation=2)
        await c["n2"].tick()
        for n in ("n0", "n1"):
            await c[n].tick()
        assert c.states("n2") == {"n0": "alive", "n1": "alive"}
        assert c["n0"].table.get("n2").version[0] == 2  # type: ignore[union-attr]
        assert ("n2", "dead", "alive") in c.events["n0"]

    run(scenario())


def test_a_quick_restart_is_reported_even_if_never_seen_down() -> None:
    async def scenario() -> None:
        c = Cluster(2)
        await c.rounds_until(c.everyone_knows_everyone, 5)
        c.start("n1", generation=2)
        await c["n1"].tick()
        assert c["n0"].state("n1") == "alive"
        assert c.events["n0"][-1] == ("n1", "alive", "alive")

    run(scenario())


def test_a_node_that_lost_its_generation_jumps_past_the_old_one() -> None:
    async def scenario() -> None:
        c = Cluster(3)
        for _ in range(4):
            await c.round()
        remembered = c["n0"].table.get("n2")
        assert remembered is not None
        c.start("n2", generation=1)  # data directory wiped: generation 1 again, heartbeat 0
        for _ in range(3):
            await c.round()
        assert c["n2"].own.version > remembered.version
        assert c.states("n2") == {"n0": "alive", "n1": "alive"}
        assert c["n0"].table.get("n2").version > remembered.version  # type: ignore[union-attr]

    run(scenario())


def test_configured_peers_never_heard_from_become_suspect_then_dead() -> None:
    async def scenario() -> None:
        c = Cluster(3, know_peers=True, seeds=())
        c.net.paused.add("n2")
        g = c["n0"]
        assert g.state("n2") == "alive" and g.table.get("n2").generation == 0  # type: ignore[union-attr]
        for _ in range(3):
            await c.round()
        # first contact with n1 (generation 0 -> 1) is no "restart"
        assert ("n1", "alive", "alive") not in c.events["n0"]
        assert g.state("n2") == "suspect"
        for _ in range(3):
            await c.round()
        assert g.state("n2") == "dead"
        assert g.state("nobody") == "dead" and not g.alive("nobody")

    run(scenario())


def test_listener_errors_do_not_stop_gossip() -> None:
    async def scenario() -> None:
        c = Cluster(2)

        def broken(node: str, old: str | None, new: str) -> None:
            raise RuntimeError("bug in a listener")

        c["n0"].on_change(broken)
        await c.rounds_until(c.everyone_knows_everyone, 5)

    run(scenario())


# ------------------------------------------------------------------ gossip


@pytest.mark.parametrize(("n", "fanout"), [(5, 3), (5, 1), (32, 1), (64, 2)])
def test_gossip_converges_in_logarithmic_rounds(n: int, fanout: int) -> None:
    async def scenario() -> int:
        c = Cluster(n, settings=GossipSettings(interval=1.0, fanout=fanout, suspect_after=30, dead_after=60))
        assert not c.everyone_knows_everyone()
        return await c.rounds_until(c.everyone_knows_everyone, 100)

    rounds = run(scenario())
    assert rounds <= math.ceil(math.log2(n)) + 1, rounds


def test_convergence_also_means_the_latest_entries() -> None:
    async def scenario() -> None:
        c = Cluster(5)
        await c.rounds_until(c.everyone_knows_everyone, 10)
        c["n3"].set_status("leaving")
        await c.rounds_until(lambda: all(c[n].table.get("n3").status == "leaving"  # type: ignore[union-attr]
                                         for n in c.names), 6)
        view = c["n0"].view()
        assert set(view) == set(c.names)
        assert view["n3"]["status"] == "leaving" and view["n3"]["state"] == "alive"
        assert view["n1"]["address"] == "127.0.0.11:7000" and view["n1"]["generation"] == 1

    run(scenario())


def test_a_partitioned_node_is_dead_to_the_others_and_alive_after_healing() -> None:
    async def scenario() -> None:
        c = Cluster(5)
        await c.rounds_until(c.everyone_knows_everyone, 10)
        c.net.partition("n4")
        await c.rounds_until(lambda: set(c.states("n4").values()) == {"dead"}, 6 + 4)
        assert all(c["n4"].state(n) == "dead" for n in c.names if n != "n4")
        for n in c.names[:4]:  # the majority side still sees itself alive
            assert all(c[n].alive(m) for m in c.names[:4])
            assert [e[1:] for e in c.events[n] if e[0] == "n4"][-2:] == [("alive", "suspect"), ("suspect", "dead")]
        c.net.heal()
        healed = await c.rounds_until(
            lambda: all(c[a].alive(b) for a in c.names for b in c.names), 5)
        assert healed <= 3
        for n in c.names[:4]:
            assert c.events[n][-1] == ("n4", "dead", "alive")

    run(scenario())


def test_dead_nodes_are_still_tried_now_and_then() -> None:
    async def scenario() -> None:
        c = Cluster(5)
        await c.rounds_until(c.everyone_knows_everyone, 10)
        c.net.paused.add("n4")
        for _ in range(8):
            await c.round()
        tried = sum("n4" in c["n0"].targets() for _ in range(200))
        # n4 is dead to n0, who has 3 live peers: it picks n4 with p = 1/(3+1)
        assert 20 < tried < 90

    run(scenario())


def test_a_new_node_finds_the_cluster_through_a_seed() -> None:
    async def scenario() -> None:
        c = Cluster(4)
        await c.rounds_until(c.everyone_knows_everyone, 10)
        c.names.append("n4")
        c.addresses["n4"] = "127.0.0.14:7000"
        c.generations["n4"] = 1
        c.start("n4")
        await c.rounds_until(c.everyone_knows_everyone, 6)

    run(scenario())


def test_ring_state_spreads_and_the_higher_epoch_wins() -> None:
    async def scenario() -> None:
        c = Cluster(5)
        adopted: list[tuple[str, int]] = []
        def listener(node: str) -> Callable[[int, dict[str, Any]], None]:
            return lambda epoch, ring: adopted.append((node, epoch))

        for n in c.names:
            c[n].on_ring(listener(n))
        c["n2"].set_ring(1, {"format": 1, "nodes": ["n0"]})
        c["n3"].set_ring(2, {"format": 1, "nodes": ["n0", "n1"]})
        await c.rounds_until(lambda: all(c[n].ring()[0] == 2 for n in c.names), 8)
        assert all(c[n].ring() == (2, {"format": 1, "nodes": ["n0", "n1"]}) for n in c.names)
        assert ("n3", 2) not in adopted and ("n0", 2) in adopted
        with pytest.raises(ValueError):
            c["n0"].set_ring(2, {"format": 1})
        # equal epochs with different rings: every node picks the same one
        c["n0"].set_ring(3, {"nodes": ["a"]})
        c["n1"].set_ring(3, {"nodes": ["b"]})
        await c.rounds_until(lambda: len({str(c[n].ring()) for n in c.names}) == 1
                             and c["n4"].ring()[0] == 3, 8)

    run(scenario())


def test_the_reply_carries_only_what_the_asker_lacks() -> None:
    async def scenario() -> None:
        c = Cluster(3)
        await c.rounds_until(c.everyone_knows_everyone, 5)
        g = c["n0"]
        full = [e.to_wire(n) for n, e in g.table.entries().items()]
        reply = g.handle({"type": "gossip", "from": "n1", "members": full,
                          "ring_epoch": 0, "ring": None})
        assert reply["type"] == "gossip_ok" and reply["from"] == "n0"
        assert reply["members"] == [] and reply["ring"] is None
        reply = g.handle({"type": "gossip", "from": "n1", "members": [], "ring_epoch": 0, "ring": None})
        assert {m["node"] for m in reply["members"]} == {"n0", "n1", "n2"}

    run(scenario())


def test_run_gossips_every_interval_and_survives_failures() -> None:
    class Stop(Exception):
        pass

    async def scenario() -> None:
        c = Cluster(3, know_peers=True)
        c.net.paused.add("n2")  # every request to n2 times out
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            c.clock.advance(seconds)
            if len(waits) == 5:
                raise Stop

        with pytest.raises(Stop):
            await c["n0"].run(sleep=sleep)
        assert waits == [1.0] * 5
        assert c["n0"].own.heartbeat == 5 and c["n0"].counters["rounds"] == 5
        assert c["n0"].counters["failed"] >= 1

    run(scenario())


def test_gossip_is_deterministic_from_the_seeds() -> None:
    async def trace() -> list[Any]:
        c = Cluster(6)
        c.net.partition("n5")
        for _ in range(10):
            await c.round()
        c.net.heal()
        for _ in range(5):
            await c.round()
        return [c[n].view() for n in c.names] + [c.net.sent]

    assert run(trace()) == run(trace())


# ------------------------------------------------------------- generations


def test_generation_rises_at_every_restart(tmp_path: Any) -> None:
    data = str(tmp_path / "data")
    assert read_generation(data) is None
    assert [load_and_bump_generation(data) for _ in range(3)] == [1, 2, 3]
    assert read_generation(data) == 3
    assert sorted(os.listdir(data)) == [membership.GENERATION_FILE]


def test_a_wiped_node_starts_above_every_generation_of_its_former_self(tmp_path: Any) -> None:
    """A node whose data directory was wiped must issue dots above those its
    former self issued (its generation is their floor): a fresh directory's
    first generation comes from the wall clock, not 1."""
    data = str(tmp_path / "data")
    started = 1_700_000_000 * 10**9
    former = [load_and_bump_generation(data, first=membership.fresh_generation(started)) for _ in range(50)]
    assert former[0] == 100_000_000 and former == list(range(former[0], former[0] + 50))
    shutil.rmtree(data)  # the disk is replaced a minute later
    again = load_and_bump_generation(data, first=membership.fresh_generation(started + 60 * 10**9))
    assert again > former[-1]
    assert membership.fresh_generation(0) == 1  # a clock at the epoch still gives a valid generation


def test_a_leftover_temporary_file_is_harmless(tmp_path: Any) -> None:
    load_and_bump_generation(str(tmp_path))
    (tmp_path / f"{membership.GENERATION_FILE}.tmp").write_bytes(b"{\"format\": 1, \"gen")
    assert load_and_bump_generation(str(tmp_path)) == 2


@pytest.mark.parametrize("garbage", [b"", b"\x00\x00\x00", b"{\"format\": 1, \"generation\"", b"7\n",
                                     b"{\"format\": 2, \"generation\": 3}", b"{\"format\": 1, \"generation\": 0}",
                                     b"{\"format\": 1, \"generation\": true}"])
def test_a_damaged_generation_file_is_a_clear_error(tmp_path: Any, garbage: bytes) -> None:
    # Documented choice: refuse to start rather than guess (see load_and_bump_generation).
    (tmp_path / membership.GENERATION_FILE).write_bytes(garbage)
    with pytest.raises(GenerationError, match=r"GENERATION does not hold a generation.*Remove the file"):
        load_and_bump_generation(str(tmp_path))
    assert (tmp_path / membership.GENERATION_FILE).read_bytes() == garbage


@pytest.mark.parametrize("torn", [False, True])
def test_a_crash_during_the_bump_leaves_the_old_or_the_new_generation(torn: bool) -> None:
    simfs = pytest.importorskip("kvnode.storage.simfs")
    for crash_at in itertools.count():
        fs = simfs.SimFileSystem(make_rng("disk", crash_at, stream="torn") if torn else None)
        assert load_and_bump_generation("/data", fs=fs) == 1
        assert load_and_bump_generation("/data", fs=fs) == 2
        fs.crash_after(crash_at)
        try:
            returned: int | None = load_and_bump_generation("/data", fs=fs)
        except simfs.SimulatedCrash:
            returned = None
        fs.crash()
        after = read_generation("/data", fs=fs)
        if returned is not None:  # what was returned (and so used) is durable
            assert after == 3
            break
        assert after in (2, 3)
        assert load_and_bump_generation("/data", fs=fs) == after + 1
    assert crash_at >= 4  # create, write, sync, rename, sync_dir were each struck


# --------------------------------------------------------------------- rng


def test_rngs_are_reproducible_and_independent() -> None:
    def draw(*args: Any, **kw: Any) -> list[float]:
        rng = make_rng(*args, **kw)
        return [rng.random() for _ in range(5)]

    assert draw("n1") == draw("n1")
    assert draw("n1", 3) == draw("n1", 3)
    assert len({tuple(draw("n1")), tuple(draw("n2")), tuple(draw("n1", 3)), tuple(draw("n1", 4)),
                tuple(draw("n1", 3, stream="gossip"))}) == 5
