"""A node's own copy of the keys it replicates: versioned states in the
storage engine, changed only by `update` (a put this node coordinates) or
`merge` (a state another node sent).

Both read the stored state, compute the new one and write it back; a per-key
lock makes that read-modify-write atomic against other requests for the same
key on this node. A write returns only once the engine has made it durable
(its WAL fsynced), which is when a replica may acknowledge it.

Writes are grouped: the writes that arrive while one group is being made
durable go together, as one engine batch in one trip to the I/O thread (one
fsync), so a busy node pays for the hop and the fsync once per group, not
once per write. A key is in at most one pending write (its lock is held
until the write is durable), so grouping never reorders a key's writes.

A damaged stored state (the engine's `CorruptionError`: a block failed its
checksum) makes this copy of the key a failed replica, never a wrong answer:
`read` and `read_raw` raise CorruptionError, and `update` does too, so that
the coordinator has another replica make the version. `merge` takes the
damaged state for absent and stores what it was sent: that can only lose,
here, versions the other replicas still hold (anti-entropy and read repair
bring them back). The key is then recorded as damaged until the node
restarts: its stored state may lack dots this node issued before the
damage, and a version made here on top of it could reuse one, so `update`
keeps refusing it; a restart raises the node's generation, which puts new
dots above every old one.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from .keylocks import KeyLocks
from .offload import Offload
from .storage import CorruptionError, Engine
from .versions import Resolver, Versioned

_CODEC_CACHE = 4096  # states remembered, at most
_CODEC_BYTES = 8 << 20  # ... and their bytes, at most: a node's memory is bounded in bytes
_CODEC_LARGEST = 256 << 10  # a larger state is not remembered: decoding it costs little next to moving it


class Replica:
    def __init__(self, engine: Engine, resolver: Resolver, offload: Offload) -> None:
        self.engine = engine
        self.resolver = resolver
        self._offload = offload
        self._locks = KeyLocks()
        # Called with the key after each write to the engine has landed
        # (anti-entropy keeps its Merkle trees current this way).
        self.on_write: list[Callable[[bytes], None]] = []
        self._queue: list[tuple[bytes, bytes, asyncio.Future[None]]] = []
        # States are immutable, and the same bytes come by again and again (a
        # replica reads back what it stored; a coordinator sees each replica's
        # answer): remember decodings, and the bytes of states we have.
        self._decoded: OrderedDict[bytes, Versioned] = OrderedDict()
        self._encoded: OrderedDict[int, tuple[Versioned, bytes]] = OrderedDict()
        self._decoded_bytes = self._encoded_bytes = 0
        self._writing = False
        self._writer: asyncio.Future[None] | None = None
        # Keys whose damaged state a merge replaced (see the module docstring).
        self.damaged: set[bytes] = set()
        self.counters: dict[str, int] = {"corrupt_reads": 0, "corrupt_rewrites": 0}

    def locked(self, key: bytes) -> AbstractAsyncContextManager[None]:
        """Hold `key`'s lock: no other update or merge of it runs meanwhile."""
        return self._locks.hold(key)

    async def read_raw(self, key: bytes) -> bytes | None:
        """The stored state's bytes (None: absent); CorruptionError if they
        are damaged."""
        # On the loop's thread: a read never waits for a disk write (the
        # engine serves it from memory or the page cache), and a thread hop
        # costs more than the read itself.
        try:
            return self.engine.get(key)
        except CorruptionError:
            self.counters["corrupt_reads"] += 1
            raise

    async def read(self, key: bytes) -> Versioned:
        return self.decode(await self.read_raw(key))

    def decode(self, raw: bytes | None) -> Versioned:
        """`resolver.decode`, remembered (ValueError for bytes that are not a state)."""
        if raw is None:
            return self.resolver.decode(None)
        state = self._decoded.get(raw)
        if state is None:
            state = self.resolver.decode(raw)
            self._remember(raw, state)
        return state

    def encode(self, state: Versioned) -> bytes:
        """`state.encode()`, remembered."""
        known = self._encoded.get(id(state))
        if known is not None and known[0] is state:
            return known[1]
        raw = state.encode()
        self._remember(raw, state)
        return raw

    def _remember(self, raw: bytes, state: Versioned) -> None:
        if len(raw) > _CODEC_LARGEST:
            return
        if raw not in self._decoded:
            self._decoded_bytes += len(raw)
        self._decoded[raw] = state
        old = self._encoded.get(id(state))
        if old is not None:
            self._encoded_bytes -= len(old[1])
        self._encoded[id(state)] = (state, raw)
        self._encoded_bytes += len(raw)
        while len(self._decoded) > _CODEC_CACHE or self._decoded_bytes > _CODEC_BYTES:
            self._decoded_bytes -= len(self._decoded.popitem(last=False)[0])
        while len(self._encoded) > _CODEC_CACHE or self._encoded_bytes > _CODEC_BYTES:
            self._encoded_bytes -= len(self._encoded.popitem(last=False)[1][1])

    async def update(
        self,
        key: bytes,
        *,
        context: bytes | None,
        value: bytes | None,
        node: str,
        made: Callable[[Versioned], None] | None = None,
    ) -> Versioned:
        """Apply a client's put (value None: delete) coordinated by `node`
        (this node). Raises ValueError (bad context), TooManySiblings or
        CorruptionError (this copy is damaged) before writing anything. `made` is called with the new state as soon as it
        is made, before it is durable here, so that the coordinator can send
        it to the other replicas while this one fsyncs."""
        async with self.locked(key):
            if key in self.damaged:
                raise CorruptionError(
                    f"key {key!r:.60} was damaged on this replica and rewritten from another: "
                    "it may lack versions made here, so another replica must make the next one"
                )
            current = await self.read(key)
            new = self.resolver.update(current, context=context, value=value, node=node)
            encoded = self.encode(new)
            if made is not None:
                made(new)
            await self._persist(key, encoded)
            self.written(key)
            return new

    async def merge(self, key: bytes, incoming: Versioned) -> Versioned:
        """Fold a state sent by another node into ours; writes only if it
        changes. A damaged stored state counts as absent (and the key as
        damaged): the merge rewrites the key with what was sent."""
        async with self.locked(key):
            try:
                raw = await self.read_raw(key)
            except CorruptionError:
                self.damaged.add(key)
                self.counters["corrupt_rewrites"] += 1
                raw = None
            current = self.decode(raw)
            merged = self.resolver.merge(current, incoming)
            encoded = self.encode(merged)
            if encoded != raw:
                await self._persist(key, encoded)
                self.written(key)
            return merged

    async def _persist(self, key: bytes, encoded: bytes) -> None:
        """Store durably, grouped with the writes that arrive meanwhile."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((key, encoded, done))
        if not self._writing:
            self._writing = True
            self._writer = asyncio.ensure_future(self._write_groups())
        await done

    async def _write_groups(self) -> None:
        try:
            while self._queue:
                group, self._queue = self._queue, []
                ops = [("put", key, encoded) for key, encoded, _ in group]
                try:
                    await self._offload.run(functools.partial(self.engine.write_batch, ops))
                except Exception as e:
                    for _, _, done in group:
                        if not done.done():
                            done.set_exception(e)
                    continue
                for _, _, done in group:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._writing = False

    def written(self, key: bytes) -> None:
        for listener in self.on_write:
            listener(key)
