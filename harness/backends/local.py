"""The default backend, `local`: every node a process of this machine on its
own loopback address, nothing privileged needed.

Node i (0-based) listens on 127.A.B.{first_address + i} (.11, .12, ... by
default), where 127.A.B is drawn at random for each backend (or given as
`network`): runs going on at once (`harness ci --jobs 2`) never share an
address, so a port a killed or wiped node leaves free while it is down can
be taken by nothing of another run (a proxy of another run listening there
would relay this run's traffic to the other cluster). It listens on one
port per name the system asks for (`setup`'s `ports`: kvnode one,
"client"; etcd two, "client" and "peer"), each free on all of those addresses (or `base_port` + the port's index). Its `NodePlace`:

- `listen` and `client`: those addresses (clients dial the nodes directly);
- `peers[m][p]`: for every other node m and port p, the address of the proxy
  of this node's link to m's port p, on this node's own address; for the
  node itself, its own listen addresses;
- `advertise`: None, since each link has a proxy of its own: a system must
  be told each peer's address per node (`peers`), not one address per peer.

Its files live in the run directory: `nodes/<node>/data`, `nodes/<node>/log`
(with the process's `stdout.log` and `stderr.log`, and `backend.log`, which
records what this backend did to it and when), and `nodes/<node>/clock.faketime`,
its libfaketime control file, removed at teardown.

Faults:

- links: node A reaches node B's port P only through the proxy for A->B on
  P, which listens on A's address (`harness.backends.proxy.ProxyMesh`);
  `NodePlace.peers` says so. A grudge blocks directions of those links on
  every port, a packet shape delays them. The proxies' jitter and loss are
  drawn from `seed` (the run's `--seed`), so that they replay.
  Clients dial the nodes directly (`NodePlace.client` is the listen address)
  and are never partitioned, like Jepsen's control node.
- processes (`harness.backends.processes`, shared with the netns backend):
  each node runs in a session of its own, so SIGKILL, SIGSTOP and SIGCONT go
  to its whole process group, whose id is the pid of the process this
  backend started (a wrapper script cannot leave an orphan behind). No
  signal is ever sent to anything else, and never by name. Teardown kills
  them all; so does an atexit hook if teardown never ran; and where
  util-linux's `setpriv` is installed, the kernel kills a node whose harness
  died even by SIGKILL (PR_SET_PDEATHSIG).
- clocks: every node starts under libfaketime at offset +0 when a working
  libfaketime is found (`harness.backends.faketime`), so `set_clock` can move
  its wall clock later; without one, nodes start plainly and
  `capabilities().clock` is False with the reason. `clock_blind` reads the
  program's file (`harness.backends.binaries`): a Go or statically linked
  program would not see the skew.

- disks: for runs with the power fault, `prepare_disks` mounts a lazy disk
  (`harness.lazyfs`) over each node's data directory (its files in
  `nodes/<node>/disk` until teardown unmounts it and moves them back), and
  `lose_unsynced` makes one forget what its killed node had not fsynced;
  `wipe` empties a stopped node's data directory.

Usage, inside a coroutine:

    backend = LocalBackend()
    try:
        places = await backend.setup(["n1", "n2", "n3"], run_dir, ports=("client", "peer"))
        for name, place in places.items():
            await backend.start(name, argv_for(place), {})
        await backend.cut({"n1": frozenset({"n2", "n3"}), "n2": frozenset({"n1"}),
                           "n3": frozenset({"n1"})})   # n1 isolated
        await backend.set_clock("n2", 30.0)               # n2 30 s ahead
        await backend.heal_all()
    finally:
        await backend.teardown()
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.backends import binaries, owner
from harness.backends.base import (
    DEFAULT_PORTS,
    BackendCapabilities,
    BackendOptions,
    Exited,
    Grudge,
    NodePlace,
    PacketShape,
)
from harness.backends.faketime import ClockControl, find_libfaketime, libfaketime_missing_reason
from harness.backends.processes import NodeProcesses, copy_tree, node_environ, note
from harness.backends.proxy import BlockMode, ProxyMesh
from harness.lazyfs import LazyDisks, empty_directory, fuse_missing_reason

__all__ = ["LocalBackend", "clean"]


@functools.cache
def _orphan_guard() -> tuple[str, ...]:
    """A prefix for a node's argv that makes the kernel SIGKILL the node when
    the harness dies, even by SIGKILL (when teardown and atexit cannot run):
    util-linux's `setpriv --pdeathsig KILL`, which sets PR_SET_PDEATHSIG and
    execs the command in place (same pid); `start` waits until it has (see
    `_past_the_guard`). Empty where setpriv is missing or too old. (A
    preexec_fn could call prctl itself, but is unsafe in a process with
    threads.)"""
    setpriv = shutil.which("setpriv")
    if setpriv is None or not sys.platform.startswith("linux"):
        return ()
    prefix = (setpriv, "--pdeathsig", "KILL", "--")
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return prefix if ok else ()


async def _past_the_guard(pid: int, setpriv: str, timeout: float = 2.0) -> None:
    """Wait until `pid` no longer runs setpriv, i.e. it has set its death
    signal and exec'd the node: were the harness to die before that, the
    node would outlive it. Takes a few milliseconds."""
    real = os.path.realpath(setpriv)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/exe") != real:
                return
        except OSError:
            return  # exited already, or no /proc to tell
        await asyncio.sleep(0.002)


def _reserve(host: str, port: int) -> socket.socket:
    """A socket holding (host, port) bound (port 0: one the OS picks) until
    closed, so that the proxies' OS-chosen ports cannot take a node's port
    before the node binds it (bound without SO_REUSEADDR, it blocks even
    sockets that set it)."""
    s = socket.socket()
    try:
        s.bind((host, port))
    except OSError as e:
        s.close()
        raise OSError(f"cannot use {host}:{port} for a node: {e}") from None
    return s


def _reserve_ports(hosts: Sequence[str], port: int | None, attempts: int = 20) -> list[socket.socket]:
    """One reserved (host, port) per host: `port` on each if given (raises
    if one is taken); else one port free on every host, which is easier to
    read in logs; else any free port per host."""
    if port is not None:
        return _reserve_each(hosts, port)
    for _ in range(attempts):
        first = _reserve(hosts[0], 0)
        common = int(first.getsockname()[1])
        try:
            return [first, *_reserve_each(hosts[1:], common)]
        except OSError:
            first.close()
    return _reserve_each(hosts, 0)


def _reserve_each(hosts: Sequence[str], port: int) -> list[socket.socket]:
    """`port` (0: any) reserved on each host, or none of them and OSError."""
    held: list[socket.socket] = []
    try:
        for host in hosts:
            held.append(_reserve(host, port))
    except BaseException:
        for s in held:
            s.close()
        raise
    return held


_DRAWN: set[str] = set()  # the networks drawn in this process (other processes: 1 in 65,024 to meet)


class LocalBackend:
    """Nodes as local processes on loopback addresses of their own, links
    through TCP proxies,
    clocks through libfaketime. See the module docstring."""

    name = "local"

    def __init__(
        self,
        base_port: int | None = None,
        first_address: int = 11,
        *,
        network: str | None = None,
        on_block: BlockMode = "hold",
        seed: int | None = None,
    ) -> None:
        """`base_port`: the first port every node listens on (each on its
        own address; port i of `setup`'s `ports` at base_port + i; default:
        ports found free on all of them). `first_address`: the last byte of
        the first node's address. `network`: the first three bytes of the
        nodes' addresses, "127.A.B" (default: drawn at random in
        127.0.0.0/8, never 127.0.x). `on_block`: what the proxies do with
        bytes sent into a partition (`harness.backends.proxy`). `seed`: for
        the proxies' jitter and loss (None: unseeded)."""
        if base_port is not None and not 0 < base_port < 65536:
            raise ValueError(f"base_port must be within 1..65535, not {base_port}")
        if not 1 <= first_address <= 254:
            raise ValueError(f"first_address must be within 1..254, not {first_address}")
        if network is None:
            draw = random.SystemRandom()
            while network is None or network in _DRAWN:  # another backend of this process has it
                network = f"127.{draw.randint(1, 254)}.{draw.randint(0, 255)}"
            _DRAWN.add(network)
        parts = network.split(".")
        if len(parts) != 3 or parts[0] != "127" or not all(p.isdigit() and int(p) <= 255 for p in parts):
            raise ValueError(f"network must be the first three bytes of a loopback address (127.A.B), not {network!r}")
        self.base_port = base_port
        self.first_address = first_address
        self.network = network
        self.on_block: BlockMode = on_block
        self.seed = seed
        self._places: dict[str, NodePlace] = {}
        self._clocks: dict[str, ClockControl] = {}
        self._procs = NodeProcesses()
        self._disks = LazyDisks()  # only for runs with the power fault
        self._mesh: ProxyMesh | None = None
        self._faketime: Path | None = None
        self._guard: tuple[str, ...] = ()
        self._set_up = False

    @classmethod
    def from_options(cls, options: BackendOptions) -> LocalBackend:
        """The local backend with the run's seed for its proxies."""
        return cls(seed=options.seed)

    # -- places -------------------------------------------------------------

    async def setup(self, nodes: Sequence[str], run_dir: Path,
                    ports: Sequence[str] = DEFAULT_PORTS) -> dict[str, NodePlace]:
        """Choose addresses and a port per name in `ports` for each node,
        make its directories and clock control file, start the proxies (one
        per ordered pair of nodes and port). Called once, before any
        `start`; on failure undoes what it did and raises."""
        if self._set_up:
            raise RuntimeError("LocalBackend.setup called twice without teardown")
        nodes, ports = list(nodes), list(ports)
        if not nodes or len(set(nodes)) != len(nodes):
            raise ValueError(f"need distinct node names, got {nodes}")
        if not ports or len(set(ports)) != len(ports):
            raise ValueError(f"need distinct port names, got {ports}")
        if self.first_address + len(nodes) - 1 > 254:
            raise ValueError(f"{len(nodes)} nodes do not fit from {self.network}.{self.first_address} "
                             f"to {self.network}.254")
        if self.base_port is not None and self.base_port + len(ports) - 1 > 65535:
            raise ValueError(f"{len(ports)} ports from {self.base_port} go past 65535")
        self._set_up = True
        atexit.register(self._kill_all_now)
        try:
            return await self._setup(nodes, Path(run_dir), ports)
        except BaseException:
            await self.teardown()
            raise

    async def _setup(self, nodes: list[str], run_dir: Path, ports: list[str]) -> dict[str, NodePlace]:
        # Both probes run a child process: keep them off the event loop.
        self._faketime = await asyncio.to_thread(find_libfaketime)
        self._guard = await asyncio.to_thread(_orphan_guard)
        hosts = [f"{self.network}.{self.first_address + i}" for i in range(len(nodes))]
        reserved: list[socket.socket] = []
        try:
            listen: dict[str, dict[str, tuple[str, int]]] = {n: {} for n in nodes}
            for i, port in enumerate(ports):
                held = _reserve_ports(hosts, None if self.base_port is None else self.base_port + i)
                reserved += held
                for n, host, s in zip(nodes, hosts, held, strict=True):
                    listen[n][port] = (host, int(s.getsockname()[1]))
            self._mesh = ProxyMesh(listen, on_block=self.on_block, seed=self.seed)
            await self._mesh.start()
        finally:
            for s in reserved:
                s.close()
        mesh = self._mesh
        for n in nodes:
            node_dir = run_dir / "nodes" / n
            data_dir, log_dir = node_dir / "data", node_dir / "log"
            data_dir.mkdir(parents=True, exist_ok=True)
            log_dir.mkdir(parents=True, exist_ok=True)
            if self._faketime is not None:
                self._clocks[n] = ClockControl(node_dir / "clock.faketime", self._faketime)
            own = {p: _show(listen[n][p]) for p in ports}
            peers = {m: own if m == n else {p: _show(mesh.address(n, m, p)) for p in ports} for m in nodes}
            self._places[n] = NodePlace(
                name=n, listen=own, client=dict(own), peers=peers, data_dir=str(data_dir),
                log_dir=str(log_dir), python=sys.executable, advertise=None,
            )
        return dict(self._places)

    def capabilities(self) -> BackendCapabilities:
        """What works here: clock skew needs a working libfaketime."""
        library = self._faketime if self._set_up else find_libfaketime()
        return BackendCapabilities(
            clock=library is not None,
            clock_reason="" if library is not None else f"no usable libfaketime: {libfaketime_missing_reason()}",
            packet=True,
            power=(fuse := fuse_missing_reason()) is None,
            power_reason=f"no lazy disk on the local backend: {fuse}" if fuse else "",
            wipe=True,
            extra={
                "links": "per-link, per-port TCP proxies on loopback; a blocked direction "
                         + ("holds bytes until healed" if self.on_block == "hold" else "discards bytes"),
                "packet": "delay and jitter per chunk; loss as a retransmission delay; "
                          "duplicate and reorder ignored"
                          + (f"; seeded with {self.seed}" if self.seed is not None else ""),
                "libfaketime": str(library) if library is not None else "",
                "orphans": ("nodes die with the harness (setpriv --pdeathsig)" if _orphan_guard()
                            else "no setpriv: nodes outlive a harness killed by SIGKILL"),
            },
        )

    async def clock_blind(self, node: str, argv: Sequence[str]) -> str | None:
        """Why `argv` would not see `set_clock`'s skew (a Go or statically
        linked program, read from its file on this machine), else None."""
        self._place(node)
        found = await asyncio.to_thread(binaries.blindness, [str(a) for a in argv])
        return binaries.refusal(node, found.describe()) if found is not None else None

    # -- processes ------------------------------------------------------------

    async def start(self, node: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        """Start the node's process in a session of its own, output appended
        to its log directory's stdout.log and stderr.log, under libfaketime
        when available. Raises if the node is running already."""
        place = self._place(node)
        argv = [str(a) for a in argv]
        environ = node_environ(env, self._clocks.get(node), self._faketime)
        # Popen runs on the event loop's thread, which lives as long as the
        # run: the death signal fires when that thread ends.
        proc = self._procs.start(node, [*self._guard, *argv], environ, place.log_dir)
        if self._guard:
            await _past_the_guard(proc.pid, self._guard[0])
        clock = f" clock={self._clocks[node].offset:+g}s" if node in self._clocks else " (no libfaketime)"
        self._note(node, f"start pid={proc.pid}{clock}: {shlex.join(argv)}")
        _pid_file(place).write_text(f"{proc.pid}\n{owner.token()}\n")

    async def kill(self, node: str) -> None:
        """SIGKILL the node's process group and reap it; no-op if not running."""
        place = self._place(node)
        proc = await self._procs.kill(node)
        if proc is not None:
            self._note(node, f"kill pid={proc.pid}")
        _pid_file(place).unlink(missing_ok=True)

    async def pause(self, node: str) -> None:
        """SIGSTOP: the node keeps its sockets and answers nothing."""
        self._place(node)
        proc = self._procs.signal(node, signal.SIGSTOP)
        if proc is not None:
            self._note(node, f"pause pid={proc.pid}")

    async def resume(self, node: str) -> None:
        """SIGCONT."""
        self._place(node)
        proc = self._procs.signal(node, signal.SIGCONT)
        if proc is not None:
            self._note(node, f"resume pid={proc.pid}")

    def running(self, node: str) -> bool:
        """True while the process exists (a paused one counts)."""
        self._place(node)
        return self._procs.running(node) is not None

    async def exited(self, node: str) -> Exited | None:
        """How the node's process ended on its own (its exit status; a
        negative one: the signal that killed it); None while it runs, if it
        never started, or after `kill`."""
        self._place(node)
        return self._procs.exited(node)

    def pid(self, node: str) -> int | None:
        """The pid of the node's running process, if any (for tests and logs)."""
        self._place(node)
        return self._procs.pid(node)

    # -- links and clocks -----------------------------------------------------

    async def cut(self, grudge: Grudge) -> None:
        """Replace the partition (see `ProxyMesh.cut`), on every port."""
        self._require_mesh().cut(grudge)
        for node in self._places:
            if grudge.get(node):
                self._note(node, f"drops traffic from {', '.join(sorted(grudge[node]))}")

    async def shape(self, nodes: Sequence[str], shape: PacketShape) -> None:
        """Replace the packet shaping of traffic to and from `nodes`, on
        every port."""
        self._require_mesh().shape(nodes, shape)
        for node in nodes:
            self._note(node, f"shape {shape}")

    async def set_clock(self, node: str, offset_s: float) -> None:
        """Offset the node's wall clock by offset_s from true time (0 resets),
        at once, while it runs; its monotonic clock is untouched."""
        self._place(node)
        clock = self._clocks.get(node)
        if clock is None:
            raise RuntimeError(f"cannot set {node}'s clock: {self.capabilities().clock_reason}")
        clock.set_offset(offset_s)
        self._note(node, f"clock {offset_s:+g}s")

    async def heal_all(self) -> None:
        """Heal every link, clear every shape, reset every clock to +0, and
        SIGCONT every running process."""
        if self._mesh is not None:
            self._mesh.heal()
        for clock in self._clocks.values():
            clock.set_offset(0.0)
        self._procs.cont_all()
        for node in self._places:
            self._note(node, "heal_all")

    # -- disks ------------------------------------------------------------------

    async def prepare_disks(self, nodes: Sequence[str]) -> None:
        """Mount a lazy disk (`harness.lazyfs`) over each node's data
        directory, its files kept in `nodes/<node>/disk` until teardown
        unmounts it and moves them back. Before any `start`."""
        for node in nodes:
            place = self._place(node)
            if node not in self._disks:
                data = Path(place.data_dir)
                await self._disks.mount(node, data, data.parent / "disk", Path(place.log_dir))
                self._note(node, "lazy disk mounted on its data directory")

    async def lose_unsynced(self, node: str, *, torn: bool, seed: int) -> dict[str, Any]:
        """Forget what the killed node had not fsynced (see `PowerLoss`)."""
        self._place(node)
        lost = await self._disks.lose(node, torn=torn, seed=seed)
        self._note(node, f"power loss: {lost['bytes']} unsynced bytes lost" + (" (torn)" if torn else ""))
        return lost

    async def wipe(self, node: str) -> None:
        """Empty the node's data directory (it must not be running)."""
        place = self._place(node)
        if self._procs.running(node) is not None:
            raise RuntimeError(f"cannot wipe {node} while it runs")
        removed = await asyncio.to_thread(empty_directory, place.data_dir)
        self._note(node, f"wipe: {removed} entries removed from its data directory")

    # -- logs and teardown ------------------------------------------------------

    async def collect_logs(self, node: str, dest: Path) -> list[Path]:
        """Copy the files of the node's log directory (kept relative) into
        `dest`; returns the copies. A file already in place is not copied."""
        source = Path(self._place(node).log_dir)
        return await asyncio.to_thread(copy_tree, source, Path(dest))

    async def teardown(self) -> None:
        """SIGCONT and SIGKILL every process this backend started (by its
        pid's process group), reap them, close every proxy, remove the clock
        control files. The data and log directories stay: they belong to the
        run's record. Idempotent, and safe after a failed setup."""
        try:
            killed, stuck = await asyncio.to_thread(self._procs.kill_all)
            for node, pid in killed:
                self._note(node, f"teardown: kill pid={pid}")
            for node in self._places:
                if not any(line.startswith(f"{node} ") for line in stuck):
                    _pid_file(self._places[node]).unlink(missing_ok=True)
            if stuck:
                raise RuntimeError("; ".join(stuck))
        finally:
            mesh, self._mesh = self._mesh, None
            try:
                if mesh is not None:
                    await mesh.close()
            finally:
                problems = await asyncio.to_thread(self._disks.unmount_all)
                for problem in problems:
                    for node in self._places:
                        self._note(node, f"teardown: {problem}")
                for clock in self._clocks.values():
                    with contextlib.suppress(OSError):
                        clock.remove()
                self._clocks.clear()
                self._places.clear()
                self._set_up = False
                atexit.unregister(self._kill_all_now)

    # -- helpers ----------------------------------------------------------------

    def _place(self, node: str) -> NodePlace:
        try:
            return self._places[node]
        except KeyError:
            raise ValueError(f"unknown node {node!r} (set up: {sorted(self._places)})") from None

    def _require_mesh(self) -> ProxyMesh:
        if self._mesh is None:
            raise RuntimeError("LocalBackend is not set up")
        return self._mesh

    def _note(self, node: str, text: str) -> None:
        place = self._places.get(node)
        if place is not None:
            note(place.log_dir, text)

    def _kill_all_now(self) -> None:
        """At interpreter exit, if teardown never ran: no node outlives us,
        and no lazy disk stays mounted."""
        self._procs.kill_all()
        self._disks.unmount_all()


def _pid_file(place: NodePlace) -> Path:
    """`nodes/<node>/pid`: the running node's pid, then the owning harness's
    `owner.token`, for `clean` after a crash."""
    return Path(place.data_dir).parent / "pid"


def clean(store: Path) -> list[str]:
    """Kill node processes that crashed runs in `store` left behind: those
    named by a `nodes/<node>/pid` file whose process still runs *with that
    node's data directory on its command line* (so a reused pid is never
    touched), unless the harness that started it still runs (a live run is
    left alone, pid file and all). Removes the pid files of the runs it
    cleaned; returns a line per thing done."""
    done: list[str] = []
    spared: set[Path] = set()
    for pid_file in sorted(Path(store).glob("*/*/nodes/*/pid")):
        run = pid_file.parents[2]
        data_dir = os.path.realpath(pid_file.parent / "data")
        try:
            lines = pid_file.read_text().split()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            pid_file.unlink(missing_ok=True)
            continue
        if len(lines) > 1 and owner.alive(lines[1]):
            if run not in spared:
                spared.add(run)
                done.append(f"left run {run} alone: its harness (pid {lines[1].split(':')[0]}) is still running")
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            cwd, cmdline = "/", []
        if any(os.path.realpath(os.path.join(cwd, arg)) == data_dir for arg in cmdline if arg):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)
                os.killpg(pid, signal.SIGKILL)
            done.append(f"killed pid {pid} ({pid_file.parent.name} of {run})")
        pid_file.unlink(missing_ok=True)
    return done


def _show(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"
