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
from typing import Any, Protocol, runtime_checkable

# node -> the nodes whose traffic it drops (Jepsen's "grudge")
Grudge = Mapping[str, frozenset[str]]

# The port a system gets when it names none: the one its clients dial.
DEFAULT_PORTS: tuple[str, ...] = ("client",)


@dataclass(frozen=True)
class NodePlace:
    """Where one node runs, as the system under test needs to know it.

    A system names the ports each of its nodes listens on (`System.ports`:
    kvnode one, `("client",)`; etcd two, `("client", "peer")`); every mapping
    below is keyed by those names. Each backend fills it in (README,
    "Backends"):

    - `listen`: the address the node's process binds each port on;
    - `client`: where the harness's clients dial each port (they are never
      partitioned: Jepsen's control node);
    - `peers`: for every node of the cluster (this one included), where
      *this* node must dial each of that node's ports. On the local backend
      that is a proxy of this link (so it differs from node to node); on the
      others it is the peer's own address;
    - `advertise`: the address every other node dials for each of this
      node's ports, when that is the same for all of them (what a system
      such as etcd advertises to its peers); None on the local backend,
      where each link has its own proxy.
    """

    name: str  # "n1"
    listen: Mapping[str, str]  # port name -> "host:port" the node binds
    client: Mapping[str, str]  # port name -> "host:port" the harness's clients dial
    peers: Mapping[str, Mapping[str, str]]  # node -> port name -> "host:port" this node dials
    data_dir: str  # on the node's file system
    log_dir: str  # on the node's file system; the backend copies it out at the end
    python: str = sys.executable  # the Python interpreter on the node (with this project installed)
    advertise: Mapping[str, str] | None = None  # port name -> "host:port" every peer dials; None: per link

    @property
    def host(self) -> str:
        """The address the node binds (the host part of its listen addresses)."""
        first = next(iter(self.listen.values()))
        return first.rpartition(":")[0]


@dataclass(frozen=True)
class Exited:
    """A node's process has ended: its exit status (negative: killed by that
    signal, as `subprocess` reports it), or None where the backend cannot
    know it."""

    status: int | None = None

    def describe(self) -> str:
        if self.status is None:
            return "exited"
        if self.status < 0:
            return f"was killed by signal {-self.status}"
        return f"exited with status {self.status}"


@dataclass(frozen=True, kw_only=True)
class BackendOptions:
    """Everything a backend may be configured with (`harness run`'s backend
    flags); each backend takes what concerns it in `from_options`."""

    seed: int | None = None  # the run's seed: for anything random in the backend (the local proxies' loss and jitter)
    subnet: str = "10.77.0.0/24"  # netns, docker: the nodes' addresses
    image: str | None = None  # docker: the node image (default: build one)
    base_image: str | None = None  # docker: build on this local image instead of debootstrap
    nodes_file: str | None = None  # ssh: the hosts
    insecure_accept_host_keys: bool = False  # ssh


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
    # Lazy disks (`PowerLoss`): off unless the backend can mount them here.
    power: bool = False
    power_reason: str = ""
    # Emptying a node's data directory (`Wipe`).
    wipe: bool = False
    wipe_reason: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    name: str

    @classmethod
    def from_options(cls, options: BackendOptions) -> Backend:
        """The backend configured from the run's options (what concerns it).
        Called before the run starts; touches nothing. Raises ValueError
        with one sentence a user can act on for a bad or missing option."""
        ...

    async def setup(self, nodes: Sequence[str], run_dir: Path,
                    ports: Sequence[str] = DEFAULT_PORTS) -> dict[str, NodePlace]:
        """Create the places (addresses, directories, proxies, namespaces
        ...), each with the named `ports` (see `NodePlace`): on local, ports
        free on each node's 127.0.0.x, with a proxy per link and port; on
        netns and docker, 7000 + i for the i-th name; on ssh, the host's
        `node_port` + i. Called once, before any `start`; on failure undoes
        what it did and raises."""
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

    async def exited(self, node: str) -> Exited | None:
        """None while the node's process runs (paused counts), was never
        started, or was ended by this backend's `kill` or `teardown`; once
        it has ended on its own, how. Cheap enough to be polled a few times
        a second while a node starts; never blocks the event loop."""
        ...

    async def clock_blind(self, node: str, argv: Sequence[str]) -> str | None:
        """Why the program `argv` would not see a skew `set_clock` makes on
        this node (libfaketime reaches only programs that read the time
        through libc: not Go or statically linked binaries), else None.
        Called before the node starts, only for runs with clock faults;
        must not start anything."""
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


@runtime_checkable
class PowerLoss(Protocol):
    """A backend that can put each node's data directory on a lazy disk
    (`harness.lazyfs`), which keeps what the node has not fsynced apart so
    that a power failure can lose it. Optional; `capabilities().power` says
    whether it works here."""

    async def prepare_disks(self, nodes: Sequence[str]) -> None:
        """Mount a lazy disk over each node's data directory. Called after
        `setup` and before any `start`, only for runs with the power fault;
        raises (OSError, RuntimeError) saying why it cannot. `teardown`
        unmounts them."""
        ...

    async def lose_unsynced(self, node: str, *, torn: bool, seed: int) -> dict[str, Any]:
        """Forget what the node has not fsynced (torn: land a random prefix,
        drawn from `seed`, of each file's last unsynced write), as a power
        failure would; the node's process must be killed first. Returns
        {"bytes": lost, "files": path -> bytes lost, "torn": path -> bytes kept}."""
        ...


@runtime_checkable
class Wipe(Protocol):
    """A backend that can empty a node's data directory. Optional;
    `capabilities().wipe` says whether it works here."""

    async def wipe(self, node: str) -> None:
        """Remove everything in the node's data directory (the directory
        stays). Only while the node's process is not running."""
        ...
