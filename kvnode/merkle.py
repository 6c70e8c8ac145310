"""Merkle trees over one ring partition's keys, for anti-entropy.

Two replicas of a partition want the keys on which they disagree without
sending each other every key. Each builds a hash tree over its own (key,
encoded state) pairs; they compare the roots, and descend only into the
subtrees whose hashes differ (Dynamo section 4.7; Riak's active anti-entropy;
Cassandra's repair).

The scheme. The tree has a fixed shape, the same on every replica whatever
keys it holds, so that node i of level l covers the same keys everywhere:

- fanout F (16 by default) and depth D (3): level l has F**l nodes, level 0
  is the root and level D has F**D leaf buckets (4096).
- A key's leaf is the first 8 bytes of BLAKE2b(key) (personalized, so
  unrelated to the ring's MD5 placement) modulo F**D. Never Python's `hash`:
  it is salted per process, and both replicas must bucket a key alike.
- A leaf's hash is BLAKE2b over its (key, BLAKE2b(state)) pairs in key order,
  each length-prefixed. An inner node's hash is BLAKE2b over its F children's
  hashes in order. An empty subtree (leaf or inner) hashes to `EMPTY`, 16 zero
  bytes, so an empty tree's root is `EMPTY` and absent subtrees are not
  stored (the tree is sparse: memory grows with the keys, not with F**D).
- States are hashed as the bytes stored. Resolvers encode canonically (equal
  states encode alike), so equal replicas have equal trees.

The descent (`Descent`, or `differing_leaves` when the remote side can be
called synchronously). Round 1 asks for the remote root; if it equals ours we
are done, one round trip of 16 bytes. Otherwise round l+1 asks for the hashes
of all F children of every node that differed at level l. The leaves that
differ at level D are exactly the buckets holding a key whose state differs or
that one side lacks (barring a 128-bit hash collision). Cost: at most D+1
round trips; round l+1 carries F * (nodes differing at level l) hashes of 16
bytes each way, so the bytes grow with the number of differences (roughly
F * D * 16 bytes per differing key when differences are few), not with the
number of keys. The caller then exchanges the keys of the differing leaves
(`keys_in`), about keys / F**D per leaf.

`MerkleTree` is mutable so that a node can keep one per partition and apply
each local write (`set`) instead of rebuilding: `set` only marks the leaf,
and the hashes of marked leaves and their ancestors are recomputed once, the
next time a hash is read, so a bulk `build` costs one hash per key plus one
per non-empty node. This module is pure: no I/O, no clock, no randomness.
A tree is not thread-safe; hand it between threads, do not share it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "DEFAULT_DEPTH",
    "DEFAULT_FANOUT",
    "EMPTY",
    "HASH_BYTES",
    "Descent",
    "MerkleTree",
    "differing_leaves",
    "leaf_of",
]

DEFAULT_FANOUT = 16
DEFAULT_DEPTH = 3
HASH_BYTES = 16
EMPTY = bytes(HASH_BYTES)
"""The hash of every empty subtree, at every level."""

_LEAF_PERSON = b"kv-merkle-leaf"
_NODE_PERSON = b"kv-merkle-node"
_STATE_PERSON = b"kv-merkle-state"
_LEN = struct.Struct(">I")
_MAX_LEAVES = 1 << 24


def _h(data: bytes, person: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASH_BYTES, person=person).digest()


def leaf_of(key: bytes, leaves: int) -> int:
    """The leaf bucket (0 <= b < leaves) of `key` in a tree with `leaves` leaves."""
    digest = hashlib.blake2b(key, digest_size=8, person=_LEAF_PERSON).digest()
    return int.from_bytes(digest, "big") % leaves


def _check_shape(fanout: object, depth: object) -> tuple[int, int]:
    if not isinstance(fanout, int) or isinstance(fanout, bool) or fanout < 2:
        raise ValueError(f"a Merkle tree's fanout must be an integer >= 2, got {fanout!r}")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
        raise ValueError(f"a Merkle tree's depth must be an integer >= 0, got {depth!r}")
    if fanout**depth > _MAX_LEAVES:
        raise ValueError(f"fanout**depth = {fanout**depth} leaves is more than {_MAX_LEAVES}")
    return fanout, depth


class MerkleTree:
    """A fixed-shape hash tree over (key, encoded state) pairs; see the module
    docstring. Nodes are named (level, index), 0 <= index < fanout**level."""

    __slots__ = ("_dirty", "_levels", "_slots", "depth", "fanout", "leaves")

    def __init__(self, *, fanout: int = DEFAULT_FANOUT, depth: int = DEFAULT_DEPTH) -> None:
        """An empty tree (root `EMPTY`)."""
        self.fanout, self.depth = _check_shape(fanout, depth)
        self.leaves = fanout**depth
        # Per non-empty leaf: key -> hash of its state.
        self._slots: dict[int, dict[bytes, bytes]] = {}
        # Per level, the hashes of its non-empty nodes (absent: EMPTY).
        self._levels: list[dict[int, bytes]] = [{} for _ in range(depth + 1)]
        # Leaves whose hash (and ancestors' hashes) are out of date.
        self._dirty: set[int] = set()

    @classmethod
    def build(
        cls,
        items: Iterable[tuple[bytes, bytes]],
        *,
        fanout: int = DEFAULT_FANOUT,
        depth: int = DEFAULT_DEPTH,
    ) -> MerkleTree:
        """The tree of these (key, encoded state) pairs; a repeated key keeps
        its last state. The order of `items` does not matter otherwise."""
        tree = cls(fanout=fanout, depth=depth)
        for key, state in items:
            tree.set(key, state)
        return tree

    # -- contents ----------------------------------------------------------

    def leaf_of(self, key: bytes) -> int:
        """The leaf bucket of `key` in this tree."""
        return leaf_of(key, self.leaves)

    def set(self, key: bytes, state: bytes | None) -> None:
        """Record `key`'s state (None: the key is absent). Cheap: hashes are
        brought up to date on the next read."""
        if not isinstance(key, bytes):
            raise TypeError(f"a key must be bytes, got {type(key).__name__}")
        leaf = self.leaf_of(key)
        if state is None:
            slot = self._slots.get(leaf)
            if slot is None or slot.pop(key, None) is None:
                return
            if not slot:
                del self._slots[leaf]
        else:
            if not isinstance(state, bytes):
                raise TypeError(f"a state must be bytes, got {type(state).__name__}")
            digest = _h(state, _STATE_PERSON)
            slot = self._slots.setdefault(leaf, {})
            if slot.get(key) == digest:
                return
            slot[key] = digest
        self._dirty.add(leaf)

    def __len__(self) -> int:
        """The number of keys."""
        return sum(len(slot) for slot in self._slots.values())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and key in self._slots.get(self.leaf_of(key), {})

    def keys_in(self, leaves: Iterable[int]) -> list[bytes]:
        """The keys in these leaf buckets, sorted."""
        keys: list[bytes] = []
        for leaf in leaves:
            self._check_index(self.depth, leaf)
            keys.extend(self._slots.get(leaf, ()))
        return sorted(keys)

    # -- hashes ------------------------------------------------------------

    def root(self) -> bytes:
        """The root hash: equal roots mean equal contents."""
        return self.hashes(0, [0])[0]

    def hashes(self, level: int, indexes: Sequence[int]) -> list[bytes]:
        """The hashes of nodes `indexes` of `level` (0: root, depth: leaves),
        in the order asked. ValueError for a level or index out of range."""
        if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= self.depth:
            raise ValueError(f"level {level!r} out of range 0..{self.depth}")
        for i in indexes:
            self._check_index(level, i)
        self._refresh()
        nodes = self._levels[level]
        return [nodes.get(i, EMPTY) for i in indexes]

    def children(self, level: int, index: int) -> range:
        """The indexes, at level+1, of the children of node (level, index)."""
        if not isinstance(level, int) or not 0 <= level < self.depth:
            raise ValueError(f"level {level!r} has no children (levels 0..{self.depth - 1} do)")
        self._check_index(level, index)
        return range(index * self.fanout, (index + 1) * self.fanout)

    def _check_index(self, level: int, index: object) -> None:
        if (
            not isinstance(index, int)
            or isinstance(index, bool)
            or not 0 <= index < self.fanout**level
        ):
            raise ValueError(f"index {index!r} out of range at level {level} (0..{self.fanout**level - 1})")

    def _refresh(self) -> None:
        """Recompute the marked leaves and their ancestors, bottom up."""
        if not self._dirty:
            return
        changed = self._dirty
        self._dirty = set()
        leaves = self._levels[self.depth]
        for leaf in changed:
            slot = self._slots.get(leaf)
            if not slot:
                leaves.pop(leaf, None)
                continue
            parts = []
            for key in sorted(slot):
                parts += [_LEN.pack(len(key)), key, slot[key]]
            leaves[leaf] = _h(b"".join(parts), _LEAF_PERSON)
        for level in range(self.depth - 1, -1, -1):
            below = self._levels[level + 1]
            nodes = self._levels[level]
            changed = {i // self.fanout for i in changed}
            for i in changed:
                first = i * self.fanout
                kids = [below.get(c, EMPTY) for c in range(first, first + self.fanout)]
                if all(k == EMPTY for k in kids):
                    nodes.pop(i, None)
                else:
                    nodes[i] = _h(b"".join(kids), _NODE_PERSON)


class Descent:
    """One side's walk down the trees, one level per round trip, that a
    network exchange drives:

        d = Descent(local)
        while not d.done:
            level, indexes = d.level, d.pending
            d.step(remote_hashes(level, indexes))   # one round trip
        d.leaves                                    # the differing leaf buckets

    `step` must get the remote tree's hashes of exactly `pending` at `level`,
    in order. A tree that changes during the walk makes the answer approximate
    (a later exchange catches up), never wrong in shape.
    """

    __slots__ = ("leaves", "level", "pending", "rounds", "tree")

    def __init__(self, tree: MerkleTree) -> None:
        self.tree = tree
        self.level = 0
        self.pending: list[int] = [0]
        self.leaves: list[int] = []
        self.rounds = 0

    @property
    def done(self) -> bool:
        return not self.pending

    def step(self, remote: Sequence[bytes]) -> None:
        """Compare the remote hashes of `pending` with ours and move one level
        down (or finish). ValueError if `remote` does not match `pending`."""
        if self.done:
            raise ValueError("the descent is already done")
        if len(remote) != len(self.pending):
            raise ValueError(f"expected {len(self.pending)} hashes at level {self.level}, got {len(remote)}")
        for h in remote:
            if not isinstance(h, bytes) or len(h) != HASH_BYTES:
                raise ValueError(f"a Merkle hash must be {HASH_BYTES} bytes, got {h!r:.40}")
        self.rounds += 1
        local = self.tree.hashes(self.level, self.pending)
        differing = [i for i, a, b in zip(self.pending, local, remote, strict=True) if a != b]
        if self.level == self.tree.depth:
            self.leaves = differing
            self.pending = []
            return
        self.pending = [c for i in differing for c in self.tree.children(self.level, i)]
        self.level += 1


def differing_leaves(
    local: MerkleTree, fetch_remote_hashes: Callable[[int, list[int]], Sequence[bytes]]
) -> list[int]:
    """The leaf buckets where `local` and a remote tree of the same shape
    differ, ascending; `fetch_remote_hashes(level, indexes)` is called once
    per level descended (at most depth+1 times, once if the roots agree)."""
    d = Descent(local)
    while not d.done:
        d.step(fetch_remote_hashes(d.level, list(d.pending)))
    return d.leaves
