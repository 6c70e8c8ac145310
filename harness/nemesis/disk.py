"""Disk faults: `PowerFailure` (nodes lose what they had not fsynced) and
`WipeDisk` (a node comes back on an empty data directory).

`power`, for any system under test: its nodes' data directories sit on lazy
disks (`harness.lazyfs`, Jepsen's LazyFS design), which keep every write not
yet fsynced in the file system process's memory. A start (`power-off`)
SIGKILLs `targets` nodes (one by default; `all` is a whole-cluster outage),
then has each of their disks forget its unsynced writes; with probability
`torn` a node's disk first lands a random prefix of each file's last
unsynced write, as a disk that had written part of its blocks would. The
value records, per node, the unsynced bytes lost (and the files, and what a
torn write kept). A stop (`power-on`) restarts the nodes on what their disks
kept. A system that acknowledges a write before fsyncing it loses it here.
Needs a backend that can mount the disks (`PowerLoss`: local, netns).

`wipe`: a failed disk, or a machine replaced by a blank one. A start
(`wipe`) SIGKILLs `targets` nodes (one by default) and empties their data
directories (`Wipe`); a stop (`rejoin`) restarts them and waits, at most
`converge_s` seconds, until the system says its replicas agree again
(`ClusterHandle.converge`), so that a replica is not wiped while the only
other copy of what it held is being rebuilt: with N replicas and quorum W,
losing one replica's disk must lose nothing acknowledged, but two at once
may. The value says whether it converged and how long the wait took.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from harness.backends.base import BackendCapabilities, PowerLoss, Wipe

from .base import ClusterHandle, Fault, check_targets, choose_nodes

if TYPE_CHECKING:
    from .schedule import FaultOptions

CONVERGE_S = 30.0  # the longest a wipe's stop waits for the replicas to agree


class _Restarts:
    """Nodes killed by a start and not yet brought back (kept before each
    kill, so that a start cancelled halfway is still undone)."""

    def __init__(self, handle: ClusterHandle) -> None:
        self._handle = handle
        self.down: list[str] = []

    async def kill(self, node: str) -> None:
        if node not in self.down:
            self.down.append(node)
        await self._handle.backend.kill(node)

    async def restart_all(self) -> list[str]:
        restarted = []
        for node in list(self.down):
            if not self._handle.backend.running(node):
                await self._handle.restart(node)
                restarted.append(node)
            self.down.remove(node)
        return restarted


class PowerFailure(Fault):
    """Start: SIGKILL `targets` nodes, then drop what their lazy disks hold
    unsynced (torn with probability `torn`). Stop: restart them."""

    name = "power"
    start_f = "power-off"
    stop_f = "power-on"

    @classmethod
    def from_options(cls, handle: ClusterHandle, options: FaultOptions) -> PowerFailure:
        return cls(handle, options.power_targets, torn=options.power_torn)

    def __init__(self, handle: ClusterHandle, targets: str = "one", *, torn: float = 0.0) -> None:
        if not 0.0 <= torn <= 1.0:
            raise ValueError(f"power_torn is a probability (0..1), not {torn}")
        self._handle = handle
        self._targets = check_targets(targets)
        self._torn = torn
        self._nodes = _Restarts(handle)

    def unavailable(self, caps: BackendCapabilities) -> str | None:
        backend = self._handle.backend
        if not isinstance(backend, PowerLoss):
            return (f"the {backend.name} backend cannot put a node's data on a lazy (FUSE) disk; "
                    "use --backend local or netns")
        if not caps.power:
            return caps.power_reason or f"the {backend.name} backend cannot mount lazy (FUSE) disks here"
        return None

    async def start(self, rng: random.Random) -> Any:
        nodes = await choose_nodes(self._handle, self._handle.nodes, rng, self._targets)
        # Drawn before any await, so that a seed replays them.
        draws = {node: (rng.random() < self._torn, rng.randrange(2**31)) for node in nodes}
        for node in nodes:  # every target down before any disk forgets: one outage
            await self._nodes.kill(node)
        backend = self._handle.backend
        assert isinstance(backend, PowerLoss)
        lost: dict[str, int] = {}
        files: dict[str, dict[str, int]] = {}
        torn: dict[str, dict[str, int]] = {}
        for node, (tear, seed) in draws.items():
            what = await backend.lose_unsynced(node, torn=tear, seed=seed)
            lost[node] = int(what.get("bytes", 0))
            if what.get("files"):
                files[node] = dict(what["files"])
            if tear:
                torn[node] = dict(what.get("torn") or {})
        value: dict[str, Any] = {"nodes": nodes, "lost-bytes": lost}
        if files:
            value["files"] = files
        if torn:
            value["torn"] = torn
        return value

    async def stop(self) -> Any:
        return {"nodes": await self._nodes.restart_all()}

    def active(self) -> str | None:
        return f"power off {' '.join(self._nodes.down)}" if self._nodes.down else None


class WipeDisk(Fault):
    """Start: SIGKILL `targets` nodes and empty their data directories.
    Stop: restart them and wait (bounded) for the system to converge."""

    name = "wipe"
    start_f = "wipe"
    stop_f = "rejoin"

    @classmethod
    def from_options(cls, handle: ClusterHandle, options: FaultOptions) -> WipeDisk:
        return cls(handle, options.wipe_targets)

    def __init__(self, handle: ClusterHandle, targets: str = "one", *, converge_s: float = CONVERGE_S) -> None:
        self._handle = handle
        self._targets = check_targets(targets)
        self._converge_s = converge_s
        self._nodes = _Restarts(handle)
        # Restarted, but the wait for convergence was cut short (the run's
        # end cancelled it): the final heal waits again, since a wiped node
        # that is never refilled is a fault left in force, not a bug found.
        self._rejoining: list[str] = []

    def unavailable(self, caps: BackendCapabilities) -> str | None:
        backend = self._handle.backend
        if not isinstance(backend, Wipe) or not caps.wipe:
            return caps.wipe_reason or (f"the {backend.name} backend cannot empty a node's data directory; "
                                        "use --backend local or netns")
        return None

    async def start(self, rng: random.Random) -> Any:
        nodes = await choose_nodes(self._handle, self._handle.nodes, rng, self._targets)
        backend = self._handle.backend
        assert isinstance(backend, Wipe)
        for node in nodes:
            await self._nodes.kill(node)
            await backend.wipe(node)
        return {"nodes": nodes}

    async def stop(self) -> Any:
        self._rejoining += [n for n in self._nodes.down if n not in self._rejoining]
        restarted = await self._nodes.restart_all()
        value: dict[str, Any] = {"nodes": restarted}
        converge = self._handle.converge
        if not self._rejoining or converge is None:
            self._rejoining = []
            return value
        if not restarted:
            value["rejoining"] = list(self._rejoining)
        clock = self._handle.clock
        started = clock.monotonic()
        deadline = started + self._converge_s
        done: bool | None = False
        while True:
            try:
                done = await converge()
            except Exception:
                done = False
            if done is None or done or clock.monotonic() >= deadline:
                break
            await clock.sleep(min(0.5, max(0.0, deadline - clock.monotonic())))
        value["converged"] = done
        value["waited-s"] = round(clock.monotonic() - started, 2)
        self._rejoining = []
        return value

    def active(self) -> str | None:
        if self._nodes.down:
            return f"wiped {' '.join(self._nodes.down)}"
        return f"{' '.join(self._rejoining)} rejoining" if self._rejoining else None
