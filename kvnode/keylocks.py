"""Per-key asyncio locks that exist only while someone holds or waits for them.

A read-modify-write of one key (a replica merging a version, a hint store
folding a hint in) must not interleave with another for the same key, while
different keys go on in parallel. A lock per key, created on first use and
dropped when its last user leaves, keeps memory bounded by the keys in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class KeyLocks:
    def __init__(self) -> None:
        self._locks: dict[bytes, asyncio.Lock] = {}
        self._users: dict[bytes, int] = {}

    @asynccontextmanager
    async def hold(self, key: bytes) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key]
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
