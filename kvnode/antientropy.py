"""Merkle-tree anti-entropy: replicas of a partition find and repair the keys
on which they disagree, with no client traffic and no read repair.

Why: a write that reached only some replicas (a partition, a crash, a dropped
hint) stays divergent until someone reads the key. Dynamo (section 4.7) and
Riak's active anti-entropy compare hash trees of each key range in the
background instead; this module does that between two replicas at a time.

**Trees.** The node keeps one `MerkleTree` (`kvnode.merkle`) per ring
partition over every key in its storage engine (raw key -> stored encoded
state; tombstone states included, so deletes propagate). The first time a
tree is needed, one `engine.scan()` over everything builds the trees of all
partitions at once (the engine orders keys by key, not by partition, so a
per-partition scan would read everything anyway). After that the trees are
kept current incrementally: the node calls `note_write(key)` after every local
write lands, and the next use of a tree re-reads just those keys
(`engine.get`) and updates their leaves. Cost: the first build reads the
whole store once; afterwards a round reads only the keys written since the
last one, and memory is one 16-byte state hash per key. Too many noted keys
(more than `rebuild_after`) or a ring with another partition count trigger a
full rebuild instead.

**The exchange** (`exchange(partition, peer)`, one side drives it):

1. `ae_hashes`, one level per round trip (`merkle.Descent`): the root first
   (one round trip when the replicas agree), then the children of every
   differing node, down to the differing leaf buckets. At most depth+1
   round trips.
2. `ae_keys`: the peer's (key, state) pairs of those leaves, in batches of
   `leaves_per_request` leaves; the peer answers a prefix of each batch that
   fits its `reply_bytes` budget and says how many leaves it covered.
3. For each key of those leaves on either side whose stored states differ:
   merge the peer's state into ours (`replica.merge`), and if the result is
   not what the peer has, send it back with `ae_push` (in batches of at most
   `push_bytes`), which the peer merges. Merges are commutative and
   idempotent, so afterwards both replicas hold merge(ours, theirs) for every
   key of the partition: one exchange converges the pair.

Repaired keys are counted once per key whose states differed. Concurrent
writes during an exchange are safe (per-key locks in `Replica`, merges never
lose a version); they can only leave a difference for the next round.

**Rounds** (`round()`): for every partition of which this node is one of the N
replicas (the first N nodes of `ring.walk(p)`), exchange with each other
reachable replica in turn. If a later exchange brought us something new, the
replicas exchanged with earlier are visited again (a root comparison, one
round trip, when nothing changed), so one round on one node converges every
reachable replica of its partitions. `run(interval)` repeats rounds until
cancelled; an error with one peer (timeout, lost connection, error reply, a
malformed answer) is counted and logged, and never stops the round or loop.

**Damaged blocks.** A block of the engine that fails its checksum is a
loss of this replica's copy of the keys in its range, not a failed round:
the tree build skips it (`engine.scan(damaged=...)`, which hides every key
of the range whose newest version the damaged table or an older one holds),
logs `ae_corrupt_range` once per block and counts it (`corrupt_ranges` in a
round's result). Those keys are then missing from this node's trees, so the
exchanges fetch them from the other replicas like any key this node lacks,
and the merge (`Replica.merge`, which takes a damaged state for absent)
rewrites them here, newer than the damage. A damaged key read on its own
(`engine.get`) counts as absent, for the same reason.

Time is read only through the node's `Clock`; jitter only from the
`random.Random` passed in; storage reads go through the `Offload` seam.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeGuard

from . import protocol
from .clock import Clock
from .log import EventLog
from .merkle import DEFAULT_DEPTH, DEFAULT_FANOUT, Descent, MerkleTree, leaf_of
from .offload import Offload
from .protocol import RemoteError
from .replica import Replica
from .ring import Ring
from .storage import CorruptionError, Engine
from .transport import Transport

__all__ = ["REQUESTS", "SCHEMA", "AntiEntropy"]

# The exchange's messages are part of the wire protocol (protocol.SCHEMA,
# where each is documented); these are they.
REQUESTS = frozenset({"ae_hashes", "ae_keys", "ae_push"})
SCHEMA = {k: v for k, v in protocol.SCHEMA.items() if k in REQUESTS or k.removesuffix("_ok") in REQUESTS}


class _PeerError(Exception):
    """A peer's reply that breaks the anti-entropy protocol."""


class _BadRequest(Exception):
    """A request this node refuses (answered with a bad_request error)."""


def _is_int(x: object) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)


def _items(raw: object, what: str) -> list[tuple[bytes, bytes]]:
    if not isinstance(raw, list):
        raise ValueError(f"{what}: items must be a list")
    out = []
    for item in raw:
        if (
            not isinstance(item, (list, tuple))
            or len(item) != 2
            or not isinstance(item[0], bytes)
            or not isinstance(item[1], bytes)
        ):
            raise ValueError(f"{what}: an item must be a [key, state] pair of bytes, got {item!r:.60}")
        out.append((item[0], item[1]))
    return out


def _batches(items: Iterable[tuple[bytes, bytes]], budget: int) -> Iterable[list[list[bytes]]]:
    """Items in lists of at most `budget` bytes (at least one item each)."""
    batch: list[list[bytes]] = []
    size = 0
    for key, state in items:
        n = len(key) + len(state) + 16
        if batch and size + n > budget:
            yield batch
            batch, size = [], 0
        batch.append([key, state])
        size += n
    if batch:
        yield batch


class AntiEntropy:
    """One node's side of anti-entropy: its trees, the server half
    (`handle`) and the client half (`exchange`, `round`, `run`)."""

    def __init__(
        self,
        node: str,
        ring: Callable[[], Ring],
        n: int,
        replica: Replica,
        transport: Transport,
        clock: Clock,
        *,
        offload: Offload,
        log: EventLog | None = None,
        rng: random.Random | None = None,
        timeout: float = 5.0,
        fanout: int = DEFAULT_FANOUT,
        depth: int = DEFAULT_DEPTH,
        leaves_per_request: int = 256,
        reply_bytes: int = 4 << 20,
        push_bytes: int = 4 << 20,
        rebuild_after: int = 100_000,
        include_key: Callable[[bytes], bool] | None = None,
    ) -> None:
        """`ring` returns the current ring (called once per round and per
        request); `offload` is the node's seam for blocking storage calls;
        `rng` only jitters `run`'s interval (None: no jitter); `include_key`
        keeps keys out of the trees (e.g. internal keys), None includes all."""
        if not _is_int(n) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        MerkleTree(fanout=fanout, depth=depth)  # validates the shape
        self.node = node
        self._ring = ring
        self.n = n
        self.replica = replica
        self._engine: Engine = replica.engine
        self._transport = transport
        self._clock = clock
        self._offload = offload
        self._log = log
        self._rng = rng
        self.timeout = timeout
        self.fanout = fanout
        self.depth = depth
        self.leaves_per_request = max(1, leaves_per_request)
        self.reply_bytes = reply_bytes
        self.push_bytes = push_bytes
        self.rebuild_after = rebuild_after
        self._include = include_key
        self._trees: dict[int, MerkleTree] | None = None
        self._trees_q = 0
        self._dirty: set[bytes] = set()
        self._building = False
        self._lock = asyncio.Lock()
        self.counters: dict[str, int] = {
            "rounds": 0,
            "exchanges": 0,
            "keys_repaired": 0,
            "errors": 0,
            "unreachable": 0,
            "tree_builds": 0,
            "corrupt_ranges": 0,
        }
        # Damaged blocks (table, block) already reported.
        self._reported: set[tuple[int | None, int | None]] = set()

    # -- trees -------------------------------------------------------------

    def note_write(self, key: bytes) -> None:
        """Called by the node after every local write to `key` has landed in
        the engine (put, merge, delete): the key's leaf is refreshed on the
        tree's next use. Cheap, synchronous; must not be called before the
        write is visible to `engine.get`, or the tree can keep the old state."""
        if self._trees is not None or self._building:
            self._dirty.add(key)

    def _new_tree(self) -> MerkleTree:
        return MerkleTree(fanout=self.fanout, depth=self.depth)

    def _scan_all(self, ring: Ring, damaged: list[CorruptionError]) -> dict[int, MerkleTree]:
        """Runs on the offload thread: every partition's tree, in one scan,
        without the key ranges of damaged blocks (appended to `damaged`)."""
        trees: dict[int, MerkleTree] = {}
        for key, state in self._engine.scan(damaged=damaged):
            if self._include is None or self._include(key):
                p = ring.partition_of(key)
                tree = trees.get(p)
                if tree is None:
                    tree = trees[p] = self._new_tree()
                tree.set(key, state)
        for tree in trees.values():
            tree.root()  # hash now, on the worker thread
        return trees

    async def _current(self) -> dict[int, MerkleTree]:
        """The trees, built on first use and brought up to date with the
        noted writes."""
        async with self._lock:
            ring = self._ring()
            if (
                self._trees is None
                or self._trees_q != ring.partitions
                or len(self._dirty) > self.rebuild_after
            ):
                self._trees = None
                self._building = True
                self._dirty = set()  # the scan sees these; later writes are noted again
                damaged: list[CorruptionError] = []
                try:
                    trees = await self._offload.run(lambda: self._scan_all(ring, damaged))
                finally:
                    self._building = False
                self._trees, self._trees_q = trees, ring.partitions
                self.counters["tree_builds"] += 1
                self.counters["corrupt_ranges"] = len(damaged)
                for e in damaged:
                    if (e.table, e.block) not in self._reported:
                        self._reported.add((e.table, e.block))
                        self._event("ae_corrupt_range", table=e.table, block=e.block,
                                    after=None if e.after is None else e.after.hex(),
                                    last=None if e.last is None else e.last.hex(), error=str(e))
            trees = self._trees
            if self._dirty:
                keys = sorted(k for k in self._dirty if self._include is None or self._include(k))
                self._dirty = set()
                states = await self._read(keys)
                for key in keys:
                    p = ring.partition_of(key)
                    tree = trees.get(p)
                    if tree is None:
                        tree = trees[p] = self._new_tree()
                    tree.set(key, states[key])
            return trees

    async def _tree(self, partition: int) -> MerkleTree:
        trees = await self._current()
        return trees.get(partition) or self._new_tree()

    async def _read(self, keys: list[bytes]) -> dict[bytes, bytes | None]:
        """The stored states of `keys`; a damaged one reads as absent, so
        that the exchange fetches it from a replica that has it."""
        engine = self._engine

        def get(key: bytes) -> bytes | None:
            try:
                return engine.get(key)
            except CorruptionError:
                return None

        return await self._offload.run(lambda: {k: get(k) for k in keys})

    async def summary(self) -> dict[int, dict[str, Any]]:
        """For status: per partition this node replicates, its Merkle root
        (hex) and number of keys."""
        ring = self._ring()
        trees = await self._current()
        out: dict[int, dict[str, Any]] = {}
        for p in self._replicated(ring):
            tree = trees.get(p) or self._new_tree()
            out[p] = {"root": tree.root().hex(), "keys": len(tree)}
        return out

    def _replicated(self, ring: Ring) -> list[int]:
        return [p for p in range(ring.partitions) if self.node in ring.walk(p)[: self.n]]

    # -- server half ---------------------------------------------------------

    async def handle(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """Called by the server for an ae_* request (already checked against
        SCHEMA); returns the reply, or a bad_request error reply for bad
        arguments. Reads and merges local state; never sends anything."""
        rid = message.get("id", 0)
        try:
            return await self._handle(message)
        except _BadRequest as e:
            return protocol.error(rid, "bad_request", str(e))

    async def _handle(self, m: Mapping[str, Any]) -> dict[str, Any]:
        kind = m.get("type")
        ring = self._ring()
        partition = m.get("partition")
        if not _is_int(partition) or not 0 <= partition < ring.partitions:
            raise _BadRequest(f"{kind}: partition {partition!r} out of range 0..{ring.partitions - 1}")
        if kind in ("ae_hashes", "ae_keys") and (m.get("fanout"), m.get("depth")) != (self.fanout, self.depth):
            raise _BadRequest(
                f"{kind}: Merkle tree shape {m.get('fanout')!r}x{m.get('depth')!r} differs from "
                f"this node's {self.fanout}x{self.depth}"
            )
        if kind == "ae_hashes":
            level, indexes = m.get("level"), m.get("indexes")
            if not _is_int(level) or not isinstance(indexes, list):
                raise _BadRequest("ae_hashes: level must be an integer and indexes a list")
            tree = await self._tree(partition)
            try:
                return {"type": "ae_hashes_ok", "hashes": tree.hashes(level, indexes)}
            except ValueError as e:
                raise _BadRequest(f"ae_hashes: {e}") from None
        if kind == "ae_keys":
            return await self._answer_keys(partition, m.get("leaves"))
        if kind == "ae_push":
            try:
                items = _items(m.get("items"), "ae_push")
                decoded = [(k, self.replica.resolver.decode(s)) for k, s in items]
            except ValueError as e:
                raise _BadRequest(str(e)) from None
            for key, _ in items:
                if ring.partition_of(key) != partition:
                    raise _BadRequest(f"ae_push: key {key!r:.40} is not in partition {partition}")
            merged = 0
            for (key, raw), (_, state) in zip(items, decoded, strict=True):
                try:
                    before = await self.replica.read_raw(key)
                except CorruptionError:
                    before = None  # damaged here: the merge rewrites it
                if before == raw:
                    continue
                after = await self.replica.merge(key, state)
                self.note_write(key)
                merged += after.encode() != before
            return {"type": "ae_push_ok", "merged": merged}
        raise _BadRequest(f"not an anti-entropy request: {kind!r}")

    async def _answer_keys(self, partition: int, leaves: object) -> dict[str, Any]:
        if not isinstance(leaves, list) or not leaves:
            raise _BadRequest("ae_keys: leaves must be a non-empty list")
        tree = await self._tree(partition)
        try:
            per_leaf = [tree.keys_in([leaf]) for leaf in leaves]
        except ValueError as e:
            raise _BadRequest(f"ae_keys: {e}") from None
        states = await self._read([k for keys in per_leaf for k in keys])
        items: list[list[bytes]] = []
        size = covered = 0
        for keys in per_leaf:
            found = [[k, s] for k in keys if (s := states[k]) is not None]
            grow = sum(len(k) + len(s) + 16 for k, s in found)
            if covered and size + grow > self.reply_bytes:
                break  # the rest in the next request
            items += found
            size += grow
            covered += 1
        return {"type": "ae_keys_ok", "items": items, "leaves": covered}

    # -- client half ---------------------------------------------------------

    async def _request(self, peer: str, message: dict[str, Any], expect: str) -> dict[str, Any]:
        reply = await self._transport.request(peer, message, self.timeout)
        protocol.raise_if_error(reply)
        if reply.get("type") != expect:
            raise _PeerError(f"expected {expect}, got {reply.get('type')!r}")
        return reply

    async def exchange(self, partition: int, peer: str) -> int:
        """Compare this node's tree of `partition` with `peer`'s and make both
        hold the merge of the two for every key of it; returns the number of
        keys whose states differed. Raises PeerUnreachable, TimeoutError,
        ConnectionError, RemoteError (an error reply) or ValueError (a reply
        that breaks the protocol)."""
        try:
            repaired, _ = await self._exchange(partition, peer)
        except _PeerError as e:
            raise ValueError(f"anti-entropy with {peer}: {e}") from None
        return repaired

    async def _exchange(self, partition: int, peer: str) -> tuple[int, int]:
        """(keys repaired, keys changed here)."""
        shape = {"partition": partition, "fanout": self.fanout, "depth": self.depth}
        descent = Descent(await self._tree(partition))
        while not descent.done:
            reply = await self._request(
                peer,
                {"type": "ae_hashes", **shape, "level": descent.level, "indexes": list(descent.pending)},
                "ae_hashes_ok",
            )
            try:
                descent.step(reply.get("hashes", []))
            except ValueError as e:
                raise _PeerError(f"ae_hashes: {e}") from None
        self.counters["exchanges"] += 1
        leaves = descent.leaves
        repaired = pulled = 0
        while leaves:
            batch = leaves[: self.leaves_per_request]
            reply = await self._request(peer, {"type": "ae_keys", **shape, "leaves": batch}, "ae_keys_ok")
            covered = reply.get("leaves")
            if not _is_int(covered) or not 1 <= covered <= len(batch):
                raise _PeerError(f"ae_keys_ok covers {covered!r} of {len(batch)} leaves")
            done, leaves = batch[:covered], leaves[covered:]
            r, p = await self._reconcile(partition, peer, done, reply.get("items"))
            repaired += r
            pulled += p
        self.counters["keys_repaired"] += repaired
        return repaired, pulled

    async def _reconcile(
        self, partition: int, peer: str, leaves: list[int], raw_items: object
    ) -> tuple[int, int]:
        """Merge the peer's states of `leaves` into ours and push back what it
        lacks; (keys that differed, keys changed here)."""
        try:
            theirs = dict(_items(raw_items, "ae_keys_ok"))
        except ValueError as e:
            raise _PeerError(str(e)) from None
        ring = self._ring()
        wanted = set(leaves)
        total_leaves = self.fanout**self.depth
        for key in theirs:
            if leaf_of(key, total_leaves) not in wanted or ring.partition_of(key) != partition:
                raise _PeerError(f"ae_keys_ok: key {key!r:.40} is not in the leaves asked for")
        tree = await self._tree(partition)
        keys = sorted(set(tree.keys_in(leaves)) | theirs.keys())
        mine = await self._read(keys)
        repaired = pulled = 0
        push: list[tuple[bytes, bytes]] = []
        for key in keys:
            ours, their = mine[key], theirs.get(key)
            if ours == their:
                continue
            repaired += 1
            merged_raw = ours
            if their is not None:
                try:
                    incoming = self.replica.resolver.decode(their)
                except ValueError as e:
                    raise _PeerError(f"ae_keys_ok: state of {key!r:.40}: {e}") from None
                merged_raw = (await self.replica.merge(key, incoming)).encode()
                if merged_raw != ours:
                    pulled += 1
                    self.note_write(key)
            if merged_raw is not None and merged_raw != their:
                push.append((key, merged_raw))
        for batch in _batches(push, self.push_bytes):
            await self._request(peer, {"type": "ae_push", "partition": partition, "items": batch}, "ae_push_ok")
        return repaired, pulled

    async def round(self) -> dict[str, int]:
        """Exchange every partition this node replicates with its other
        reachable replicas (see the module docstring). Returns counts:
        partitions (compared with at least one peer), exchanges, keys_repaired,
        unreachable (peer skipped as down), errors (exchanges that failed),
        corrupt_ranges (damaged blocks of the local engine that the last tree
        build skipped; their keys are fetched from the peers).
        Never raises for a peer's failure."""
        ring = self._ring()
        result = dict.fromkeys(("partitions", "exchanges", "keys_repaired", "unreachable", "errors"), 0)
        await self._current()  # (re)build the trees first, so that damage it finds is reported now
        reachable: dict[str, bool] = {}
        for p in self._replicated(ring):
            peers = [x for x in ring.walk(p)[: self.n] if x != self.node]
            done: list[str] = []
            last_pull = -1
            for peer in peers:
                if peer not in reachable:
                    reachable[peer] = await self._transport.reachable(peer)
                if not reachable[peer]:
                    result["unreachable"] += 1
                    continue
                outcome = await self._guarded(p, peer)
                if outcome is None:
                    result["errors"] += 1
                    continue
                repaired, pulled = outcome
                result["exchanges"] += 1
                result["keys_repaired"] += repaired
                if pulled:
                    last_pull = len(done)
                done.append(peer)
            # Peers visited before our last change lack what it brought.
            for peer in done[: max(last_pull, 0)]:
                outcome = await self._guarded(p, peer)
                if outcome is None:
                    result["errors"] += 1
                    continue
                result["exchanges"] += 1
                result["keys_repaired"] += outcome[0]
            if done:
                result["partitions"] += 1
        result["corrupt_ranges"] = self.counters["corrupt_ranges"]
        self.counters["rounds"] += 1
        self.counters["unreachable"] += result["unreachable"]
        self.counters["errors"] += result["errors"]
        return result

    async def _guarded(self, partition: int, peer: str) -> tuple[int, int] | None:
        """An exchange whose failure is logged and returned as None."""
        try:
            return await self._exchange(partition, peer)
        except (OSError, TimeoutError, RemoteError, _PeerError) as e:
            self._event("ae_exchange_failed", partition=partition, peer=peer, error=f"{type(e).__name__}: {e}")
        except Exception as e:  # a bug: say so loudly, and go on with the other peers
            self._event("ae_internal_error", partition=partition, peer=peer, error=repr(e))
        return None

    async def run(self, interval: float = 10.0) -> None:
        """Call `round()` every `interval` seconds (jittered by +-25% when an
        rng was given), the first after one interval, until cancelled. Never
        raises otherwise."""
        if interval <= 0:
            raise ValueError(f"the anti-entropy interval must be positive, got {interval!r}")
        while True:
            delay = interval if self._rng is None else interval * (0.75 + 0.5 * self._rng.random())
            await asyncio.sleep(delay)
            started = self._clock.monotonic()
            try:
                result = await self.round()
            except Exception as e:  # never let the loop die
                self._event("ae_internal_error", error=repr(e))
                continue
            if result["keys_repaired"] or result["errors"]:
                self._event("ae_round", seconds=round(self._clock.monotonic() - started, 3), **result)

    def _event(self, name: str, **fields: Any) -> None:
        if self._log is not None:
            self._log.event(name, **fields)
