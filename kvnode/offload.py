"""The one seam through which the node hands blocking work to a thread.

The node runs in one asyncio event loop; storage calls (a put waits for an
fsync) would stall it, so they run on a worker thread through `Offload.run`.
A deterministic simulation swaps in `InlineOffload`, which runs the call at
once on the loop's thread, so that a run depends only on its inputs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

T = TypeVar("T")


class Offload(Protocol):
    async def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` off the event loop and return its result (or raise its error)."""
        ...

    def close(self) -> None: ...


class ThreadOffload:
    """A small pool: storage calls are short, and the engine groups
    concurrent writers' fsyncs, so a few threads keep the disk busy."""

    def __init__(self, workers: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kvnode-io")

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class InlineOffload:
    async def run(self, fn: Callable[[], T]) -> T:
        return fn()

    def close(self) -> None:
        return None
