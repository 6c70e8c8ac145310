"""The adapter for a system under test, as in Jepsen: a `DB` (how to run it
on a node) and a `Client` (how to talk to it), bundled by a `System` that
also says what the system promises and where it can run.

The harness never imports a system's own code except through these
interfaces. Systems are plug-ins (`harness.registry`, group
`dynamo_harness.systems`): `--system kvnode` and `--system etcd` are
registered names; `--system package.module:Name` loads any class from the
current directory, `--system-path DIR` or the installed packages.

A system's options (`--set KEY=VALUE`, or the `[system]` table of a run
file) are the keyword parameters of its constructor, or the fields of its
`Options` dataclass if it has one (`harness.systems.options`); the harness
checks them, converts them to the declared types and passes them to the
constructor before anything starts.

An operation's lifecycle (`contract.ops`): the runner builds an
`Invocation`, records it, calls `Client.invoke`, checks and records the
`Completion` it returns. The client must decide between `fail` (it certainly
did not happen: nothing was sent, or the system refused it before doing
anything) and `info` (it may have happened: a timeout, a lost connection, a
quorum that failed after the request was sent). When in doubt: `info`. A
client must not raise for expected failures; anything it raises is recorded
as `info` with the exception's text. A completion that is not one (a type
other than ok/fail/info, a value that does not fit the workload) stops the
run with an error naming the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from contract.ops import Completion, Invocation, Outcome
from contract.promise import Promise
from harness.backends.base import DEFAULT_PORTS, NodePlace

__all__ = ["DB", "Client", "Completion", "Deployment", "Invocation", "NodeSetup", "NodeTime", "Outcome",
           "ReplicaRead", "ReplicaReads", "System", "log_dest", "replicas_agree"]


@dataclass(frozen=True)
class NodeSetup:
    """Everything a DB needs to start one node, and a client to reach it."""

    place: NodePlace  # where it runs: its ports, its peers', its directories (harness.backends.base)
    nodes: tuple[str, ...]  # every node of the cluster, in order
    seed: int  # the run's seed
    # The runner records an operation as `info` when it has no answer after
    # this many seconds; a client should give up (and say what it knows) first.
    op_timeout: float = 5.0


@dataclass(frozen=True)
class Deployment:
    """What a run asks of a system, for `System.supports` to refuse."""

    backend: str  # "local", "netns", "docker", "ssh", or a plug-in's name
    nodes: int
    workload: str  # whose operations the clients send (`workloads.base.speaks`): "register", "cart" ...
    faults: tuple[str, ...]  # "partition", "kill", "pause", "clock", "packet", or a plug-in's


class DB(Protocol):
    def command(self, node: NodeSetup) -> tuple[list[str], dict[str, str]]:
        """The argument list and extra environment that start the node in the
        foreground (the backend daemonizes it, kills and pauses it). Called
        before each start, restarts included. Logs go to stdout/stderr or
        into `node.place.log_dir`: the backend collects that directory."""
        ...

    async def ready(self, node: NodeSetup, timeout: float) -> bool:
        """Wait until the node serves clients; False after `timeout`. It
        need not watch the process: the runner stops waiting as soon as the
        node's process exits."""
        ...

    async def converged(self, nodes: list[NodeSetup]) -> bool | None:
        """After start-up and after healing: True once the system says it
        has converged (members agree, hints delivered, anti-entropy done);
        None if it cannot tell (the runner then waits a fixed time)."""
        ...


@runtime_checkable
class NodeTime(Protocol):
    """Optional, for a DB that can say what time a node's process sees."""

    async def node_time(self, node: NodeSetup) -> float | None:
        """The node's wall clock (Unix seconds) as its process reads it, or
        None if it cannot be asked now. The clock fault uses it to record the
        skew a node really saw, and to refuse a clock that does not move."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class ReplicaRead:
    """What one replica holds of a key, as its own copy says."""

    values: tuple[str, ...]  # its sibling values as text, sorted; () if it holds none (absent, or deleted)


def replicas_agree(reads: Mapping[str, ReplicaRead | None]) -> bool:
    """Every replica of a key was read, and all hold the same values."""
    held = [frozenset(r.values) if r is not None else None for r in reads.values()]
    return bool(held) and None not in held and len(set(held)) == 1


@runtime_checkable
class ReplicaReads(Protocol):
    """Optional, for a DB that can read each replica's own copy of a key:
    the runner then checks that replicas converge by themselves
    (`checkers.replicas`), before anything forces them to."""

    async def replica_reads(self, nodes: list[NodeSetup], key: str) -> dict[str, ReplicaRead | None]:
        """For each replica of `key` (the DB decides which nodes they are:
        kvnode's are the key's preference list), what it holds now, or
        None for a replica that cannot be asked now; {} if the DB cannot
        tell yet which nodes are the key's replicas. Called after the faults
        are healed and before the final reads, many times, while the runner
        waits for the replicas to agree. Must not change what any replica
        holds: no read repair, no anti-entropy, no hint delivery forced."""
        ...


class Client(Protocol):
    async def open(self, node: NodeSetup) -> None:
        """Called once, before any invoke: remember where to connect (may
        connect). Must not change the system's data."""
        ...

    async def invoke(self, op: Invocation) -> Completion:
        """Perform `op`; return ok/fail/info (see the module docstring).
        The runner cancels it after `NodeSetup.op_timeout` and records
        `info`; a client that knows more should answer before."""
        ...

    async def close(self) -> None:
        """Called once, at the end or after an `info` (a new client is then
        opened for a new process); must not raise."""
        ...


class System(Protocol):
    name: str
    db: DB

    def client(self, workload: str) -> Client:
        """A new client for this workload's operations (as in Jepsen, a
        system has a client per workload); ValueError if it has none."""
        ...

    def promise(self, workload: str) -> Promise:
        """What the system promises for this workload, with its options as
        constructed: the claims the workload's checkers judge (contract.promise)."""
        ...


@runtime_checkable
class HasPorts(Protocol):
    """Optional: the named ports each node listens on (default: one,
    `("client",)`)."""

    ports: tuple[str, ...]


@runtime_checkable
class NodeInfo(Protocol):
    """Optional, for a DB that can describe a running node for the report
    (kvnode: its share of the ring)."""

    async def node_info(self, node: NodeSetup) -> dict[str, Any] | None:
        """A few named facts about the node as it serves now ({"ring share":
        0.2}), or None if it cannot be asked. Called once, after start-up."""
        ...


@runtime_checkable
class Supports(Protocol):
    """Optional: a system that cannot run everywhere says so up front."""

    def supports(self, deployment: Deployment) -> str | None:
        """Why this system cannot run as `deployment` asks (one sentence,
        saying what to use instead), or None. Called before anything starts;
        must not start anything."""
        ...


def ports_of(system: object) -> tuple[str, ...]:
    """The ports a system's nodes listen on (`HasPorts`, else the default)."""
    ports = getattr(system, "ports", None)
    return DEFAULT_PORTS if ports is None else tuple(ports)


def log_dest(run_dir: Path, node: str) -> Path:
    return run_dir / "nodes" / node
