"""A node's own copy of the keys it replicates: versioned states in the
storage engine, changed only by `update` (a put this node coordinates) or
`merge` (a state another node sent).

Both read the stored state, compute the new one and write it back; a per-key
lock makes that read-modify-write atomic against other requests for the same
key on this node. A write returns only once the engine has made it durable
(its WAL fsynced), which is when a replica may acknowledge it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from .offload import Offload
from .storage import Engine
from .versions import Resolver, Versioned


class Replica:
    def __init__(self, engine: Engine, resolver: Resolver, offload: Offload) -> None:
        self.engine = engine
        self.resolver = resolver
        self._offload = offload
        self._locks: dict[bytes, asyncio.Lock] = {}
        # Called with the key after each write to the engine has landed
        # (anti-entropy keeps its Merkle trees current this way).
        self.on_write: list[Callable[[bytes], None]] = []
        self._waiters: dict[bytes, int] = {}

    @asynccontextmanager
    async def locked(self, key: bytes) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiters[key] = self._waiters.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._waiters[key] -= 1
            if not self._waiters[key]:
                del self._waiters[key]
                del self._locks[key]

    async def read_raw(self, key: bytes) -> bytes | None:
        return await self._offload.run(lambda: self.engine.get(key))

    async def read(self, key: bytes) -> Versioned:
        return self.resolver.decode(await self.read_raw(key))

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
        (this node). Raises ValueError (bad context) or TooManySiblings before
        writing anything. `made` is called with the new state as soon as it
        is made, before it is durable here, so that the coordinator can send
        it to the other replicas while this one fsyncs."""
        async with self.locked(key):
            current = await self.read(key)
            new = self.resolver.update(current, context=context, value=value, node=node)
            encoded = new.encode()
            if made is not None:
                made(new)
            await self._offload.run(lambda: self.engine.put(key, encoded))
            self.written(key)
            return new

    async def merge(self, key: bytes, incoming: Versioned) -> Versioned:
        """Fold a state sent by another node into ours; writes only if it changes."""
        async with self.locked(key):
            raw = await self.read_raw(key)
            current = self.resolver.decode(raw)
            merged = self.resolver.merge(current, incoming)
            encoded = merged.encode()
            if encoded != raw:
                await self._offload.run(lambda: self.engine.put(key, encoded))
                self.written(key)
            return merged

    def written(self, key: bytes) -> None:
        for listener in self.on_write:
            listener(key)
