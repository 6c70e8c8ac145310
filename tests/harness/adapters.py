"""A system for tests: `examples.lonely_kv` whose convergence check crashes,
so that the harness itself fails in the middle of a run (after the workload,
before the final reads: the first check, at start-up, passes)."""

from __future__ import annotations

from examples.lonely_kv import LonelyDB, LonelyKV
from harness.systems.base import NodeSetup


class CrashingDB(LonelyDB):
    def __init__(self) -> None:
        self.calls = 0

    async def converged(self, nodes: list[NodeSetup]) -> bool | None:
        self.calls += 1
        if self.calls == 1:
            return None  # at start-up: fine
        raise RuntimeError("the convergence check blew up")


class CrashingKV(LonelyKV):
    def __init__(self) -> None:
        super().__init__()
        self.db = CrashingDB()
