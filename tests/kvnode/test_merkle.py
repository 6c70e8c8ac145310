"""Tests for kvnode.merkle: the descent finds exactly the differing leaves,
cheaply, and a tree depends only on its contents."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvnode.merkle import EMPTY, HASH_BYTES, Descent, MerkleTree, differing_leaves, leaf_of

SHAPES = [(16, 3), (2, 2), (4, 1), (3, 0)]

keys = st.binary(min_size=0, max_size=6)
states = st.binary(min_size=0, max_size=6)
stores = st.dictionaries(keys, states, max_size=40)


@st.composite
def store_pairs(draw: st.DrawFn) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """Two stores that mostly agree: a common base, then on the second some
    keys changed, some removed and some added."""
    a = draw(stores)
    b = dict(a)
    for k in draw(st.lists(st.sampled_from(sorted(a)), max_size=5)) if a else []:
        if draw(st.booleans()):
            b[k] = draw(states)
        else:
            b.pop(k, None)
    b.update(draw(st.dictionaries(keys, states, max_size=5)))
    return a, b


def all_hashes(tree: MerkleTree) -> list[list[bytes]]:
    return [tree.hashes(level, list(range(tree.fanout**level))) for level in range(tree.depth + 1)]


class Recorder:
    """The remote side of a descent, counting round trips and hashes sent."""

    def __init__(self, tree: MerkleTree) -> None:
        self.tree = tree
        self.calls = 0
        self.hashes = 0

    def __call__(self, level: int, indexes: list[int]) -> Sequence[bytes]:
        self.calls += 1
        self.hashes += len(indexes)
        return self.tree.hashes(level, indexes)


@given(store_pairs(), st.sampled_from(SHAPES))
def test_descent_finds_exactly_the_leaves_of_differing_keys(
    pair: tuple[dict[bytes, bytes], dict[bytes, bytes]], shape: tuple[int, int]
) -> None:
    a, b = pair
    fanout, depth = shape
    ta = MerkleTree.build(a.items(), fanout=fanout, depth=depth)
    tb = MerkleTree.build(b.items(), fanout=fanout, depth=depth)
    differing = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    expected = sorted({leaf_of(k, fanout**depth) for k in differing})
    remote = Recorder(tb)
    assert differing_leaves(ta, remote) == expected
    assert differing_leaves(tb, ta.hashes) == expected
    assert remote.calls <= depth + 1
    assert (ta.root() == tb.root()) == (not differing)
    # The keys to exchange are those of the differing leaves, on either side.
    assert differing <= set(ta.keys_in(expected)) | set(tb.keys_in(expected))


@given(stores, st.sampled_from(SHAPES))
def test_identical_stores_agree_at_the_root_in_one_round_trip(
    store: dict[bytes, bytes], shape: tuple[int, int]
) -> None:
    fanout, depth = shape
    ta = MerkleTree.build(store.items(), fanout=fanout, depth=depth)
    tb = MerkleTree.build(reversed(list(store.items())), fanout=fanout, depth=depth)
    assert ta.root() == tb.root()
    remote = Recorder(tb)
    assert differing_leaves(ta, remote) == []
    assert (remote.calls, remote.hashes) == (1, 1)


@given(stores, st.randoms(use_true_random=False))
def test_a_tree_depends_only_on_its_contents(store: dict[bytes, bytes], rnd: random.Random) -> None:
    items = list(store.items())
    shuffled = list(items)
    rnd.shuffle(shuffled)
    built = MerkleTree.build(items, fanout=2, depth=3)
    assert all_hashes(MerkleTree.build(shuffled, fanout=2, depth=3)) == all_hashes(built)
    # Built up and torn down incrementally, with noise in between.
    tree = MerkleTree(fanout=2, depth=3)
    for k, v in shuffled:
        tree.set(k, v + b"x")
        tree.root()
        tree.set(b"noise" + k, v)
    for k, v in items:
        tree.set(k, v)
        tree.set(b"noise" + k, None)
    for k in store:  # the noise keys that are real keys were removed above
        tree.set(k, store[k])
    assert all_hashes(tree) == all_hashes(built)
    assert len(tree) == len(store)


@given(stores)
def test_removing_every_key_gives_the_empty_tree(store: dict[bytes, bytes]) -> None:
    tree = MerkleTree.build(store.items(), fanout=4, depth=2)
    for k in store:
        assert k in tree
        tree.set(k, None)
    assert tree.root() == EMPTY
    assert all(h == EMPTY for level in all_hashes(tree) for h in level)
    assert len(tree) == 0


def test_one_difference_costs_depth_plus_one_round_trips_of_fanout_hashes() -> None:
    store = {f"key{i}".encode(): f"v{i}".encode() for i in range(5000)}
    ta = MerkleTree.build(store.items())
    store[b"key42"] = b"changed"
    tb = MerkleTree.build(store.items())
    remote = Recorder(tb)
    assert differing_leaves(ta, remote) == [ta.leaf_of(b"key42")]
    assert remote.calls == 4
    assert remote.hashes == 1 + 16 * 3
    assert b"key42" in ta.keys_in([ta.leaf_of(b"key42")])


def test_descent_step_by_step() -> None:
    ta = MerkleTree.build([(b"a", b"1"), (b"b", b"2")], fanout=4, depth=2)
    tb = MerkleTree.build([(b"a", b"1"), (b"b", b"3")], fanout=4, depth=2)
    d = Descent(ta)
    levels = []
    while not d.done:
        levels.append(d.level)
        d.step(tb.hashes(d.level, d.pending))
    assert levels == [0, 1, 2]
    assert d.leaves == [ta.leaf_of(b"b")]
    assert d.rounds == 3
    with pytest.raises(ValueError, match="already done"):
        d.step([])


def test_descent_refuses_a_malformed_answer() -> None:
    tree = MerkleTree.build([(b"a", b"1")])
    with pytest.raises(ValueError, match="expected 1 hashes"):
        Descent(tree).step([])
    with pytest.raises(ValueError, match="16 bytes"):
        Descent(tree).step([b"short"])
    with pytest.raises(ValueError, match="16 bytes"):
        Descent(tree).step([None])  # type: ignore[list-item]


def test_the_empty_tree_and_the_shape() -> None:
    tree = MerkleTree()
    assert (tree.fanout, tree.depth, tree.leaves) == (16, 3, 4096)
    assert tree.root() == EMPTY == bytes(HASH_BYTES)
    assert list(tree.children(1, 2)) == list(range(32, 48))
    assert tree.keys_in(range(4096)) == []
    with pytest.raises(ValueError, match="out of range"):
        tree.hashes(4, [0])
    with pytest.raises(ValueError, match="out of range"):
        tree.hashes(1, [16])
    with pytest.raises(ValueError, match="no children"):
        tree.children(3, 0)
    with pytest.raises(ValueError, match="fanout"):
        MerkleTree(fanout=1)
    with pytest.raises(TypeError):
        tree.set("str", b"x")  # type: ignore[arg-type]


def test_bucketing_and_hashing_are_stable_across_processes() -> None:
    # Replicas in different processes (and versions) must agree: never hash().
    assert leaf_of(b"k", 4096) == 382
    assert leaf_of(b"", 4096) == 482
    assert MerkleTree.build([(b"k", b"v")]).root().hex() == "6684f12e9e611be9382cc8a4c2f9284e"
