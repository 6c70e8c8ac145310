"""What a backend gives the harness: places for nodes, and the primitives the
nemesis uses to hurt them.

A backend knows nothing about the system under test. The runner asks it where
node `n1` lives (`place`), hands it the argument list and environment that
start the system's process there (`start`), and the nemeses call the fault
primitives: kill/pause/resume a node's process, cut links (a *grudge*: for
each node, the nodes whose packets it drops), shape packets per node, and
offset a node's wall clock. `heal_all` undoes every fault; `teardown` ends
every process and removes every file, rule, namespace or container the
backend made, and must be safe to call more than once and after a failed
`setup`.

All methods are coroutines so that a backend may talk to a remote engine
(Docker, SSH) without blocking the runner's event loop.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# node -> the nodes whose traffic it drops (Jepsen's "grudge")
Grudge = Mapping[str, frozenset[str]]


@dataclass(frozen=True)
class NodePlace:
    """Where one node runs, as the system under test needs to know it."""

    name: str  # "n1"
    listen: str  # "host:port" the node's server binds
    client: str  # "host:port" the harness's clients dial
    peers: Mapping[str, str]  # peer name -> "host:port" this node must dial for it
    data_dir: str  # on the node's file system
    log_dir: str  # on the node's file system; the backend copies it out at the end
    python: str = sys.executable  # the Python interpreter on the node (with this project installed)


@dataclass(frozen=True)
class PacketShape:
    """Packet faults on a node's traffic (netem's vocabulary)."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0  # probability 0..1 that a packet (local: a chunk) is dropped
    duplicate: float = 0.0  # netem only; the local backend ignores it
    reorder: float = 0.0  # netem only; the local backend ignores it


@dataclass
class BackendCapabilities:
    """What this backend can do here; a nemesis that needs a missing one
    refuses to start with `reason` instead of failing midway."""

    clock: bool = True
    clock_reason: str = ""
    packet: bool = True
    packet_reason: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    name: str

    async def setup(self, nodes: Sequence[str], run_dir: Path) -> dict[str, NodePlace]:
        """Create the places (addresses, directories, proxies, namespaces ...)."""
        ...

    def capabilities(self) -> BackendCapabilities: ...

    async def start(self, node: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        """Start the node's process (a daemon of the backend's own)."""
        ...

    async def kill(self, node: str) -> None:
        """SIGKILL the node's process and wait for it (no-op if not running)."""
        ...

    async def pause(self, node: str) -> None:
        """SIGSTOP."""
        ...

    async def resume(self, node: str) -> None:
        """SIGCONT."""
        ...

    def running(self, node: str) -> bool:
        """True while the node's process exists (paused counts as running)."""
        ...

    async def cut(self, grudge: Grudge) -> None:
        """Replace the current partition with this grudge (empty sets heal)."""
        ...

    async def shape(self, nodes: Sequence[str], shape: PacketShape) -> None:
        """Apply packet faults to traffic to and from these nodes (replacing any)."""
        ...

    async def set_clock(self, node: str, offset_s: float) -> None:
        """Offset the node's wall clock by offset_s seconds (0 resets); its
        monotonic clock is untouched."""
        ...

    async def heal_all(self) -> None:
        """Undo every fault: links, packet shapes, clocks, paused processes."""
        ...

    async def collect_logs(self, node: str, dest: Path) -> list[Path]:
        """Copy the node's log directory to dest; return the files copied."""
        ...

    async def teardown(self) -> None:
        """End every process and remove everything setup made. Idempotent."""
        ...
