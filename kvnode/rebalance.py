"""Moving keys to their new owners after the ring changes (a join or a leave).

When a node joins, it takes partitions from the most loaded nodes; each key of
those partitions gains the new node in its preference list and loses the node
that was last in it. When a node leaves, its partitions go to the least loaded
nodes. Either way, some node holds keys it no longer replicates.

`Rebalancer.run_pass` finds them (a scan of the local engine) and, for each,
sends its state to every replica of the new preference list; only once all of
them have acknowledged it durably does it drop its own copy, and only if the
copy did not change meanwhile. So a key always has a complete set of copies
somewhere: old owners let go only after the new ones hold it, and reads and
writes go on throughout (a quorum of the new replicas merges what it has; a
write that reaches an old owner late is moved again on the next pass). A pass
that cannot reach every new replica keeps the key and tries again later.

A damaged block of the local engine does not stop a pass: the scan skips it
(hiding the keys of its range, whose state here is lost), the pass moves
everything else, and the block is logged once (`rebalance_corrupt_range`),
not at every pass. Its keys are not kept for a retry: this node has nothing
left of them to send, and their new owners get them from the other replicas
through anti-entropy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .connection import ConnectionLost
from .log import EventLog
from .offload import Offload
from .replica import Replica
from .ring import Ring
from .storage import CorruptionError
from .transport import PeerUnreachable, Transport


class Rebalancer:
    def __init__(
        self,
        *,
        node: str,
        ring: Callable[[], Ring],
        n: int,
        replica: Replica,
        transport: Transport,
        offload: Offload,
        log: EventLog,
        timeout: float,
    ) -> None:
        self.node = node
        self._ring = ring
        self._n = n
        self._replica = replica
        self._transport = transport
        self._offload = offload
        self._log = log
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self.counters: dict[str, int] = {"passes": 0, "moved": 0, "kept": 0, "misplaced": 0, "corrupt_ranges": 0}
        self._reported: set[tuple[int | None, int | None]] = set()  # damaged blocks logged

    async def _send(self, peer: str, key: bytes, state: bytes) -> bool:
        try:
            reply = await self._transport.request(
                peer, {"type": "replica_put", "key": key, "state": state}, self._timeout
            )
        except (PeerUnreachable, TimeoutError, ConnectionLost, OSError):
            return False
        return reply.get("type") == "replica_put_ok"

    def _misplaced(self, damaged: list[CorruptionError]) -> list[tuple[bytes, bytes]]:
        ring = self._ring()
        engine = self._replica.engine
        return [
            (key, state) for key, state in engine.scan(damaged=damaged)
            if self.node not in ring.preference_list(key, self._n)
        ]

    async def run_pass(self) -> dict[str, int]:
        """Move every local key this node no longer replicates; returns how
        many were moved and how many had to stay for now."""
        async with self._lock:
            ring = self._ring()
            damaged: list[CorruptionError] = []
            misplaced = await self._offload.run(lambda: self._misplaced(damaged))
            self.counters["corrupt_ranges"] = len(damaged)
            for e in damaged:
                if (e.table, e.block) not in self._reported:
                    self._reported.add((e.table, e.block))
                    self._log.event("rebalance_corrupt_range", table=e.table, block=e.block, error=str(e))
            moved = kept = 0
            for key, state in misplaced:
                targets = ring.preference_list(key, self._n)
                acks = await asyncio.gather(*(self._send(p, key, state) for p in targets))
                if all(acks) and await self._drop_if_unchanged(key, state):
                    moved += 1
                else:
                    kept += 1
            self.counters["passes"] += 1
            self.counters["moved"] += moved
            self.counters["kept"] += kept
            self.counters["misplaced"] = kept
            if moved or kept:
                self._log.event("rebalanced", moved=moved, kept=kept)
            return {"moved": moved, "kept": kept}

    async def _drop_if_unchanged(self, key: bytes, state: bytes) -> bool:
        async with self._replica.locked(key):
            try:
                current = await self._replica.read_raw(key)
            except CorruptionError:
                return False  # damaged since the scan: not ours to judge now
            if current != state:
                return False  # a write landed meanwhile: move it on the next pass
            await self._offload.run(lambda: self._replica.engine.delete(key))
            self._replica.written(key)
            return True

    def stats(self) -> dict[str, Any]:
        return dict(self.counters)
