"""Properties of the partition shapes (`harness.nemesis.partition`): every
grudge is symmetric, names every node, never has a node drop itself, and has
its shape's defining property."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.nemesis.partition import (
    SHAPES,
    GrudgeDict,
    bridge,
    halves,
    isolate_one,
    majorities_ring,
    random_halves,
)

node_lists = st.integers(min_value=1, max_value=15).map(
    lambda n: [f"n{i}" for i in range(1, n + 1)]
)
rngs = st.randoms(use_true_random=False)


def visible(grudge: GrudgeDict, nodes: list[str], node: str) -> frozenset[str]:
    """The nodes `node` still hears from, itself included."""
    return frozenset(nodes) - grudge[node]


def components(grudge: GrudgeDict, nodes: list[str]) -> list[frozenset[str]]:
    """Connected components of the graph of links that are not cut."""
    seen: set[str] = set()
    result = []
    for start in nodes:
        if start in seen:
            continue
        group, todo = {start}, [start]
        while todo:
            for other in visible(grudge, nodes, todo.pop()) - group:
                group.add(other)
                todo.append(other)
        seen |= group
        result.append(frozenset(group))
    return result


def assert_well_formed(grudge: GrudgeDict, nodes: list[str]) -> None:
    assert set(grudge) == set(nodes)
    for node, drops in grudge.items():
        assert node not in drops, f"{node} drops itself"
        assert drops <= set(nodes)
        for other in drops:
            assert node in grudge[other], f"{node} drops {other} but not the reverse"


def assert_split(grudge: GrudgeDict, nodes: list[str], sizes: list[int]) -> None:
    """Exactly two groups of these sizes, fully connected inside, cut between."""
    groups = components(grudge, nodes)
    assert sorted(len(g) for g in groups) == sorted(sizes)
    for group in groups:
        for node in group:
            assert visible(grudge, nodes, node) == group


@pytest.mark.parametrize("shape", sorted(SHAPES))
@given(nodes=node_lists, rng=rngs)
def test_every_shape_is_well_formed(shape: str, nodes: list[str], rng: random.Random) -> None:
    assert_well_formed(SHAPES[shape](nodes, rng), nodes)


@given(nodes=node_lists, rng=rngs)
def test_halves(nodes: list[str], rng: random.Random) -> None:
    n = len(nodes)
    grudge = halves(nodes, rng)
    if n == 1:
        assert grudge == {"n1": frozenset()}
        return
    assert_split(grudge, nodes, [n // 2, n - n // 2])
    half = n // 2
    assert grudge[nodes[0]] == frozenset(nodes[half:])  # first half vs the rest, in order


@given(nodes=node_lists, rng=rngs)
def test_random_halves(nodes: list[str], rng: random.Random) -> None:
    n = len(nodes)
    grudge = random_halves(nodes, rng)
    if n > 1:
        assert_split(grudge, nodes, [n // 2, n - n // 2])


def test_random_halves_are_random() -> None:
    nodes = [f"n{i}" for i in range(1, 6)]
    rng = random.Random(0)
    splits = {frozenset(random_halves(nodes, rng)["n1"]) for _ in range(50)}
    assert len(splits) > 3


@given(nodes=node_lists, rng=rngs)
def test_isolate_one(nodes: list[str], rng: random.Random) -> None:
    n = len(nodes)
    grudge = isolate_one(nodes, rng)
    if n <= 2:  # with two nodes, isolating one isolates both
        assert grudge == {a: frozenset(nodes) - {a} for a in nodes}
        return
    loners = [node for node in nodes if visible(grudge, nodes, node) == {node}]
    assert len(loners) == 1
    (loner,) = loners
    assert grudge[loner] == frozenset(nodes) - {loner}
    for node in nodes:
        if node != loner:
            assert grudge[node] == {loner}


@given(nodes=node_lists, rng=rngs)
def test_majorities_ring(nodes: list[str], rng: random.Random) -> None:
    n = len(nodes)
    grudge = majorities_ring(nodes, rng)
    sights = [visible(grudge, nodes, node) for node in nodes]
    for sight in sights:
        assert 2 * len(sight) > n, f"{sorted(sight)} is no majority of {n}"
    if n >= 3:
        # stronger than Jepsen's n >= 5: the construction manages n = 3, 4 too
        assert len(set(sights)) == n, "two nodes see the same majority"
    else:
        assert all(not drops for drops in grudge.values())


def test_majorities_ring_of_five_is_jepsens() -> None:
    """Each node sees itself and two others, and the links left are connected:
    a connected graph in which every node has two neighbours is one 5-cycle,
    each node seeing its two ring neighbours."""
    nodes = [f"n{i}" for i in range(1, 6)]
    for seed in range(20):
        grudge = majorities_ring(nodes, random.Random(seed))
        assert all(len(visible(grudge, nodes, node)) == 3 for node in nodes)
        assert components(grudge, nodes) == [frozenset(nodes)]


@given(nodes=node_lists, rng=rngs)
def test_bridge(nodes: list[str], rng: random.Random) -> None:
    n = len(nodes)
    grudge = bridge(nodes, rng)
    if n < 3:
        assert all(not drops for drops in grudge.values())
        return
    hubs = [node for node in nodes if not grudge[node]]
    assert len(hubs) == 1, "exactly one node reaches everyone"
    (hub,) = hubs
    rest = [node for node in nodes if node != hub]
    without_hub = {node: grudge[node] | {hub} for node in rest}
    sides = components(without_hub, rest)
    assert len(sides) == 2 and all(sides)
    left, right = sides
    assert abs(len(left) - len(right)) <= 1
    for node in left:
        assert grudge[node] == right
    for node in right:
        assert grudge[node] == left
