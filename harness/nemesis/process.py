"""Process faults: `Kill` (SIGKILL, later a restart on the same data) and
`Pause` (SIGSTOP, later SIGCONT), each on a random choice of nodes.

Both remember a node before they act on it, so a start that raised or was
cancelled halfway is still undone by `stop`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from harness.backends.base import BackendCapabilities

from .base import ClusterHandle, Fault, check_targets, choose_nodes

if TYPE_CHECKING:
    from .schedule import FaultOptions


class Kill(Fault):
    """Start: SIGKILL `targets` nodes (one by default; see `TARGETS`) through
    `backend.kill`. Stop: `handle.restart(node)` for each node killed, which
    brings it back on its data and waits until it serves."""

    name = "kill"
    start_f = "kill"
    stop_f = "restart"

    def __init__(self, handle: ClusterHandle, targets: str = "one") -> None:
        self._handle = handle
        self._targets = check_targets(targets)
        self._killed: list[str] = []

    @classmethod
    def from_options(cls, handle: ClusterHandle, options: FaultOptions) -> Kill:
        return cls(handle, options.kill_targets)  # killed (or being killed), not yet restarted

    def unavailable(self, caps: BackendCapabilities) -> str | None:
        return None

    async def start(self, rng: random.Random) -> Any:
        return await self.start_among(rng, self._handle.nodes)

    async def start_among(self, rng: random.Random, among: Sequence[str]) -> Any:
        """`start`, with the victims picked among `among` (a pair's minority side)."""
        nodes = await choose_nodes(self._handle, among, rng, self._targets)
        for node in nodes:
            if node not in self._killed:
                self._killed.append(node)
            await self._handle.backend.kill(node)
        return {"nodes": nodes}

    async def stop(self) -> Any:
        restarted = []
        for node in list(self._killed):
            # A kill that was cancelled before it took effect left the
            # process running: starting a second one would be wrong.
            if not self._handle.backend.running(node):
                await self._handle.restart(node)
                restarted.append(node)
            self._killed.remove(node)
        return {"nodes": restarted}

    def active(self) -> str | None:
        return f"killed {' '.join(self._killed)}" if self._killed else None


class Pause(Fault):
    """Start: SIGSTOP `targets` nodes (one by default) through
    `backend.pause`. Stop: SIGCONT them through `backend.resume`."""

    name = "pause"
    start_f = "pause"
    stop_f = "resume"

    @classmethod
    def from_options(cls, handle: ClusterHandle, options: FaultOptions) -> Pause:
        return cls(handle, options.pause_targets)

    def __init__(self, handle: ClusterHandle, targets: str = "one") -> None:
        self._handle = handle
        self._targets = check_targets(targets)
        self._paused: list[str] = []  # paused (or being paused), not yet resumed

    def unavailable(self, caps: BackendCapabilities) -> str | None:
        return None

    async def start(self, rng: random.Random) -> Any:
        return await self.start_among(rng, self._handle.nodes)

    async def start_among(self, rng: random.Random, among: Sequence[str]) -> Any:
        """`start`, with the victims picked among `among` (a pair's minority side)."""
        nodes = await choose_nodes(self._handle, among, rng, self._targets)
        for node in nodes:
            if node not in self._paused:
                self._paused.append(node)
            await self._handle.backend.pause(node)
        return {"nodes": nodes}

    async def stop(self) -> Any:
        resumed = []
        for node in list(self._paused):
            # SIGCONT to a process that was never stopped is harmless.
            await self._handle.backend.resume(node)
            self._paused.remove(node)
            resumed.append(node)
        return {"nodes": resumed}

    def active(self) -> str | None:
        return f"paused {' '.join(self._paused)}" if self._paused else None
