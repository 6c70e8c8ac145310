"""A system for tests: `examples.lonely_kv` whose convergence check crashes,
so that the harness itself fails in the middle of a run (after the workload,
before the final reads)."""

from __future__ import annotations

from examples.lonely_kv import LonelyDB, LonelyKV
from harness.systems.base import NodeSetup


class CrashingDB(LonelyDB):
    async def converged(self, nodes: list[NodeSetup]) -> bool | None:
        raise RuntimeError("the convergence check blew up")


class CrashingKV(LonelyKV):
    def __init__(self) -> None:
        super().__init__()
        self.db = CrashingDB()
