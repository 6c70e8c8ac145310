"""Consistent hashing: which nodes store a key.

The scheme is the Dynamo paper's placement strategy 3, as Riak uses it:

- A key hashes onto one ring of 2**64 positions by the first 8 bytes of the
  MD5 of the key, read as a big-endian integer. (Never Python's `hash`, which
  is salted per process: every process must place a key alike.)
- The ring is cut into Q equal partitions (the virtual nodes; Q a power of
  two, 256 by default), so a key's partition is the top log2(Q) bits of its
  position.
- Each partition has one owner, a physical node. Partitions are dealt out so
  that each of S nodes owns Q/S of them, give or take one. The paper measured
  this as the best balanced of its three strategies; random tokens per node
  (strategy 1) leave the most loaded of 5 nodes with up to 1.44x the mean.
- A key's preference list is the owner of its partition, then the owners of
  the following partitions clockwise, skipping nodes already listed, until N
  distinct nodes are found (all nodes, if there are fewer than N). The nodes
  the walk meets after those are the key's fallbacks, in order: where a
  sloppy quorum sends a write when a primary is unreachable.

Determinism: `Ring.build` deals partition i to the i-th node (mod S) of the
sorted node list, so the same membership gives the same ring in every process,
whatever order the members were listed in. Round-robin dealing also makes the
next nodes clockwise distinct, so preference lists spread evenly.

Membership changes (`with_node`, `without_node`) move as few partitions as
balance needs: a joining node takes partitions only from the most loaded nodes,
evenly spaced round the ring; a leaving node's partitions go only to the least
loaded ones, each to a node with no partition close by. Both keep one node's
partitions apart, so that preference lists keep meeting distinct nodes soon. After a change the ring depends on the order
of changes, not only on the membership: it is state, to be gossiped
(`to_dict`/`from_dict`) once the node learns membership at run time. With a
static membership list every node simply calls `Ring.build`.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_PARTITIONS", "Placement", "Ring", "key_position"]

DEFAULT_PARTITIONS = 256
_POSITION_BITS = 64
_DICT_FORMAT = 1


def key_position(key: bytes | str) -> int:
    """The key's position on the ring: the first 8 bytes of MD5(key) as a
    big-endian unsigned integer. A `str` key is hashed as its UTF-8 bytes."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    # MD5 for spread, not security: it is what Dynamo and Riak use.
    return int.from_bytes(hashlib.md5(key, usedforsecurity=False).digest()[:8], "big")


def _check_partitions(partitions: object) -> int:
    if (
        not isinstance(partitions, int)
        or isinstance(partitions, bool)
        or partitions < 1
        or partitions & (partitions - 1)
    ):
        raise ValueError(
            f"the number of partitions must be a power of two (1, 2, 4, ... 256, ...), "
            f"got {partitions!r}"
        )
    if partitions > 1 << 32:
        raise ValueError(f"at most 2**32 partitions, got {partitions}")
    return partitions


def _check_node(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a node name must be a non-empty string, got {name!r}")
    return name


def _circular_distance(a: int, b: int, size: int) -> int:
    d = abs(a - b)
    return min(d, size - d)


def _distance_to_nearest(partition: int, held: list[int], size: int) -> int:
    """Circular distance from `partition` to the nearest of the sorted `held`
    (`size` if `held` is empty)."""
    if not held:
        return size
    i = bisect.bisect_left(held, partition)
    # The nearest are the neighbours in sorted order, wrapping at both ends.
    return min(
        _circular_distance(partition, held[i % len(held)], size),
        _circular_distance(partition, held[i - 1], size),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Placement:
    """Where a key lives: its N primaries (the preference list) and the other
    nodes in the order a sloppy quorum tries them."""

    partition: int
    primaries: tuple[str, ...]
    fallbacks: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Ring:
    """An immutable ring: the sorted members and the owner of every partition.

    Build one with `Ring.build(nodes, partitions=Q)`; change it with
    `with_node`/`without_node`, which return a new ring.
    """

    nodes: tuple[str, ...]
    owners: tuple[str, ...]
    # How many distinct nodes own partitions: a walk round the ring can stop
    # once it has met them all.
    _holders: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nodes = tuple(self.nodes)
        owners = tuple(self.owners)
        if not nodes:
            raise ValueError("a ring needs at least one node")
        for name in nodes:
            _check_node(name)
        if list(nodes) != sorted(set(nodes)):
            raise ValueError(f"ring nodes must be sorted and distinct, got {list(nodes)!r}")
        _check_partitions(len(owners))
        members = set(nodes)
        strangers = sorted({o for o in owners if o not in members}, key=repr)
        if strangers:
            raise ValueError(f"partitions owned by nodes not in the ring: {strangers!r}")
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "owners", owners)
        object.__setattr__(self, "_holders", len(set(owners)))

    # -- construction ------------------------------------------------------

    @classmethod
    def build(cls, nodes: Iterable[str], *, partitions: int = DEFAULT_PARTITIONS) -> Ring:
        """The ring of these nodes: partition i goes to the i-th node of the
        sorted list (mod S). Duplicate names count once; the order in which
        the nodes are given does not matter."""
        _check_partitions(partitions)
        members = sorted({_check_node(n) for n in nodes})
        if not members:
            raise ValueError("a ring needs at least one node")
        return cls(
            nodes=tuple(members),
            owners=tuple(members[i % len(members)] for i in range(partitions)),
        )

    # -- placement ---------------------------------------------------------

    @property
    def partitions(self) -> int:
        """Q, the number of partitions."""
        return len(self.owners)

    def partition_of(self, key: bytes | str) -> int:
        """The partition that holds `key`: the top log2(Q) bits of its position."""
        bits = self.partitions.bit_length() - 1
        return key_position(key) >> (_POSITION_BITS - bits)

    def owner(self, partition: int) -> str:
        """The node that owns `partition` (0 <= partition < Q)."""
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} out of range 0..{self.partitions - 1}")
        return self.owners[partition]

    def walk(self, partition: int) -> tuple[str, ...]:
        """Every node once, in the order a key of `partition` uses them: the
        owner, the owners of the following partitions clockwise with repeats
        skipped, then members that own no partition (sorted)."""
        self.owner(partition)  # range check
        seen: dict[str, None] = {}
        q = self.partitions
        for step in range(q):
            seen.setdefault(self.owners[(partition + step) % q])
            if len(seen) == self._holders:
                break
        for name in self.nodes:
            seen.setdefault(name)
        return tuple(seen)

    def placement(self, key: bytes | str, n: int) -> Placement:
        """The key's partition, its N primaries and its fallbacks, in one walk."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n (replicas per key) must be a positive integer, got {n!r}")
        partition = self.partition_of(key)
        order = self.walk(partition)
        return Placement(partition=partition, primaries=order[:n], fallbacks=order[n:])

    def preference_list(self, key: bytes | str, n: int) -> tuple[str, ...]:
        """The N distinct nodes that store `key` (all nodes if fewer than N),
        its partition's owner first."""
        return self.placement(key, n).primaries

    def fallbacks(self, key: bytes | str, n: int) -> tuple[str, ...]:
        """The nodes after the preference list, in the order to try them."""
        return self.placement(key, n).fallbacks

    def partitions_of(self, node: str) -> tuple[int, ...]:
        """The partitions `node` owns, ascending."""
        return tuple(p for p, o in enumerate(self.owners) if o == node)

    def shares(self) -> dict[str, float]:
        """Each member's fraction of the partitions (0.0 for a member that
        owns none), by node name."""
        counts = self._counts()
        return {name: counts[name] / self.partitions for name in self.nodes}

    def _counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.nodes, 0)
        for o in self.owners:
            counts[o] += 1
        return counts

    # -- membership changes ------------------------------------------------

    def with_node(self, name: str) -> Ring:
        """A new ring with `name` added. It takes partitions, one at a time,
        only from a currently most loaded node (ties: the smallest name),
        until no node holds more than one partition above it. The T partitions
        it takes are spaced Q/T apart round the ring, as nearly as the donors'
        holdings allow, so that its partitions do not bunch up and preference
        lists keep meeting distinct nodes. No other partition changes owner."""
        _check_node(name)
        if name in self.nodes:
            raise ValueError(f"node {name!r} is already in the ring")
        q = self.partitions
        counts = self._counts()
        # First how many partitions each donor gives, from the counts alone.
        quota = dict.fromkeys(self.nodes, 0)
        taken = 0
        while True:
            most = max(counts.values())
            if most <= taken + 1:
                break
            donor = next(n for n in self.nodes if counts[n] == most)
            counts[donor] -= 1
            quota[donor] += 1
            taken += 1
        # Then which: for each evenly spaced target, the nearest partition
        # (clockwise first) whose owner still owes one.
        owners = list(self.owners)
        for j in range(taken):
            target = j * q // taken
            for step in range(q):
                p = (target + (step + 1) // 2 * (1 if step % 2 else -1)) % q
                owner = owners[p]
                if owner != name and quota[owner]:
                    quota[owner] -= 1
                    owners[p] = name
                    break
        return Ring(nodes=tuple(sorted((*self.nodes, name))), owners=tuple(owners))

    def without_node(self, name: str) -> Ring:
        """A new ring without `name`. Its partitions, in ascending order, each
        go to a least loaded remaining node; among those, to the one whose own
        partitions are farthest from it (ties: the smallest name). No other
        partition changes owner."""
        if name not in self.nodes:
            raise ValueError(f"node {name!r} is not in the ring")
        remaining = [n for n in self.nodes if n != name]
        if not remaining:
            raise ValueError(f"cannot remove {name!r}: it is the last node of the ring")
        q = self.partitions
        owners = list(self.owners)
        held: dict[str, list[int]] = {n: [] for n in remaining}
        for p, o in enumerate(owners):
            if o != name:
                held[o].append(p)
        for p in self.partitions_of(name):
            least = min(len(held[n]) for n in remaining)
            receiver = min(
                (n for n in remaining if len(held[n]) == least),
                key=lambda n: (-_distance_to_nearest(p, held[n], q), n),
            )
            owners[p] = receiver
            bisect.insort(held[receiver], p)
        return Ring(nodes=tuple(remaining), owners=tuple(owners))

    # -- gossip ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (msgpack/JSON friendly) that `from_dict` turns back
        into an equal ring: owners as indexes into the sorted node list."""
        index = {name: i for i, name in enumerate(self.nodes)}
        return {
            "format": _DICT_FORMAT,
            "partitions": self.partitions,
            "nodes": list(self.nodes),
            "owners": [index[o] for o in self.owners],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ring:
        """The ring `to_dict` described; ValueError if `data` is not one."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a ring dict must be a mapping, got {type(data).__name__}")
        if data.get("format") != _DICT_FORMAT:
            raise ValueError(f"unknown ring dict format {data.get('format')!r}")
        nodes, owners, partitions = data.get("nodes"), data.get("owners"), data.get("partitions")
        if not isinstance(nodes, list) or not isinstance(owners, list):
            raise ValueError("a ring dict needs lists 'nodes' and 'owners'")
        _check_partitions(partitions)
        if len(owners) != partitions:
            raise ValueError(f"a ring dict has {len(owners)} owners for {partitions} partitions")
        for i in owners:
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(nodes):
                raise ValueError(f"a ring dict's owner index {i!r} is not a node index")
        return cls(nodes=tuple(nodes), owners=tuple(nodes[i] for i in owners))
