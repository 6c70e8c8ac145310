"""Network partitions: the grudge shapes Jepsen uses, and the `Partition` fault
that applies one of them through `Backend.cut`.

A grudge maps every node to the set of nodes whose traffic it drops. The
builders here are pure functions of the node list and an rng, and every grudge
they return is symmetric (a drops b exactly when b drops a), never has a node
drop itself, and has a key for every node (an empty set for a node that drops
nothing). The shapes (`SHAPES`):

- `halves`: the first half of the list (n//2 nodes) against the rest.
- `random-halves`: the same on a shuffled list.
- `isolate-one`: one random node cut off from all the others.
- `majorities-ring`: every node sees a majority (itself included), but no two
  nodes see the same one, so a quorum system that trusts "I can reach a
  majority" gets several overlapping "majorities" at once (Jepsen's
  `majorities-ring`). See `majorities_ring` for the construction for any n.
- `bridge`: two halves that cannot reach each other, and one bridge node that
  reaches both.

With too few nodes for a shape (one node for anything; two for
`majorities-ring` and `bridge`) the grudge is empty: nothing is cut.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from harness.backends.base import BackendCapabilities

from .base import ClusterHandle, Fault

if TYPE_CHECKING:
    from .schedule import FaultOptions

# node -> the nodes whose traffic it drops (built here, so a concrete dict)
GrudgeDict = dict[str, frozenset[str]]
GrudgeBuilder = Callable[[Sequence[str], random.Random], GrudgeDict]


def complete_grudge(components: Iterable[Iterable[str]]) -> GrudgeDict:
    """Each node drops every node outside its own component (components are
    disjoint; together they are all the nodes)."""
    groups = [frozenset(c) for c in components]
    everyone = frozenset().union(*groups)
    return {node: everyone - group for group in groups for node in group}


def halves(nodes: Sequence[str], rng: random.Random) -> GrudgeDict:
    """The first n//2 nodes against the rest (rng unused; here for the shape
    builders' common signature)."""
    half = len(nodes) // 2
    return complete_grudge([nodes[:half], nodes[half:]])


def random_halves(nodes: Sequence[str], rng: random.Random) -> GrudgeDict:
    """`halves` of a shuffled node list."""
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    return halves(shuffled, rng)


def isolate_one(nodes: Sequence[str], rng: random.Random) -> GrudgeDict:
    """One random node cut off from every other node."""
    if not nodes:
        return {}
    loner = rng.choice(list(nodes))
    return complete_grudge([[loner], [n for n in nodes if n != loner]])


def majorities_ring(nodes: Sequence[str], rng: random.Random) -> GrudgeDict:
    """Every node sees a strict majority (itself included), and no two nodes
    see the same set.

    The nodes are shuffled onto a ring and each sees the k nearest nodes on
    either side, k = ceil((m - 1) / 2) for the majority m = n//2 + 1: its
    visible set is the 2k+1 nodes of a window centred on it, at least m. For
    n = 5 that is Jepsen's ring (each node sees its two neighbours); for n = 4
    each node loses only the opposite node; for n >= 6 some windows hold m+1
    nodes, since a symmetric grudge in which every visible set is exactly m
    is not always possible (n = 7 needs degree 3 at every node: an odd sum).
    For n >= 4 a window is shorter than the ring, and a window on a ring
    determines its centre, so no two visible sets are equal.

    n = 3 has no such ring (every window of 3 is everything), so one random
    link is cut instead: the visible sets {a, b, c}, {a, b} and {a, c} are
    each a majority and all differ. For n <= 2 any cut leaves some node
    seeing only itself, which is no majority, so nothing is cut.
    """
    n = len(nodes)
    ring = list(nodes)
    rng.shuffle(ring)
    if n <= 2:
        return {node: frozenset() for node in nodes}
    if n == 3:
        _, b, c = ring  # the first node is the one that sees both others
        grudge = {node: frozenset[str]() for node in nodes}
        grudge[b], grudge[c] = frozenset([c]), frozenset([b])
        return grudge
    majority = n // 2 + 1
    k = majority // 2  # == ceil((majority - 1) / 2)
    grudge = {}
    for i, node in enumerate(ring):
        visible = {ring[(i + d) % n] for d in range(-k, k + 1)}
        grudge[node] = frozenset(other for other in ring if other not in visible)
    return grudge


def bridge(nodes: Sequence[str], rng: random.Random) -> GrudgeDict:
    """Two halves that cannot reach each other, joined only through one bridge
    node that reaches both (Jepsen's `bridge`, on a shuffled list: the first
    (n-1)//2 nodes, the bridge, the rest). Fewer than three nodes: no cut."""
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    if len(shuffled) < 3:
        return {node: frozenset() for node in nodes}
    cut = (len(shuffled) - 1) // 2
    left, hub, right = shuffled[:cut], shuffled[cut], shuffled[cut + 1 :]
    grudge = complete_grudge([left, right])
    grudge[hub] = frozenset()
    return grudge


SHAPES: dict[str, GrudgeBuilder] = {
    "halves": halves,
    "random-halves": random_halves,
    "isolate-one": isolate_one,
    "majorities-ring": majorities_ring,
    "bridge": bridge,
}


def check_shapes(shapes: Iterable[str]) -> tuple[str, ...]:
    """The shapes as a tuple, or ValueError naming an unknown one."""
    result = tuple(shapes)
    if not result:
        raise ValueError(f"no partition shapes given; valid: {', '.join(SHAPES)}")
    for shape in result:
        if shape not in SHAPES:
            raise ValueError(f"unknown partition shape {shape!r}; valid: {', '.join(SHAPES)}")
    return result


def grudge_value(grudge: GrudgeDict) -> dict[str, list[str]]:
    """The grudge as JSON: only nodes that drop something, sorted lists."""
    return {node: sorted(drops) for node, drops in sorted(grudge.items()) if drops}


class Partition(Fault):
    """Cut the network into one of `shapes` (drawn at random per start; every
    shape by default). Start: `backend.cut(grudge)`; stop: `backend.cut({})`."""

    name = "partition"
    start_f = "start-partition"
    stop_f = "stop-partition"

    def __init__(self, handle: ClusterHandle, shapes: Sequence[str] | None = None) -> None:
        self._handle = handle
        self._shapes = check_shapes(SHAPES if shapes is None else shapes)
        self._shape: str | None = None  # the shape in effect (or being applied)

    @classmethod
    def from_options(cls, handle: ClusterHandle, options: FaultOptions) -> Partition:
        return cls(handle, options.partition_shapes)

    def unavailable(self, caps: BackendCapabilities) -> str | None:
        return None  # every backend can cut links

    async def start(self, rng: random.Random) -> Any:
        shape = rng.choice(self._shapes)
        grudge = SHAPES[shape](self._handle.nodes, rng)
        # Set before awaiting, so that a cancelled cut still counts as active
        # and heal undoes it.
        self._shape = shape
        await self._handle.backend.cut(grudge)
        return {"shape": shape, "grudge": grudge_value(grudge)}

    async def stop(self) -> Any:
        shape = self._shape
        await self._handle.backend.cut({})
        self._shape = None  # only now: if the cut raised, heal tries again
        return {"healed": shape}

    def active(self) -> str | None:
        return None if self._shape is None else f"partition {self._shape}"
