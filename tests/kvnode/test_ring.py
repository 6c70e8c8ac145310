"""Tests for kvnode.ring: hashing, balance, preference lists, joins and leaves."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvnode.ring import DEFAULT_PARTITIONS, Ring, key_position


def names(count: int, prefix: str = "n") -> list[str]:
    return [f"{prefix}{i:02d}" for i in range(1, count + 1)]


def counts(ring: Ring) -> Counter[str]:
    c = Counter(dict.fromkeys(ring.nodes, 0))
    c.update(ring.owners)
    return c


def assert_balanced(ring: Ring) -> None:
    """Every node holds Q/S partitions, give or take one."""
    q, s = ring.partitions, len(ring.nodes)
    for node, held in counts(ring).items():
        assert q // s <= held <= -(-q // s), (node, held, q, s)


@pytest.fixture(scope="module")
def keys() -> list[bytes]:
    rng = random.Random(20240501)
    return [rng.randbytes(16) for _ in range(100_000)]


# -- hashing -----------------------------------------------------------------


def test_position_is_first_8_bytes_of_md5_big_endian() -> None:
    for key in (b"", b"a", b"hello", bytes(range(256))):
        expected = int.from_bytes(hashlib.md5(key).digest()[:8], "big")
        assert key_position(key) == expected
    assert key_position("k\u00e9y") == key_position("k\u00e9y".encode())


def test_partition_is_top_bits_of_position() -> None:
    for q in (1, 2, 256, 1 << 16):
        ring = Ring.build(["a"], partitions=q)
        for key in (b"x", b"y", b"zz", b"key-42"):
            assert ring.partition_of(key) == key_position(key) * q // 2**64


@pytest.mark.parametrize("bad", [0, -1, 3, 6, 100, 255, 257, 2**33, 1.5, 256.0, "256", None, True])
def test_partitions_must_be_a_power_of_two(bad: object) -> None:
    with pytest.raises(ValueError, match="partitions"):
        Ring.build(["a", "b"], partitions=bad)  # type: ignore[arg-type]


def test_default_partitions() -> None:
    assert Ring.build(["a"]).partitions == DEFAULT_PARTITIONS == 256


@pytest.mark.parametrize("bad", [[], [""], ["a", 3]])
def test_bad_node_lists_raise(bad: list[object]) -> None:
    with pytest.raises(ValueError):
        Ring.build(bad)  # type: ignore[arg-type]


def test_constructor_checks_its_invariants() -> None:
    with pytest.raises(ValueError, match="sorted"):
        Ring(nodes=("b", "a"), owners=("a", "b"))
    with pytest.raises(ValueError, match="not in the ring"):
        Ring(nodes=("a",), owners=("a", "b"))
    with pytest.raises(ValueError, match="power of two"):
        Ring(nodes=("a",), owners=("a", "a", "a"))


# -- balance and determinism ---------------------------------------------------


@pytest.mark.parametrize("q", [1, 8, 16, 64, 256, 1024])
def test_build_deals_q_over_s_give_or_take_one(q: int) -> None:
    for s in range(1, 21):
        ring = Ring.build(names(s), partitions=q)
        assert_balanced(ring)
        assert sum(ring.shares().values()) == pytest.approx(1.0)


@pytest.mark.parametrize("q", [16, 64, 256, 1024])
def test_joins_and_leaves_stay_balanced(q: int) -> None:
    ring = Ring.build(["n01"], partitions=q)
    for s in range(2, 21):
        ring = ring.with_node(f"n{s:02d}")
        assert_balanced(ring)
    for s in range(20, 1, -1):
        ring = ring.without_node(f"n{s:02d}")
        assert_balanced(ring)
    assert set(ring.owners) == {"n01"}


def test_same_membership_in_any_order_gives_the_same_ring() -> None:
    members = names(7)
    expected = Ring.build(members, partitions=64)
    rng = random.Random(7)
    for _ in range(20):
        shuffled = members + rng.sample(members, 3)  # duplicates count once
        rng.shuffle(shuffled)
        ring = Ring.build(shuffled, partitions=64)
        assert ring == expected
        assert ring.to_dict() == expected.to_dict()
    # Joins are deterministic too: the same changes give the same ring.
    assert expected.with_node("x").without_node("n03") == expected.with_node("x").without_node(
        "n03"
    )


def test_five_nodes_share_100k_keys_evenly(keys: list[bytes]) -> None:
    ring = Ring.build(names(5))
    load = Counter(ring.owner(ring.partition_of(k)) for k in keys)
    mean = len(keys) / 5
    assert max(load.values()) <= 1.1 * mean, load


def test_adding_a_sixth_node_moves_only_keys_to_it(keys: list[bytes]) -> None:
    before = Ring.build(names(5))
    after = before.with_node("n06")
    assert_balanced(after)
    moved = 0
    for k in keys:
        p = before.partition_of(k)
        assert after.partition_of(k) == p
        if before.owner(p) != after.owner(p):
            assert after.owner(p) == "n06"
            moved += 1
    assert 0.12 <= moved / len(keys) <= 0.22, moved / len(keys)


def test_join_takes_only_from_the_most_loaded() -> None:
    # An unbalanced ring (as gossip might hand us): a holds 10, b 4, c 2.
    ring = Ring.from_dict(
        {
            "format": 1,
            "partitions": 16,
            "nodes": ["a", "b", "c"],
            "owners": [0] * 10 + [1] * 4 + [2] * 2,
        }
    )
    joined = ring.with_node("d")
    c = counts(joined)
    assert c == Counter({"a": 5, "d": 5, "b": 4, "c": 2})
    for p in range(16):
        assert joined.owner(p) in (ring.owner(p), "d")
        if joined.owner(p) == "d":
            assert ring.owner(p) == "a"


def test_join_spreads_the_newcomer_round_the_ring() -> None:
    ring = Ring.build(names(5)).with_node("n06")
    mine = ring.partitions_of("n06")
    gaps = [(b - a) % 256 for a, b in zip(mine, (*mine[1:], mine[0] + 256), strict=True)]
    assert min(gaps) >= 3  # N=3 preference lists never meet n06 twice in a row


def test_leave_hands_partitions_only_to_remaining_nodes() -> None:
    ring = Ring.build(names(6))
    left = ring.without_node("n03")
    assert "n03" not in left.nodes and "n03" not in left.owners
    assert_balanced(left)
    for p in range(ring.partitions):
        if ring.owner(p) != "n03":
            assert left.owner(p) == ring.owner(p)


def test_membership_errors() -> None:
    ring = Ring.build(["a", "b"])
    with pytest.raises(ValueError, match="already"):
        ring.with_node("a")
    with pytest.raises(ValueError, match="not in the ring"):
        ring.without_node("z")
    with pytest.raises(ValueError, match="last node"):
        Ring.build(["a"]).without_node("a")
    with pytest.raises(ValueError):
        ring.with_node("")


@st.composite
def membership_changes(draw: st.DrawFn) -> tuple[Ring, list[tuple[str, str]]]:
    q = draw(st.sampled_from([8, 16, 64, 256]))
    ring = Ring.build(names(draw(st.integers(1, 8))), partitions=q)
    ops = draw(
        st.lists(st.tuples(st.sampled_from(["join", "leave"]), st.integers(0, 30)), max_size=12)
    )
    return ring, [(op, f"m{i:02d}") for op, i in ops]


@given(membership_changes())
def test_changes_move_the_minimum_and_keep_balance(
    case: tuple[Ring, list[tuple[str, str]]],
) -> None:
    ring, ops = case
    for op, name in ops:
        before = counts(ring)
        if op == "join" and name not in ring.nodes:
            new = ring.with_node(name)
            changed = [p for p in range(ring.partitions) if new.owner(p) != ring.owner(p)]
            assert all(new.owner(p) == name for p in changed)
            donors = {ring.owner(p) for p in changed}
            others = set(ring.nodes) - donors
            if donors and others:  # only the most loaded gave
                assert min(before[d] for d in donors) >= max(before[o] for o in others)
        elif op == "leave" and len(ring.nodes) > 1:
            victim = ring.nodes[int(name[1:]) % len(ring.nodes)]
            new = ring.without_node(victim)
            changed = [p for p in range(ring.partitions) if new.owner(p) != ring.owner(p)]
            assert changed == list(ring.partitions_of(victim))
            receivers = {new.owner(p) for p in changed}
            others = set(new.nodes) - receivers
            if receivers and others:  # only the least loaded received
                assert max(before[r] for r in receivers) <= min(before[o] for o in others)
        else:
            continue
        assert_balanced(new)
        assert Ring.from_dict(new.to_dict()) == new
        ring = new


# -- preference lists -----------------------------------------------------------


@pytest.mark.parametrize("s", [1, 2, 3, 5, 8, 13, 20])
def test_preference_lists_have_n_distinct_nodes(s: int) -> None:
    ring = Ring.build(names(s), partitions=64).with_node("late").without_node("n01")
    for i in range(500):
        key = f"key-{i}".encode()
        for n in (1, 2, 3, 5):
            placement = ring.placement(key, n)
            prefs, falls = placement.primaries, placement.fallbacks
            assert prefs == ring.preference_list(key, n)
            assert falls == ring.fallbacks(key, n)
            assert len(prefs) == min(n, len(ring.nodes))
            assert len(set(prefs)) == len(prefs)
            assert prefs[0] == ring.owner(ring.partition_of(key)) == ring.owner(placement.partition)
            # Primaries then fallbacks: every node exactly once.
            assert sorted(prefs + falls) == sorted(ring.nodes)


def test_preference_list_walks_clockwise_skipping_repeats() -> None:
    # Owners a a b a c: from partition 0 the walk meets a, b, c.
    ring = Ring.from_dict(
        {
            "format": 1,
            "partitions": 8,
            "nodes": ["a", "b", "c", "d"],
            "owners": [0, 0, 1, 0, 2, 2, 1, 0],
        }
    )
    assert ring.walk(0) == ("a", "b", "c", "d")  # d owns nothing: last
    assert ring.walk(5) == ("c", "b", "a", "d")
    assert ring.walk(7) == ("a", "b", "c", "d")


def test_preference_list_with_more_nodes_than_partitions() -> None:
    ring = Ring.build(names(20), partitions=8)
    assert_balanced(ring)
    assert len(ring.preference_list(b"k", 3)) == 3
    assert len(ring.fallbacks(b"k", 3)) == 17
    assert sum(1 for share in ring.shares().values() if share == 0) == 12


def test_round_robin_preference_lists_spread_replicas_evenly() -> None:
    ring = Ring.build(names(5))
    replicas = Counter(node for p in range(256) for node in ring.walk(p)[:3])
    assert max(replicas.values()) - min(replicas.values()) <= 3


def test_bad_arguments() -> None:
    ring = Ring.build(["a", "b"], partitions=4)
    for n in (0, -1, True, 1.0):
        with pytest.raises(ValueError, match="positive"):
            ring.preference_list(b"k", n)  # type: ignore[arg-type]
    for p in (-1, 4):
        with pytest.raises(ValueError, match="out of range"):
            ring.owner(p)


# -- gossip form -----------------------------------------------------------------


def test_dict_round_trips_through_json_and_msgpack() -> None:
    ring = Ring.build(names(5), partitions=64).with_node("x").without_node("n02")
    assert Ring.from_dict(json.loads(json.dumps(ring.to_dict()))) == ring
    assert Ring.from_dict(msgpack.unpackb(msgpack.packb(ring.to_dict()))) == ring


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {},
        {"format": 2, "partitions": 2, "nodes": ["a"], "owners": [0, 0]},
        {"format": 1, "partitions": 3, "nodes": ["a"], "owners": [0, 0, 0]},
        {"format": 1, "partitions": 2, "nodes": ["a"], "owners": [0]},
        {"format": 1, "partitions": 2, "nodes": ["a"], "owners": [0, 1]},
        {"format": 1, "partitions": 2, "nodes": ["a"], "owners": [0, True]},
        {"format": 1, "partitions": 2, "nodes": ["b", "a"], "owners": [0, 1]},
        {"format": 1, "partitions": 2, "nodes": "ab", "owners": [0, 1]},
    ],
)
def test_from_dict_rejects_malformed(bad: object) -> None:
    with pytest.raises(ValueError):
        Ring.from_dict(bad)  # type: ignore[arg-type]
