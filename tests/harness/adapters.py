"""Systems under test for the harness's own tests, each broken in one way,
built on `examples.lonely_kv` (`--system tests.harness.adapters:Name`):

- `CrashingKV`: its convergence check crashes after the workload, so that the
  harness itself fails in the middle of a run (the first check, at start-up,
  passes);
- `ExitingKV`: each node prints a line and exits with status 3 at once;
- `LiarKV`: its client answers reads with the completion type "success"
  (neither ok, fail nor info) and a value nobody wrote;
- `PickyKV`: refuses the netns backend, and the cart workload;
- `SilentKV`: promises nothing.
"""

from __future__ import annotations

import sys

from contract import Completion, Invocation, Promise
from examples.lonely_kv import LonelyClient, LonelyDB, LonelyKV
from harness.systems.base import Deployment, NodeSetup


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


class ExitingDB(LonelyDB):
    def command(self, node: NodeSetup) -> tuple[list[str], dict[str, str]]:
        script = ("import sys; print('listening on', sys.argv[1]); "
                  "print('fatal: the data directory is corrupt', file=sys.stderr); sys.exit(3)")
        return [sys.executable, "-c", script, node.place.listen["client"]], {}


class ExitingKV(LonelyKV):
    def __init__(self) -> None:
        super().__init__()
        self.db = ExitingDB()


class LiarClient(LonelyClient):
    async def invoke(self, op: Invocation) -> Completion:
        if op.f == "read":
            return Completion("success", ["nobody wrote this"])  # type: ignore[arg-type]
        return await super().invoke(op)


class LiarKV(LonelyKV):
    def client(self, workload: str) -> LiarClient:
        return LiarClient()


class PickyKV(LonelyKV):
    name = "picky-kv"

    def supports(self, deployment: Deployment) -> str | None:
        if deployment.backend == "netns":
            return "picky-kv does not run in network namespaces: use --backend local"
        return None


class SilentKV(LonelyKV):
    def promise(self, workload: str) -> Promise:
        return Promise()
