"""A nemesis plug-in: every node paused at once (a cluster-wide stall, as a
stop-the-world pause on shared hardware would cause), then all resumed."""

from __future__ import annotations

import random
from typing import Any

from harness.nemesis.base import ClusterHandle, Fault
from harness.nemesis.schedule import FaultOptions


class Freeze(Fault):
    name = "freeze"
    start_f = "freeze"
    stop_f = "thaw"

    def __init__(self, handle: ClusterHandle, options: FaultOptions) -> None:
        self._handle = handle
        self._frozen: list[str] = []

    async def start(self, rng: random.Random) -> Any:
        for node in self._handle.nodes:
            self._frozen.append(node)
            await self._handle.backend.pause(node)
        return list(self._frozen)

    async def stop(self) -> Any:
        thawed, self._frozen = self._frozen, []
        for node in thawed:
            await self._handle.backend.resume(node)
        return thawed

    def active(self) -> str | None:
        return "frozen: " + " ".join(self._frozen) if self._frozen else None
