"""Tests for kvnode.versions: dotted version vectors with siblings, and LWW.

The central property test replays random histories of puts, deletes, reads and
replica merges against a model that tracks causality on its own: each write
records the writes its context covered (the siblings the read it took the
context from returned, and everything those covered, transitively).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvnode.clock import ManualClock, SystemClock
from kvnode.versions import (
    DEFAULT_MAX_SIBLINGS,
    Dot,
    DvvResolver,
    LwwRegister,
    LwwResolver,
    Sibling,
    SiblingSet,
    Stamp,
    TooManySiblings,
    VersionVector,
    resolver,
)

NODES = ("a", "b", "c")

# -- strategies ------------------------------------------------------------------


def value_of(dot: Dot) -> bytes | None:
    """One fixed value per dot, as in a real system where dots are unique;
    some are tombstones."""
    return None if (dot.counter + ord(dot.node)) % 4 == 0 else f"{dot.node}{dot.counter}".encode()


@st.composite
def sibling_sets(draw: st.DrawFn) -> SiblingSet:
    """Any well-formed state: per node a context counter, and some of the
    dots it covers still present as siblings."""
    counters = {n: draw(st.integers(0, 4)) for n in NODES}
    siblings = [
        Sibling(dot=dot, value=value_of(dot))
        for n, c in counters.items()
        for i in range(1, c + 1)
        if draw(st.booleans())
        for dot in [Dot(node=n, counter=i)]
    ]
    return SiblingSet(siblings=tuple(siblings), vv=VersionVector(counters))


version_vectors = st.dictionaries(st.sampled_from(NODES), st.integers(0, 5)).map(VersionVector)

lww_registers = st.one_of(
    st.just(LwwRegister()),
    st.builds(
        lambda ts, node, value: LwwRegister(value=value, stamp=Stamp(wall_ns=ts, node=node)),
        st.integers(-2, 2),
        st.sampled_from(NODES),
        st.none() | st.sampled_from([b"x", b"y", b""]),
    ),
)


# -- version vectors ------------------------------------------------------------------


def test_version_vector_basics() -> None:
    v = VersionVector({"a": 2, "b": 0})
    assert v == VersionVector([("a", 2)]) and hash(v) == hash(VersionVector({"a": 2}))
    assert dict(v) == {"a": 2} and v.counter("b") == 0 and "b" not in v
    assert v.covers(Dot(node="a", counter=2)) and not v.covers(Dot(node="a", counter=3))
    w = VersionVector({"a": 1, "b": 1})
    assert v.concurrent(w) and not v.descends(w)
    m = v.merge(w)
    assert m == VersionVector({"a": 2, "b": 1})
    assert m.dominates(v) and m.dominates(w) and m.descends(m) and not m.dominates(m)
    assert v.add(Dot(node="c", counter=3)) == VersionVector({"a": 2, "c": 3})


@given(version_vectors, version_vectors)
def test_version_vector_order(x: VersionVector, y: VersionVector) -> None:
    m = x.merge(y)
    assert m == y.merge(x) and m.descends(x) and m.descends(y)
    assert x.descends(y) == (x.merge(y) == x)
    assert VersionVector.decode(x.encode()) == x
    assert sum([x.dominates(y), y.dominates(x), x == y, x.concurrent(y)]) == 1


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\xc1",
        msgpack.packb({"a": 1}),
        msgpack.packb([["a"]]),
        msgpack.packb([["a", 0]]),
        msgpack.packb([["a", -1]]),
        msgpack.packb([["a", True]]),
        msgpack.packb([[1, 1]]),
        msgpack.packb([["", 1]]),
        msgpack.packb([["a", 1], ["a", 2]]),
        msgpack.packb([]) + b"\x00",
    ],
)
def test_bad_context_bytes_raise_value_error(bad: bytes) -> None:
    with pytest.raises(ValueError, match="context"):
        VersionVector.decode(bad)


# -- sibling sets: algebra ----------------------------------------------------------


@given(sibling_sets(), sibling_sets())
def test_merge_is_commutative(x: SiblingSet, y: SiblingSet) -> None:
    assert x.merge(y) == y.merge(x)


@given(sibling_sets(), sibling_sets(), sibling_sets())
def test_merge_is_associative(x: SiblingSet, y: SiblingSet, z: SiblingSet) -> None:
    assert x.merge(y).merge(z) == x.merge(y.merge(z))


@given(sibling_sets(), sibling_sets())
def test_merge_is_idempotent(x: SiblingSet, y: SiblingSet) -> None:
    assert x.merge(x) == x
    assert x.merge(SiblingSet()) == x
    xy = x.merge(y)
    assert xy.merge(y) == xy and xy.merge(x) == xy


@given(sibling_sets())
def test_sibling_set_encoding_round_trips(x: SiblingSet) -> None:
    assert SiblingSet.decode(x.encode()) == x
    assert x.encode() == SiblingSet.decode(x.encode()).encode()


# -- sibling sets: causality in random histories ------------------------------------------


@dataclass
class Model:
    """Replicas of one key, and what the test knows of causality."""

    states: list[SiblingSet] = field(default_factory=lambda: [SiblingSet() for _ in NODES])
    value: dict[int, bytes | None] = field(default_factory=dict)  # write -> value
    write_of: dict[Dot, int] = field(default_factory=dict)  # dot -> write
    preds: dict[int, frozenset[int]] = field(default_factory=dict)  # write -> what it covered
    reads: list[tuple[VersionVector, frozenset[int]]] = field(default_factory=list)

    def ids(self, state: SiblingSet) -> frozenset[int]:
        for s in state.siblings:
            assert s.value == self.value[self.write_of[s.dot]]
        return frozenset(self.write_of[s.dot] for s in state.siblings)

    def check_antichain(self, seen: frozenset[int]) -> None:
        for x, y in itertools.permutations(seen, 2):
            assert x not in self.preds[y], f"write {x} precedes write {y}, yet both were read"


put_op = st.tuples(
    st.just("put"),
    st.integers(0, len(NODES) - 1),  # coordinator
    st.none() | st.integers(0, 10_000),  # which earlier read supplies the context
    st.sampled_from([False, False, False, True]),  # a delete?
)
read_op = st.tuples(st.just("read"), st.sets(st.integers(0, len(NODES) - 1), min_size=1))
sync_op = st.tuples(st.just("sync"), st.integers(0, len(NODES) - 1), st.integers(0, len(NODES) - 1))


@given(st.lists(st.one_of(put_op, read_op, sync_op), max_size=60))
def test_random_histories_never_read_a_value_with_its_ancestor(ops: list[tuple[Any, ...]]) -> None:
    m = Model()
    for op in ops:
        if op[0] == "put":
            _, coord, which, delete = op
            k = len(m.value)
            value = None if delete else f"w{k}".encode()
            if which is None or not m.reads:
                ctx, preds = None, frozenset[int]()
            else:
                ctx, seen = m.reads[which % len(m.reads)]
                preds = seen.union(*(m.preds[x] for x in seen))
            old = m.states[coord]
            new = old.update(ctx, value, NODES[coord])
            fresh = [s for s in new.siblings if not old.vv.covers(s.dot)]
            assert len(fresh) == 1 and fresh[0].value == value
            assert fresh[0].dot not in m.write_of, "a dot was issued twice"
            m.value[k], m.write_of[fresh[0].dot], m.preds[k] = value, k, preds
            # The put replaces exactly the siblings its context covered; a
            # blind put (no context) replaces nothing.
            assert m.ids(new) == (m.ids(old) - preds) | {k}
            m.states[coord] = new
        elif op[0] == "read":
            merged = functools.reduce(SiblingSet.merge, (m.states[i] for i in sorted(op[1])))
            seen = m.ids(merged)
            m.check_antichain(seen)
            assert sorted(merged.values()) == sorted(
                v for x in seen if (v := m.value[x]) is not None
            )
            m.reads.append((merged.context(), seen))
        else:
            _, src, dst = op
            m.states[dst] = m.states[dst].merge(m.states[src])
            m.check_antichain(m.ids(m.states[dst]))
    # Heal: every replica converges, and no write is lost: each survives or
    # precedes a survivor.
    final = functools.reduce(SiblingSet.merge, m.states)
    for state in m.states:
        assert state.merge(final) == final
    survivors = m.ids(final)
    m.check_antichain(survivors)
    for k in m.value:
        assert k in survivors or any(k in m.preds[s] for s in survivors), f"write {k} was lost"
    assert SiblingSet.decode(final.encode()) == final


# -- sibling sets: the rules by example ------------------------------------------------------


def test_concurrent_blind_puts_are_siblings_until_a_put_with_the_merged_context() -> None:
    a = SiblingSet().update(None, b"1", "a")
    b = SiblingSet().update(None, b"2", "b")
    read = a.merge(b)
    assert sorted(read.values()) == [b"1", b"2"]
    c = SiblingSet().update(None, b"3", "c")  # blind: a sibling of everything
    assert sorted(c.merge(read).values()) == [b"1", b"2", b"3"]
    resolved = a.update(read.context(), b"12", "a")
    assert resolved.values() == [b"12"]
    assert sorted(resolved.merge(b).merge(c).values()) == [b"12", b"3"]


def test_a_delete_concurrent_with_a_write_leaves_the_write() -> None:
    base = SiblingSet().update(None, b"v1", "a")
    deleted = base.update(base.context(), None, "a")
    assert deleted.values() == [] and deleted.is_tombstone_only()
    written = base.update(base.context(), b"v2", "b")
    both = deleted.merge(written)
    assert both.values() == [b"v2"] and not both.is_tombstone_only()
    assert len(both.siblings) == 2  # the tombstone stays until reaped
    # A put with the read's context clears the tombstone too.
    after = both.update(both.context(), b"v3", "c")
    assert after.values() == [b"v3"] and len(after.siblings) == 1


def test_empty_state() -> None:
    empty = SiblingSet()
    assert empty.values() == [] and not empty.is_tombstone_only()
    assert empty.context() == VersionVector() and empty.client_context() is None


def test_new_dot_exceeds_what_the_client_saw_from_that_node() -> None:
    # A copy that lost data must not reissue a dot the client's context covers.
    state = SiblingSet().update(VersionVector({"a": 7}), b"x", "a")
    assert state.siblings[0].dot == Dot(node="a", counter=8)


def test_too_many_siblings() -> None:
    state = SiblingSet()
    for i in range(3):
        state = state.update(None, b"%d" % i, "a", max_siblings=3)
    with pytest.raises(TooManySiblings, match="limit of 3") as info:
        state.update(None, b"x", "a", max_siblings=3)
    assert (info.value.count, info.value.limit) == (4, 3)
    # A put that resolves them is fine; a merge never raises.
    assert state.update(state.context(), b"x", "a", max_siblings=3).values() == [b"x"]
    other = SiblingSet().update(None, b"y", "b")
    assert len(state.merge(other).siblings) == 4
    with pytest.raises(ValueError, match="max_siblings"):
        state.update(None, b"x", "a", max_siblings=0)


def test_default_sibling_limit_is_100() -> None:
    assert DEFAULT_MAX_SIBLINGS == 100
    dvv = DvvResolver()
    state = dvv.decode(None)
    for i in range(100):
        state = dvv.update(state, context=None, value=b"%d" % i, node="a")
    with pytest.raises(TooManySiblings):
        dvv.update(state, context=None, value=b"x", node="a")


def test_invalid_states_and_arguments_raise() -> None:
    dot = Dot(node="a", counter=1)
    with pytest.raises(ValueError, match="does not cover"):
        SiblingSet(siblings=(Sibling(dot=dot, value=b"x"),))
    with pytest.raises(ValueError, match="twice"):
        SiblingSet(
            siblings=(Sibling(dot=dot, value=b"x"), Sibling(dot=dot, value=b"y")),
            vv=VersionVector({"a": 1}),
        )
    with pytest.raises(ValueError):
        Dot(node="a", counter=0)
    with pytest.raises(ValueError):
        SiblingSet().update(None, "text", "a")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SiblingSet().update(None, b"x", "")


def dvv_blob(*parts: object) -> bytes:
    packed = msgpack.packb(list(parts))
    assert isinstance(packed, bytes)
    return packed


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\xc1\xc1",
        msgpack.packb("dvv"),
        msgpack.packb([]),
        dvv_blob("dvv", 2, [], []),
        dvv_blob("dvv", 1, [], []) + b"\x00",
        dvv_blob("dvv", 1, [], [["a", 1, b"x"]]),  # a sibling its context does not cover
        dvv_blob("dvv", 1, [["a", 1]], [["a", 1, b"x"], ["a", 1, b"y"]]),  # a dot twice
        dvv_blob("dvv", 1, [["a", 1]], [["a", 1, "text"]]),
        dvv_blob("dvv", 1, [["a", 1]], [["a", 0, b"x"]]),
        dvv_blob("dvv", 1, [["a", 1]], "siblings"),
        dvv_blob("dvv", 1, {"a": 1}, []),
    ],
)
def test_malformed_sibling_set_bytes_raise_value_error(bad: bytes) -> None:
    with pytest.raises(ValueError, match="malformed"):
        SiblingSet.decode(bad)


@given(st.binary(max_size=64))
def test_random_bytes_never_decode_to_garbage(data: bytes) -> None:
    for kind in (SiblingSet, LwwRegister):
        try:
            state = kind.decode(data)
        except ValueError:
            continue
        assert kind.decode(state.encode()) == state


def test_decoding_the_other_resolution_says_so() -> None:
    with pytest.raises(ValueError, match="resolution 'lww'"):
        SiblingSet.decode(LwwRegister().encode())
    with pytest.raises(ValueError, match="resolution 'dvv'"):
        LwwRegister.decode(SiblingSet().encode())


# -- LWW ------------------------------------------------------------------------------------


@given(lww_registers, lww_registers, lww_registers)
def test_lww_merge_is_a_semilattice(x: LwwRegister, y: LwwRegister, z: LwwRegister) -> None:
    assert x.merge(y) == y.merge(x)
    assert x.merge(y).merge(z) == x.merge(y.merge(z))
    assert x.merge(x) == x and x.merge(LwwRegister()) == x
    assert LwwRegister.decode(x.encode()) == x


writes = st.lists(
    st.tuples(
        st.integers(0, 20),  # wall-clock ns
        st.sampled_from(NODES),  # coordinator
        st.integers(0, len(NODES) - 1),  # the replica it lands on first
        st.booleans(),  # a delete?
    ),
    min_size=1,
    max_size=30,
    unique_by=lambda w: (w[0], w[1]),
)


@given(writes, st.permutations(range(len(NODES))))
def test_lww_keeps_the_greatest_timestamp_then_node(
    ws: list[tuple[int, str, int, bool]], merge_order: list[int]
) -> None:
    replicas = [LwwRegister() for _ in NODES]
    for i, (ts, node, replica, delete) in enumerate(ws):
        replicas[replica] = replicas[replica].update(None if delete else b"%d" % i, node, ts)
    final = functools.reduce(LwwRegister.merge, (replicas[i] for i in merge_order))
    i, (ts, node, _, delete) = max(enumerate(ws), key=lambda w: (w[1][0], w[1][1]))
    assert final.stamp == Stamp(wall_ns=ts, node=node)
    assert final.values() == ([] if delete else [b"%d" % i])
    assert final.is_tombstone_only() == delete


def test_lww_ties_break_by_node_id() -> None:
    x = LwwRegister().update(b"from-a", "a", 5)
    y = LwwRegister().update(b"from-b", "b", 5)
    assert x.merge(y).values() == y.merge(x).values() == [b"from-b"]


def test_lww_resolver_reads_the_wall_clock_and_loses_writes_under_skew() -> None:
    clock = ManualClock(wall_ns=1_000)
    lww = resolver("lww", clock=clock)
    assert isinstance(lww, LwwResolver) and lww.name == "lww"
    state = lww.update(lww.decode(None), context=None, value=b"first", node="a")
    assert state.values() == [b"first"] and state.client_context() is None
    clock.advance(1.0)  # moves wall and monotonic together
    assert (clock.wall_ns(), clock.monotonic()) == (1_000_001_000, 1.0)
    state = lww.update(state, context=b"ignored, even if garbage", value=b"second", node="a")
    assert state.values() == [b"second"]
    clock.skew(-10_000_000_000)  # libfaketime: the wall clock alone jumps back
    assert clock.monotonic() == 1.0
    late = lww.update(state, context=None, value=b"third", node="b")
    assert late.values() == [b"second"], "a write stamped in the past loses"
    deleted = lww.update(late, context=None, value=None, node="a")
    assert deleted.values() == [b"second"]  # the delete is in the past too
    clock.skew(20_000_000_000)
    deleted = lww.update(late, context=None, value=None, node="a")
    assert deleted.is_tombstone_only() and deleted.values() == []
    assert lww.decode(deleted.encode()) == deleted
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


def test_system_clock() -> None:
    clock = SystemClock()
    assert clock.wall_ns() > 1_600_000_000 * 10**9
    t = clock.monotonic()
    assert clock.monotonic() >= t


# -- the resolver interface -------------------------------------------------------------------


def test_dvv_resolver_round_trip_through_client_context() -> None:
    dvv = resolver("dvv", clock=ManualClock(), max_siblings=5)
    assert isinstance(dvv, DvvResolver) and dvv.name == "dvv" and dvv.max_siblings == 5
    a = dvv.update(dvv.decode(None), context=None, value=b"1", node="a")
    b = dvv.update(dvv.decode(None), context=None, value=b"2", node="b")
    read = dvv.merge(dvv.decode(a.encode()), dvv.decode(b.encode()))
    assert sorted(read.values()) == [b"1", b"2"]
    resolved = dvv.update(a, context=read.client_context(), value=b"3", node="a")
    assert dvv.merge(resolved, b).values() == [b"3"]
    with pytest.raises(ValueError, match="context"):
        dvv.update(a, context=b"\xc1", value=b"x", node="a")


def test_resolver_errors() -> None:
    with pytest.raises(ValueError, match="unknown resolution"):
        resolver("crdt", clock=ManualClock())
    with pytest.raises(ValueError, match="max_siblings"):
        resolver("dvv", clock=ManualClock(), max_siblings=0)
    dvv, lww = DvvResolver(), LwwResolver(clock=ManualClock())
    with pytest.raises(TypeError):
        dvv.merge(SiblingSet(), LwwRegister())
    with pytest.raises(TypeError):
        lww.update(SiblingSet(), context=None, value=b"x", node="a")
    with pytest.raises(ValueError, match="resolution"):
        dvv.decode(LwwRegister().encode())


def test_a_restarted_coordinator_never_reissues_a_dot_it_sent_but_did_not_store() -> None:
    # n4 coordinates a put, sends the new state to a replica, and dies before
    # its own copy is durable; after the restart it coordinates another put
    # on its old copy. Found by `harness run` (dvv, strict, partition+kill):
    # the second value took the first one's dot and the replica dropped it.
    before = DvvResolver(incarnation=1)
    stored = before.update(SiblingSet(), context=None, value=b"a", node="n4")
    sent = before.update(stored, context=None, value=b"lost-locally", node="n4")
    replica = before.merge(SiblingSet(), sent)
    after = DvvResolver(incarnation=2)
    again = after.update(stored, context=None, value=b"acknowledged", node="n4")
    merged = after.merge(replica, again)
    # The new dot exceeds the lost one, so the new context claims to have
    # seen it: the put that never reached its coordinator's disk (never
    # acknowledged: its client got `info`) may go, the acknowledged one stays.
    assert {s.value for s in merged.siblings} >= {b"a", b"acknowledged"}
    # without the incarnation floor the dot is reissued and the new value is lost
    same = DvvResolver().update(stored, context=None, value=b"acknowledged", node="n4")
    assert b"acknowledged" not in {s.value for s in DvvResolver().merge(replica, same).siblings}


def test_a_new_incarnations_actor_does_not_claim_the_former_ones_versions() -> None:
    # n1 makes a version, which n2 holds; n1 comes back with an empty disk
    # and makes a blind one. Stamped with the same name (and a floored
    # counter), its context would cover the first version; stamped per
    # incarnation, both stay siblings wherever the states meet.
    first = SiblingSet().update(None, b"before", "n1@1", floor=1 << 32)
    held_by_n2 = SiblingSet().merge(first)
    after_wipe = SiblingSet().update(None, b"after", "n1@2", floor=2 << 32)
    assert sorted(s.value for s in held_by_n2.merge(after_wipe).siblings) == [b"after", b"before"]
    same_name = SiblingSet().update(None, b"after", "n1", floor=2 << 32)
    assert [s.value for s in SiblingSet().merge(SiblingSet().update(None, b"before", "n1", floor=1 << 32))
            .merge(same_name).siblings] == [b"after"]  # what the bare name did: "before" dropped
