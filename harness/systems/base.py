"""The adapter for a system under test: a `DB` (how to run it on a node) and a
`Client` (how to talk to it), as in Jepsen.

The harness never imports a system's own code except through these two
interfaces. A `System` bundles them; `--system package.module:Name` loads any
object with `db` and `client(workload)` like the reference `harness.systems.kvnode`.

An operation's lifecycle: the runner builds an `Invocation`, records it, calls
`Client.invoke`, and records the `Completion` it returns. The client must
decide between `fail` (it certainly did not happen: nothing was sent, or the
system refused it before doing anything) and `info` (it may have happened: a
timeout, a lost connection, a quorum that failed after the request was sent).
When in doubt: `info`. A client must not raise for expected failures;
anything it raises is recorded as `info` with the exception's text.

`context` on both is the opaque causal context of a Dynamo-style store (a
read's context, handed back with a write); it is never written to the history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from harness.backends.base import NodePlace

Outcome = Literal["ok", "fail", "info"]


@dataclass(frozen=True)
class Invocation:
    f: str
    key: Any = None
    value: Any = None
    extra: dict[str, Any] = field(default_factory=dict)  # recorded (e.g. obs, final)
    context: Any = None  # not recorded


@dataclass(frozen=True)
class Completion:
    type: Outcome
    value: Any = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # recorded
    context: Any = None  # not recorded


@dataclass(frozen=True)
class NodeSetup:
    """Everything a DB needs to start one node."""

    place: NodePlace
    nodes: tuple[str, ...]  # every node of the cluster
    settings: Mapping[str, Any]  # cluster settings (n, w, r, resolution, ...)
    seed: int
    # The runner records an operation as `info` when it has no answer after
    # this many seconds; a client should give up (and say what it knows) first.
    op_timeout: float = 5.0


class DB(Protocol):
    def command(self, node: NodeSetup) -> tuple[list[str], dict[str, str]]:
        """The argument list and extra environment that start the node in the
        foreground (the backend daemonizes it, kills and pauses it)."""
        ...

    async def ready(self, node: NodeSetup, timeout: float) -> bool:
        """Wait until the node serves clients; False after timeout."""
        ...

    def log_files(self, node: NodeSetup) -> list[str]:
        """Paths (on the node) of the log files to collect."""
        ...

    async def converged(self, nodes: list[NodeSetup]) -> bool | None:
        """After healing: True once the system says it has converged (hints
        delivered, anti-entropy done); None if it cannot tell (the runner then
        waits a fixed time)."""
        ...


class Client(Protocol):
    async def open(self, node: NodeSetup) -> None: ...

    async def invoke(self, op: Invocation) -> Completion: ...

    async def close(self) -> None: ...


class System(Protocol):
    name: str

    @property
    def db(self) -> DB: ...

    def client(self, workload: str) -> Client:
        """A new client for this workload's operations (as in Jepsen, a
        system has a client per workload); ValueError if it has none."""
        ...


def log_dest(run_dir: Path, node: str) -> Path:
    return run_dir / "nodes" / node
