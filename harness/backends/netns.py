"""The `netns` backend: every node a process in a Linux network namespace of
its own, on one bridge the harness creates; partitions are real iptables
DROP rules, packet faults real netem qdiscs. Needs root.

Names and addresses (one run, id = 6 random hex digits, e.g. `3fa9c1`):

- bridge `hxbr<id>` in the root namespace, holding the subnet's first address
  (10.77.0.1/24 by default): the host's side, through which the harness's
  clients dial the nodes. Clients are never partitioned, like Jepsen's
  control node;
- namespace `hx<id>-<node>` per node, with `lo` up and `eth0`, the inner end
  of a veth pair whose outer end `hx<id>v<i>` is a port of the bridge;
- node i (0-based) gets the subnet's address i + 2 (10.77.0.2, .3, ...);
  port j of the names the system asks for (`setup`'s `ports`: kvnode
  "client"; etcd "client", "peer") is 7000 + j there. In its `NodePlace`,
  `listen`, `client` and `advertise` are those addresses, and `peers[m]` is
  node m's own `listen` (no proxies: every node dials the same address);
- one rule in the root namespace's FORWARD chain,
  `-i hxbr<id> -o hxbr<id> -m comment --comment dynamo-harness:netns:<id> -j ACCEPT`:
  where Docker is installed the FORWARD policy is DROP and `br_netfilter`
  passes bridged frames through iptables, so without it the namespaces could
  not reach each other (measured). It is removed at teardown; no other rule
  or chain of the root namespace is ever touched.

Faults, with the command lines of `harness.backends.commands`:

- links: inside each node's namespace a chain `HARNESS` jumped to from
  INPUT; `cut(grudge)` replaces every node's chain with DROP rules for the
  addresses of the nodes its grudge names (never the bridge's address),
  which cuts every port at once;
- packets: `tc qdisc replace ... netem` on the node's `eth0` (what it sends)
  and on the outer end of its veth (what it receives), so that, as on the
  local backend, a shape applies to traffic to and from the node. A kernel
  built without netem makes `capabilities().packet` False, with the reason;
- processes: `ip netns exec <ns> <argv>` execs the node's program in place,
  in a session of its own: the pid this backend starts is the node's, and the
  id of its process group, to which SIGKILL/SIGSTOP/SIGCONT go (started,
  signalled and reaped by `harness.backends.processes`, as on the local
  backend);
- clocks: libfaketime with a control file per node, exactly as on the local
  backend (namespaces share the file system and the kernel clock), and
  `clock_blind` reads the program's file on this machine the same way.

Files: as on the local backend, `nodes/<node>/{data,log}` in the run
directory (`log/` holds stdout.log, stderr.log and backend.log, what this
backend did to the node and when) and `nodes/<node>/clock.faketime`. A state
file `/run/dynamo-harness/netns/<id>.json` records, before anything is
created, the names this run will use, the pid of the process that owns it and
the pids of its nodes; `clean()` reads it to remove what a crashed run left
behind, and spares a run whose owner still lives.

Usage, inside a coroutine (as root):

    backend = NetnsBackend(subnet="10.77.0.0/24")
    try:
        places = await backend.setup(["n1", "n2", "n3"], run_dir)
        for name, place in places.items():
            await backend.start(name, argv_for(place), {})
        await backend.cut({"n2": frozenset({"n1"})})   # n2 drops n1's packets
        await backend.heal_all()
    finally:
        await backend.teardown()
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.backends import binaries, commands, owner
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
from harness.backends.probe import netns_problem
from harness.backends.processes import NodeProcesses, copy_tree, node_environ, note
from harness.lazyfs import LazyDisks, empty_directory, fuse_missing_reason

__all__ = ["STATE_DIR", "NetnsBackend", "NetnsError", "clean", "netem_missing_reason"]

STATE_DIR = Path("/run/dynamo-harness/netns")
PORT = 7000  # the first port; the j-th name of `setup`'s `ports` gets PORT + j
DEVICE = "eth0"  # the node's interface, inside its namespace
COMMENT = "dynamo-harness:netns:"  # + run id: tags our FORWARD rule

# Every name this backend creates matches one of these, with the run id as
# group 1; nothing else is ever deleted by `clean()`.
NAMESPACE_RE = re.compile(r"^hx([0-9a-f]{6})-[A-Za-z0-9_.-]+$")
BRIDGE_RE = re.compile(r"^hxbr([0-9a-f]{6})$")
VETH_RE = re.compile(r"^hx([0-9a-f]{6})v[0-9]+$")
STATE_RE = re.compile(r"^([0-9a-f]{6})\.json$")
_NODE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


class NetnsError(RuntimeError):
    """A command this backend ran failed (the message has it and its stderr),
    or the machine cannot run this backend (not root, a tool missing, the
    subnet in use)."""


# -- running commands -------------------------------------------------------


def _failure(argv: Sequence[str], returncode: int, stderr: bytes) -> NetnsError:
    text = stderr.decode("utf-8", "replace").strip() or "(no output)"
    return NetnsError(f"`{shlex.join(argv)}` failed (exit {returncode}): {text}")


async def _run(argv: Sequence[str], *, check: bool = True) -> tuple[int, str]:
    """Run a command to completion off the event loop's thread; raise
    NetnsError with its stderr if it fails and `check`."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    code = proc.returncode if proc.returncode is not None else -1
    if check and code != 0:
        raise _failure(argv, code, err)
    return code, out.decode("utf-8", "replace")


def _run_now(argv: Sequence[str], *, check: bool = True) -> tuple[int, str]:
    """`_run` for the synchronous paths (teardown, atexit, `clean`)."""
    try:
        done = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        if check:
            raise NetnsError(f"`{shlex.join(argv)}` could not run: {e}") from None
        return -1, ""
    if check and done.returncode != 0:
        raise _failure(argv, done.returncode, done.stderr)
    return done.returncode, done.stdout.decode("utf-8", "replace")


def _in_ns(namespace: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", namespace, *argv]


# -- what exists now (root namespace) ----------------------------------------


def _namespaces() -> set[str]:
    code, out = _run_now(["ip", "-j", "netns", "list"], check=False)
    if code != 0 or not out.strip():
        return set()
    return {str(entry["name"]) for entry in json.loads(out)}


def _links() -> set[str]:
    code, out = _run_now(["ip", "-j", "link", "show"], check=False)
    if code != 0 or not out.strip():
        return set()
    return {str(entry["ifname"]) for entry in json.loads(out)}


def _forward_rules() -> list[list[str]]:
    """The FORWARD chain's rules as argument lists (`-A FORWARD ...`)."""
    code, out = _run_now(["iptables", "-w", "-S", "FORWARD"], check=False)
    if code != 0:
        return []
    return [shlex.split(line) for line in out.splitlines() if line.startswith("-A FORWARD ")]


def _our_forward_rule_id(rule: Sequence[str]) -> str | None:
    """The run id if this FORWARD rule is one of ours: tagged with our
    comment, or (if the comment match was unavailable) exactly the accept
    between the two sides of one of our bridges."""
    for i, arg in enumerate(rule[:-1]):
        if arg == "--comment" and rule[i + 1].startswith(COMMENT):
            run_id = rule[i + 1][len(COMMENT):]
            if re.fullmatch(r"[0-9a-f]{6}", run_id):
                return run_id
    bare = list(rule[2:])
    if len(bare) == 6 and bare[0] == "-i" and bare[2] == "-o" and bare[1] == bare[3] and bare[4:] == ["-j", "ACCEPT"]:
        match = BRIDGE_RE.match(bare[1])
        return match.group(1) if match else None
    return None


# -- processes ----------------------------------------------------------------


def _kill_and_wait(pids: Sequence[int], groups: frozenset[int] = frozenset(), timeout: float = 10.0) -> list[int]:
    """SIGCONT and SIGKILL each process (the whole group for those in
    `groups`, node processes that lead their own); wait until they are gone
    or zombies. Returns those still there."""
    for pid in pids:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if pid in groups and os.getpgid(pid) == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    left = [p for p in pids if owner.start_time(p) is not None]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if owner.start_time(p) is not None]
    return left


def _pids_in(namespace: str) -> list[int]:
    code, out = _run_now(["ip", "netns", "pids", namespace], check=False)
    return [int(x) for x in out.split() if x.isdigit()] if code == 0 else []


@functools.cache
def netem_missing_reason() -> str:
    """Why packet faults cannot work here ("" if they can): netem must be in
    the kernel (some are built without CONFIG_NET_SCH_NETEM: the VMs this
    backend was written on, for one). Checked once, in a throwaway network namespace
    that vanishes with the probe."""
    if os.geteuid() != 0:
        return "tc netem needs root"
    for tool, package in (("tc", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: {package})"
    probe = ["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]
    try:
        _run_now(probe)
    except NetnsError as e:
        return f"this kernel cannot run netem: {e}"
    return ""


# -- the state file ---------------------------------------------------------------


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Atomically: `clean()` may read it at any moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class NetnsBackend:
    """Nodes in network namespaces on a bridge, links cut with iptables,
    packets shaped with netem, clocks through libfaketime. See the module
    docstring."""

    name = "netns"

    def __init__(self, subnet: str = "10.77.0.0/24", *, state_dir: Path | str = STATE_DIR) -> None:
        """`subnet`: the bridge takes its first address, the nodes the next
        ones; it must not be in use on this machine. `state_dir`: where the
        state file for `clean()` goes."""
        try:
            self.network = ipaddress.IPv4Network(subnet)
        except ValueError as e:
            raise ValueError(f"--subnet {subnet}: {e}") from None
        if self.network.num_addresses < 4:
            raise ValueError(f"--subnet {subnet} is too small for a bridge and a node: give a /29 or larger")
        self.state_dir = Path(state_dir)
        self.run_id = secrets.token_hex(3)
        self.bridge = f"hxbr{self.run_id}"
        self.bridge_address = str(self.network.network_address + 1)
        self._places: dict[str, NodePlace] = {}
        self._ns: dict[str, str] = {}  # node -> namespace
        self._veth: dict[str, str] = {}  # node -> outer end of its veth, in the bridge
        self._address: dict[str, str] = {}  # node -> its address
        self._clocks: dict[str, ClockControl] = {}
        self._procs = NodeProcesses()
        self._disks = LazyDisks()  # only for runs with the power fault
        self._forward_rule: list[str] | None = None  # what follows `iptables -I FORWARD`
        self._faketime: Path | None = None
        self._state: dict[str, Any] = {}
        self._set_up = False

    @classmethod
    def from_options(cls, options: BackendOptions) -> NetnsBackend:
        """The netns backend on the run's `--subnet` (OSError saying why, when
        this machine cannot make namespaces: tried once, see probe.py)."""
        problem = netns_problem()
        if problem:
            raise OSError(problem)
        return cls(subnet=options.subnet)

    # -- places -------------------------------------------------------------

    async def setup(self, nodes: Sequence[str], run_dir: Path,
                    ports: Sequence[str] = DEFAULT_PORTS) -> dict[str, NodePlace]:
        """Create the bridge, a namespace with a veth and the HARNESS chain
        per node, the FORWARD rule, each node's directories and clock control
        file; the j-th of `ports` is 7000 + j on each node's address. Called
        once, before any `start`; on failure undoes what it did and raises."""
        if self._set_up:
            raise RuntimeError("NetnsBackend.setup called twice without teardown")
        nodes, ports = list(nodes), list(ports)
        if not nodes or len(set(nodes)) != len(nodes):
            raise ValueError(f"need distinct node names, got {nodes}")
        if not ports or len(set(ports)) != len(ports):
            raise ValueError(f"need distinct port names, got {ports}")
        for n in nodes:
            if not _NODE_NAME_RE.match(n):
                raise ValueError(f"node name {n!r}: use 1-40 letters, digits, '_', '.', '-'")
        if len(nodes) + 1 > self.network.num_addresses - 2:
            raise ValueError(f"{len(nodes)} nodes and the bridge do not fit in {self.network}")
        # A fresh id per setup, unused by any run this machine remembers.
        self.run_id = secrets.token_hex(3)
        while self._state_path().exists():
            self.run_id = secrets.token_hex(3)
        self.bridge = f"hxbr{self.run_id}"
        self._set_up = True
        atexit.register(self._atexit)
        try:
            return await self._setup(nodes, Path(run_dir), ports)
        except BaseException as e:
            try:
                await self.teardown()
            except Exception as cleanup:
                e.add_note(f"and the teardown after it failed: {cleanup}")
            raise

    async def _setup(self, nodes: list[str], run_dir: Path, ports: list[str]) -> dict[str, NodePlace]:
        if os.geteuid() != 0:
            raise NetnsError("the netns backend needs root (namespaces, bridges, iptables)")
        missing = [tool for tool in ("ip", "iptables", "tc") if shutil.which(tool) is None]
        if missing:
            raise NetnsError(f"the netns backend needs {', '.join(missing)} (Debian: iproute2, iptables)")
        await asyncio.to_thread(self._check_subnet_free)
        for i, n in enumerate(nodes):
            self._ns[n] = f"hx{self.run_id}-{n}"
            self._veth[n] = f"hx{self.run_id}v{i}"
            self._address[n] = str(self.network.network_address + 2 + i)
        # Recorded before anything exists, so that a crash at any later point
        # leaves a state file naming everything `clean()` must look for.
        self._state = {
            "id": self.run_id, "owner": {"pid": os.getpid(), "start": owner.start_time(os.getpid())},
            "subnet": str(self.network), "run_dir": str(run_dir), "bridge": self.bridge,
            "namespaces": dict(self._ns), "veths": dict(self._veth), "pids": {},
        }
        await asyncio.to_thread(self._save_state)
        # Probing libfaketime runs a child process: keep it off the event loop.
        self._faketime = await asyncio.to_thread(find_libfaketime)

        prefix = f"{self.bridge_address}/{self.network.prefixlen}"
        await _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        await _run(["ip", "addr", "add", prefix, "dev", self.bridge])
        await _run(["ip", "link", "set", self.bridge, "up"])
        await self._allow_forwarding()
        for n in nodes:
            await self._make_namespace(n)

        for n in nodes:
            node_dir = run_dir / "nodes" / n
            data_dir, log_dir = node_dir / "data", node_dir / "log"
            data_dir.mkdir(parents=True, exist_ok=True)
            log_dir.mkdir(parents=True, exist_ok=True)
            if self._faketime is not None:
                self._clocks[n] = ClockControl(node_dir / "clock.faketime", self._faketime)
        listen = {n: {p: f"{self._address[n]}:{PORT + j}" for j, p in enumerate(ports)} for n in nodes}
        for n in nodes:
            node_dir = run_dir / "nodes" / n
            self._places[n] = NodePlace(
                name=n, listen=listen[n], client=dict(listen[n]), peers={m: dict(listen[m]) for m in nodes},
                data_dir=str(node_dir / "data"), log_dir=str(node_dir / "log"), python=sys.executable,
                advertise=dict(listen[n]),
            )
            shown = ", ".join(f"{p} {a}" for p, a in listen[n].items())
            self._note(n, f"namespace {self._ns[n]}, {self._address[n]} on {DEVICE}, "
                          f"veth {self._veth[n]} in bridge {self.bridge}; ports: {shown}")
        return dict(self._places)

    def _check_subnet_free(self) -> None:
        """Refuse a subnet that an address or a route of this machine already
        covers: the nodes would be unreachable, or someone else's hosts would
        receive the harness's traffic."""
        _, out = _run_now(["ip", "-j", "-4", "addr", "show"])
        for link in json.loads(out or "[]"):
            for info in link.get("addr_info", []):
                net = ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False)
                if net.overlaps(self.network):
                    raise NetnsError(
                        f"subnet {self.network} overlaps {link['ifname']}'s {info['local']}/{info['prefixlen']}: "
                        "a leftover of a crashed run (`harness clean` removes ours) or another network; "
                        "choose another --subnet")
        _, out = _run_now(["ip", "-j", "-4", "route", "show"])
        for route in json.loads(out or "[]"):
            dst = route.get("dst", "default")
            if dst == "default":
                continue
            # A broader route (a VPN's 10.0.0.0/8) loses to our /24 and is
            # fine; an equal or narrower one would take our traffic.
            net = ipaddress.IPv4Network(dst, strict=False)
            if net.subnet_of(self.network):
                raise NetnsError(f"subnet {self.network} is routed already ({dst} dev {route.get('dev')}); "
                                 "choose another --subnet")

    async def _allow_forwarding(self) -> None:
        """Let bridged frames between our namespaces through the root
        namespace's FORWARD chain (its policy is DROP where Docker runs)."""
        tagged = ["-i", self.bridge, "-o", self.bridge, "-m", "comment", "--comment", COMMENT + self.run_id,
                  "-j", "ACCEPT"]
        code, _ = await _run(["iptables", "-w", "-I", "FORWARD", "1", *tagged], check=False)
        if code == 0:
            self._forward_rule = tagged
            return
        # No comment match in this kernel: the bridge's name still says whose it is.
        bare = ["-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
        await _run(["iptables", "-w", "-I", "FORWARD", "1", *bare])
        self._forward_rule = bare

    async def _make_namespace(self, node: str) -> None:
        ns, veth, address = self._ns[node], self._veth[node], self._address[node]
        await _run(["ip", "netns", "add", ns])
        # Made with its inner end in the namespace already: the pair never
        # exists half-placed, and deleting the namespace deletes both ends.
        await _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", DEVICE, "netns", ns])
        await _run(["ip", "link", "set", veth, "master", self.bridge, "up"])
        await _run(["ip", "-n", ns, "addr", "add", f"{address}/{self.network.prefixlen}", "dev", DEVICE])
        await _run(["ip", "-n", ns, "link", "set", DEVICE, "up"])
        await _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        create_chain, jump = commands.partition_setup()
        await _run(_in_ns(ns, create_chain), check=False)  # fails only if the chain exists
        await _run(_in_ns(ns, jump))

    def capabilities(self) -> BackendCapabilities:
        """What works here: clock skew needs a working libfaketime, packet
        faults netem in the kernel."""
        library = self._faketime if self._set_up else find_libfaketime()
        no_netem = netem_missing_reason()
        return BackendCapabilities(
            clock=library is not None,
            clock_reason="" if library is not None else f"no usable libfaketime: {libfaketime_missing_reason()}",
            packet=not no_netem,
            packet_reason=no_netem,
            power=(fuse := fuse_missing_reason()) is None,
            power_reason=f"no lazy disk on the netns backend: {fuse}" if fuse else "",
            wipe=True,
            extra={
                "links": "iptables DROP in each node's namespace (chain HARNESS from INPUT)",
                "packet": f"netem on {DEVICE} in the namespace and on the veth's outer end",
                "libfaketime": str(library) if library is not None else "",
            },
        )

    def namespace(self, node: str) -> str:
        """The node's network namespace (for `ip netns exec`)."""
        self._place(node)
        return self._ns[node]

    def veth(self, node: str) -> str:
        """The outer end of the node's veth pair, a port of the bridge."""
        self._place(node)
        return self._veth[node]

    async def clock_blind(self, node: str, argv: Sequence[str]) -> str | None:
        """Why `argv` would not see `set_clock`'s skew (a Go or statically
        linked program, read from its file on this machine, whose file
        system the namespaces share), else None."""
        self._place(node)
        found = await asyncio.to_thread(binaries.blindness, [str(a) for a in argv])
        return binaries.refusal(node, found.describe()) if found is not None else None

    # -- disks --------------------------------------------------------------------

    async def prepare_disks(self, nodes: Sequence[str]) -> None:
        """Mount a lazy disk (`harness.lazyfs`, a process of this machine,
        outside the namespaces, which share its file system) over each
        node's data directory, its files kept in `nodes/<node>/disk` until
        teardown unmounts it and moves them back. Before any `start`."""
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

    # -- processes ------------------------------------------------------------

    async def start(self, node: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        """Start the node's process in its namespace (`ip netns exec`, which
        execs it: same pid) in a session of its own, output appended to its
        log directory's stdout.log and stderr.log, under libfaketime when
        available. Raises if the node is running already."""
        place = self._place(node)
        argv = [str(a) for a in argv]
        environ = node_environ(env, self._clocks.get(node), self._faketime)
        proc = self._procs.start(node, _in_ns(self._ns[node], argv), environ, place.log_dir)
        self._state["pids"][node] = {"pid": proc.pid, "start": owner.start_time(proc.pid)}
        self._save_state()
        clock = f" clock={self._clocks[node].offset:+g}s" if node in self._clocks else " (no libfaketime)"
        self._note(node, f"start pid={proc.pid} in {self._ns[node]}{clock}: {shlex.join(argv)}")

    async def kill(self, node: str) -> None:
        """SIGKILL the node's process group and reap it; no-op if not running."""
        self._place(node)
        proc = await self._procs.kill(node)
        if proc is not None:
            self._note(node, f"kill pid={proc.pid}")
        if self._state.get("pids", {}).pop(node, None) is not None:
            self._save_state()

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

    # -- links, packets and clocks ------------------------------------------------

    async def cut(self, grudge: Grudge) -> None:
        """Replace the partition: every node's HARNESS chain drops exactly
        the packets from the nodes its grudge names (none: healed). The
        bridge's address, the harness's clients, is never dropped."""
        unknown = (set(grudge) | {m for sources in grudge.values() for m in sources}) - set(self._places)
        if unknown:
            raise ValueError(f"unknown nodes in grudge: {sorted(unknown)}")
        self._require_set_up()

        async def apply(node: str) -> None:
            # A node never drops its own address: it talks to itself over lo.
            sources = [self._address[m] for m in grudge.get(node, frozenset()) if m != node]
            for argv in commands.partition(sources):
                await _run(_in_ns(self._ns[node], argv))
            if sources:
                self._note(node, f"drops packets from {', '.join(sorted(grudge[node] - {node}))}")

        await _gather_all([apply(n) for n in self._places])

    async def shape(self, nodes: Sequence[str], shape: PacketShape) -> None:
        """Replace the packet shaping: traffic to and from each of `nodes`
        gets `shape` (netem on both ends of its veth; a link between two
        shaped nodes gets both, in series); every other node's is cleared."""
        unknown = set(nodes) - set(self._places)
        if unknown:
            raise ValueError(f"unknown nodes: {sorted(unknown)}")
        self._require_set_up()
        shaped = set(nodes)
        if shaped and shape != PacketShape() and netem_missing_reason():
            raise NetnsError(f"cannot shape packets: {netem_missing_reason()}")

        async def apply(node: str) -> None:
            wanted = shape if node in shaped else PacketShape()
            for device, run_in in ((DEVICE, self._ns[node]), (self._veth[node], None)):
                for argv in commands.netem(device, wanted):
                    # Clearing a device that has no netem fails, harmlessly.
                    clearing = argv == commands.netem_clear(device)[0]
                    await _run(_in_ns(run_in, argv) if run_in else argv, check=not clearing)
            if node in shaped:
                self._note(node, f"shape {shape}")

        await _gather_all([apply(n) for n in self._places])

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
        """Flush every node's HARNESS chain, remove every netem qdisc, reset
        every clock to +0, SIGCONT every running process; then raise if any
        of it failed."""
        if not self._places:
            return  # nothing set up (or torn down already): nothing to heal
        errors: list[BaseException] = []
        for step in (self.cut({}), self.shape([], PacketShape())):
            try:
                await step
            except Exception as e:
                errors.append(e)
        for clock in self._clocks.values():
            try:
                clock.set_offset(0.0)
            except OSError as e:
                errors.append(e)
        self._procs.cont_all()
        for node in self._places:
            self._note(node, "heal_all")
        if errors:
            raise NetnsError("heal_all: " + "; ".join(str(e) for e in errors))

    # -- logs and teardown ------------------------------------------------------

    async def collect_logs(self, node: str, dest: Path) -> list[Path]:
        """Copy the files of the node's log directory (kept relative) into
        `dest`; returns the copies. A file already in place is not copied."""
        source = Path(self._place(node).log_dir)
        return await asyncio.to_thread(copy_tree, source, Path(dest))

    async def teardown(self) -> None:
        """SIGKILL every process this backend started and any other left in
        its namespaces, reap them, delete the namespaces (with their veths
        and rules), the bridge and the FORWARD rule, remove the clock control
        files and the state file. The data and log directories stay: they
        belong to the run's record. Idempotent, and safe after a failed
        setup; raises, after doing all it can, if something would not go."""
        await asyncio.to_thread(self._teardown_now)

    def _teardown_now(self) -> None:
        killed, errors = self._procs.kill_all()
        for node, pid in killed:
            self._note(node, f"teardown: kill pid={pid}")
        existing = _namespaces() if self._ns else set()
        ours = [ns for ns in self._ns.values() if ns in existing]
        # Anything else in our namespaces (a test's helper, say) is ours to end too.
        stray = [pid for ns in ours for pid in _pids_in(ns)]
        if stray:
            errors += [f"pid {p} in a namespace of ours survived SIGKILL" for p in _kill_and_wait(stray)]
        errors += self._disks.unmount_all()
        for ns in ours:
            try:
                _run_now(["ip", "netns", "del", ns])
            except NetnsError as e:
                errors.append(str(e))
        # The bridge first; a veth normally goes with its namespace, but the
        # kernel frees a namespace asynchronously, so one may linger a moment.
        for link in [self.bridge, *self._veth.values()] if self._state else []:
            if link in _links():
                try:
                    _run_now(["ip", "link", "del", link])
                except NetnsError as e:
                    if link in _links():
                        errors.append(str(e))
        if self._forward_rule is not None:
            try:
                _run_now(["iptables", "-w", "-D", "FORWARD", *self._forward_rule])
            except NetnsError as e:
                if any(_our_forward_rule_id(rule) == self.run_id for rule in _forward_rules()):
                    errors.append(str(e))
            self._forward_rule = None if not errors else self._forward_rule
        for clock in self._clocks.values():
            with contextlib.suppress(OSError):
                clock.remove()
        self._clocks.clear()
        if self._state and not errors:
            with contextlib.suppress(OSError):
                self._state_path().unlink(missing_ok=True)
        if errors:
            # Keep the state file: `clean()` finishes the job later.
            raise NetnsError("netns teardown incomplete (`harness clean` retries): " + "; ".join(errors))
        self._places.clear()
        self._ns.clear()
        self._veth.clear()
        self._address.clear()
        self._state = {}
        self._set_up = False
        atexit.unregister(self._atexit)

    def _atexit(self) -> None:
        """At interpreter exit, if teardown never ran: no node, namespace or
        rule outlives us."""
        with contextlib.suppress(Exception):
            self._teardown_now()

    # -- helpers ----------------------------------------------------------------

    def _place(self, node: str) -> NodePlace:
        try:
            return self._places[node]
        except KeyError:
            raise ValueError(f"unknown node {node!r} (set up: {sorted(self._places)})") from None

    def _require_set_up(self) -> None:
        if not self._places:
            raise RuntimeError("NetnsBackend is not set up")

    def _state_path(self) -> Path:
        return self.state_dir / f"{self.run_id}.json"

    def _save_state(self) -> None:
        if self._state:
            _write_json(self._state_path(), self._state)

    def _note(self, node: str, text: str) -> None:
        place = self._places.get(node)
        if place is not None:
            note(place.log_dir, text)


async def _gather_all(steps: Sequence[Any]) -> None:
    """Run every step to its end (none left running in the background), then
    raise the first failure."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


# -- harness clean --------------------------------------------------------------


def clean(state_dir: Path | str = STATE_DIR) -> list[str]:
    """Remove what crashed netns runs left behind; one line per thing removed.

    Ours is only: a state file in `state_dir` and the node processes it
    records (each checked by pid *and* start time, so a reused pid is never
    hit); namespaces `hx<id>-<node>` and any process inside them; bridges
    `hxbr<id>` and veths `hx<id>v<i>`; FORWARD rules tagged
    `dynamo-harness:netns:<id>` (or accepting exactly between the two sides
    of a bridge `hxbr<id>`). A run whose owner process is still alive is
    left alone, whatever its names. Needs root to remove anything."""
    state_dir = Path(state_dir)
    removed: list[str] = []
    live: set[str] = set()
    dead_states: list[Path] = []
    recorded: list[int] = []
    clock_files: list[Path] = []
    if state_dir.is_dir():
        for path in sorted(state_dir.iterdir()):
            match = STATE_RE.match(path.name)
            if not match:
                continue
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                state = {}
            made_by = state.get("owner", {}) if isinstance(state, dict) else {}
            if owner.same_process(made_by.get("pid"), made_by.get("start")):
                live.add(match.group(1))
                continue
            dead_states.append(path)
            if not isinstance(state, dict):
                continue
            for entry in dict(state.get("pids") or {}).values():
                if isinstance(entry, dict) and owner.same_process(entry.get("pid"), entry.get("start")):
                    recorded.append(entry["pid"])
            if state.get("run_dir"):
                clock_files += [Path(state["run_dir"]) / "nodes" / str(node) / "clock.faketime"
                                for node in dict(state.get("namespaces") or {})]

    def dead(name: str, pattern: re.Pattern[str]) -> bool:
        match = pattern.match(name)
        return match is not None and match.group(1) not in live

    namespaces = sorted(ns for ns in _namespaces() if dead(ns, NAMESPACE_RE))
    victims = {pid: "recorded" for pid in recorded}
    for ns in namespaces:
        for pid in _pids_in(ns):
            victims.setdefault(pid, f"in {ns}")
    complete = True  # else the state files stay, for a later clean to finish with
    if victims:
        survivors = set(_kill_and_wait(sorted(victims), groups=frozenset(recorded)))
        removed += [f"killed process {pid} ({why})" for pid, why in sorted(victims.items()) if pid not in survivors]
        removed += [f"could not kill process {pid} ({why})" for pid, why in sorted(victims.items())
                    if pid in survivors]
        complete = not survivors
    for ns in namespaces:
        if _run_now(["ip", "netns", "del", ns], check=False)[0] == 0:
            removed.append(f"deleted network namespace {ns}")
        else:
            complete = False
    links = _links()
    # Bridges first: a veth whose namespace is gone went with it.
    for link in sorted(x for x in links if dead(x, BRIDGE_RE)) + sorted(x for x in links if dead(x, VETH_RE)):
        if _run_now(["ip", "link", "del", link], check=False)[0] == 0:
            removed.append(f"deleted link {link}")
    for rule in _forward_rules():
        run_id = _our_forward_rule_id(rule)
        if (run_id is not None and run_id not in live
                and _run_now(["iptables", "-w", "-D", *rule[1:]], check=False)[0] == 0):
            removed.append(f"deleted iptables rule {shlex.join(rule)}")
    for path in clock_files:
        if path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(f"removed clock control file {path}")
    for path in dead_states if complete else []:
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(f"removed state file {path}")
    return removed
