"""The `docker` backend: one container per node on a network of the
harness's own, real packet drops with iptables inside the containers.

Layout of a run with id `<id>` (six hex digits):

- a user-defined bridge network `hx-<id>` on `subnet` (default
  10.77.0.0/24; the gateway, which is this host, takes the first address);
- node i (0-based) in container `hx-<id>-<node>` at the subnet's (i+2)th
  address, from the node image (`harness.backends.image`: built and cached
  on first use, or `image=`). Port j of the names the system asks for
  (`setup`'s `ports`: kvnode "client"; etcd "client", "peer") is 7000 + j
  on that address. In its `NodePlace`, `listen`, `client` and `advertise`
  are those addresses (the harness dials the containers from the host), and
  `peers[m]` is node m's own `listen`. Every container and the network
  carry the labels `dynamo-harness=1` and `dynamo-harness.run=<id>`, which
  is how `clean()` finds (only) ours;
- each container runs `sleep infinity` under Docker's init (tini, which
  reaps any orphan), with only the `NET_ADMIN` capability added (for
  iptables and tc; `--privileged` fails on some hosts and is more than we
  need). The node's process is started separately with `docker exec`, so it
  can be killed, paused and restarted while the container, its address and
  its files stay;
- inside, the node's files live in `/var/lib/harness/<node>/`: `data/`,
  `log/` (the process's `stdout.log` and `stderr.log`, and the node's own
  log), `clock.faketime` (libfaketime's control file) and `node.pid`.
  On the host, `<run_dir>/nodes/<node>/log/backend.log` records what this
  backend did to the node, and when (where `collect_logs` into that
  directory puts the container's logs beside it, as the local backend has them).

Processes: `start` runs a tiny `sh` wrapper through a detached exec that
writes its own pid to `node.pid` and then `exec`s the node, so the pid is
the node's. `kill`/`pause`/`resume` send SIGKILL/SIGSTOP/SIGCONT to that pid
from inside the container; `running` asks the engine whether that exec is
still running (no process is spawned for it), and `exited` reads that
exec's exit code (the node's own, since the wrapper execs it; the engine
reports a process killed by signal N as 128 + N, as a shell does). Nothing
is ever signalled by name.

Faults, as argument lists from `harness.backends.commands`, run with
`docker exec` in the containers this backend created and nowhere else:

- links: each node drops packets *from* the nodes of its grudge in the
  `HARNESS` iptables chain of its own container (every port at once);
  healing flushes that chain only. The harness's clients dial the containers from the host (through
  the bridge's gateway address), which no grudge names: like Jepsen's
  control node they are never partitioned.
- packets: `tc qdisc ... netem` on the container's `eth0`, which shapes what
  the node *sends* (requests to its peers and answers to everyone). A kernel
  built without netem (CONFIG_NET_SCH_NETEM) cannot do this: `setup` probes
  it, and `capabilities().packet` says so.
- clocks: every node starts under the libfaketime vendored in the image's
  virtual environment, following its control file (wall clock only;
  monotonic time stays true), which `set_clock` rewrites atomically.
  `clock_blind` reads the program's file inside the container
  (`python -m harness.backends.binaries`, with the image's pyelftools): a
  Go or statically linked program would not see the skew.

`teardown` removes the containers (force) and the network, on every path
(and at interpreter exit, if it never ran); `clean()` removes whatever a
crashed run left behind.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import io
import ipaddress
import logging
import re
import secrets
import shlex
import tarfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
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
from harness.backends.faketime import env as faketime_env
from harness.backends.image import FAKETIME_LINK, FAKETIME_MISSING, VENV, build_image
from harness.backends.probe import docker_problem
from harness.backends.processes import note

__all__ = ["LABEL", "PREFIX", "DockerBackend", "clean"]

log = logging.getLogger("harness.backends.docker")

PREFIX = "hx"  # network hx-<id>, containers hx-<id>-<node>
LABEL = "dynamo-harness"  # =1 on everything this backend creates
RUN_LABEL = "dynamo-harness.run"
NODE_LABEL = "dynamo-harness.node"
OWNER_LABEL = "dynamo-harness.owner"  # "<pid>:<start time>" of the harness that made it
PORT = 7000  # the first port; the j-th name of `setup`'s `ports` gets PORT + j
DEVICE = "eth0"
NODE_ROOT = "/var/lib/harness"
PYTHON = f"{VENV}/bin/python"
WAIT_S = 30.0  # for a killed process's exec to end
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Writes the wrapper's pid (which `exec` hands on to the node) to $1
# atomically, then becomes the node with its output appended to $2 and $3.
_START = ('pidfile=$1 out=$2 err=$3; shift 3; echo $$ > "$pidfile.tmp" && mv "$pidfile.tmp" "$pidfile" '
          '&& exec "$@" </dev/null >>"$out" 2>>"$err"')
# Replaces a file atomically, so libfaketime never reads a half-written one.
_WRITE = 'printf "%s\\n" "$2" > "$1.tmp" && mv "$1.tmp" "$1"'


class _Node:
    """What the backend knows of one node's container and process."""

    def __init__(self, name: str, container: Any, address: str, host_dir: Path) -> None:
        self.name = name
        self.container = container
        self.address = address
        self.dir = f"{NODE_ROOT}/{name}"
        self.host_dir = host_dir  # <run_dir>/nodes/<node>/log on the host
        self.exec_id: str | None = None  # the detached exec running the node
        self.pid: int | None = None  # its pid inside the container
        self.dropping: frozenset[str] | None = frozenset()  # None: unknown (a failed update)
        self.clock = 0.0

    @property
    def pidfile(self) -> str:
        return f"{self.dir}/node.pid"

    @property
    def clock_file(self) -> str:
        return f"{self.dir}/clock.faketime"


def _connect() -> Any:
    """A Docker SDK client for the engine of $DOCKER_HOST (or the local
    socket); OSError saying so when none answers."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        raise OSError(f"no Docker engine answers ({e}); start one, e.g. as root "
                      "`(setsid dockerd >/var/log/dockerd.log 2>&1 &)`") from None
    return client


class DockerBackend:
    """Nodes in containers on a network of our own; see the module docstring."""

    name = "docker"

    def __init__(self, image: str | None = None, base_image: str | None = None,
                 subnet: str = "10.77.0.0/24") -> None:
        """`image`: the node image to use as it is (default: `build_image`,
        cached). `base_image`: a local image to build the node image on
        (default: the debootstrap base). `subnet`: the network's addresses.
        Raises ValueError for a bad subnet or a missing image, OSError when
        no Docker engine answers."""
        try:
            self.subnet = ipaddress.ip_network(subnet)
        except ValueError as e:
            raise ValueError(f"--subnet {subnet}: {e}") from None
        if self.subnet.version != 4:
            raise ValueError(f"--subnet {subnet}: the docker backend needs an IPv4 subnet")
        self.image = image
        self.base_image = base_image
        self.client = _connect()
        if image is not None:
            import docker

            try:
                self.client.images.get(image)
            except docker.errors.ImageNotFound:
                raise ValueError(f"--image {image}: no such image on this Docker engine "
                                 "(it is never pulled; see `harness docker build`)") from None
        self.run_id: str | None = None
        self.network: Any = None
        self._nodes: dict[str, _Node] = {}
        self._places: dict[str, NodePlace] = {}
        self._clock_reason: str | None = None  # None: not probed yet; "": works
        self._packet_reason: str | None = None
        # The threads that create the network and the containers: teardown
        # waits for them, so that a creation still running when setup was
        # cancelled cannot leave a container behind after the removal.
        self._creating: concurrent.futures.ThreadPoolExecutor | None = None
        self._set_up = False

    @classmethod
    def from_options(cls, options: BackendOptions) -> DockerBackend:
        """The docker backend with the run's `--image` or `--base-image`
        and `--subnet` (OSError saying why when no Docker engine answers or it
        cannot import an image here: tried once, see probe.py)."""
        problem = docker_problem()
        if problem:
            raise OSError(problem)
        return cls(image=options.image, base_image=options.base_image, subnet=options.subnet)

    # -- places ---------------------------------------------------------------

    @property
    def network_name(self) -> str | None:
        return f"{PREFIX}-{self.run_id}" if self.run_id else None

    def container_name(self, node: str) -> str:
        return f"{PREFIX}-{self.run_id}-{node}"

    async def setup(self, nodes: Sequence[str], run_dir: Path,
                    ports: Sequence[str] = DEFAULT_PORTS) -> dict[str, NodePlace]:
        """Build or find the image, create the network and one container per
        node (addresses, directories, the HARNESS chain, a +0 clock file),
        and probe netem and libfaketime; the j-th of `ports` is 7000 + j on
        each node's address. Called once, before any `start`; on failure
        removes what it made and raises."""
        if self._set_up:
            raise RuntimeError("DockerBackend.setup called twice without teardown")
        nodes, ports = list(nodes), list(ports)
        if not nodes or len(set(nodes)) != len(nodes):
            raise ValueError(f"need distinct node names, got {nodes}")
        if not ports or len(set(ports)) != len(ports):
            raise ValueError(f"need distinct port names, got {ports}")
        for n in nodes:
            if not _NODE_NAME.match(n):
                raise ValueError(f"node name {n!r}: letters, digits, '_', '.' and '-' only")
        if self.subnet.num_addresses - 3 < len(nodes):  # network, gateway, broadcast
            raise ValueError(f"{len(nodes)} nodes do not fit in {self.subnet}")
        self._set_up = True
        self.run_id = secrets.token_hex(3)
        atexit.register(self._remove_at_exit)
        try:
            return await self._setup(nodes, Path(run_dir), ports)
        except BaseException:
            await self.teardown()
            raise

    async def _setup(self, nodes: list[str], run_dir: Path, ports: list[str]) -> dict[str, NodePlace]:
        import docker

        image = self.image
        if image is None:
            built = await asyncio.to_thread(build_image, base_image=self.base_image, progress=log.info,
                                            client=self.client)
            image = built.tag
        labels = {LABEL: "1", RUN_LABEL: str(self.run_id), OWNER_LABEL: owner.token()}
        self._creating = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="hx-create")
        creating = self._creating
        hosts = list(self.subnet.hosts())
        gateway, addresses = str(hosts[0]), [str(a) for a in hosts[1:len(nodes) + 1]]
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(self.subnet),
                                                                            gateway=gateway)])
        try:
            self.network = await asyncio.wrap_future(creating.submit(
                self.client.networks.create, self.network_name, driver="bridge", ipam=ipam, labels=labels))
        except docker.errors.APIError as e:
            raise RuntimeError(f"cannot create the network {self.network_name} on {self.subnet}: "
                               f"{e.explanation or e} (a crashed run's network? `harness clean`; "
                               "or choose another --subnet)") from None
        log.info("docker: network %s on %s, image %s", self.network_name, self.subnet, image)

        async def make(node: str, address: str) -> None:
            container = await asyncio.wrap_future(
                creating.submit(self._create_container, image, node, address, labels))
            host_dir = run_dir / "nodes" / node / "log"
            host_dir.mkdir(parents=True, exist_ok=True)
            self._nodes[node] = _Node(node, container, address, host_dir)
            await self._prepare(self._nodes[node])

        # Every creation ends (made or failed) before an error is raised.
        made = await asyncio.gather(*(make(n, a) for n, a in zip(nodes, addresses, strict=True)),
                                    return_exceptions=True)
        for outcome in made:
            if isinstance(outcome, BaseException):
                raise outcome
        # Kernel features are the host's: one container tells for all.
        first = self._nodes[nodes[0]]
        self._packet_reason, self._clock_reason = await asyncio.gather(self._probe_netem(first),
                                                                       self._probe_faketime(first))
        listen = {n: {p: f"{self._nodes[n].address}:{PORT + j}" for j, p in enumerate(ports)} for n in nodes}
        for n in nodes:
            node = self._nodes[n]
            self._places[n] = NodePlace(
                name=n, listen=listen[n], client=dict(listen[n]), peers={m: dict(listen[m]) for m in nodes},
                data_dir=f"{node.dir}/data", log_dir=f"{node.dir}/log", python=PYTHON,
                advertise=dict(listen[n]),
            )
            shown = ", ".join(f"{p} {a}" for p, a in listen[n].items())
            self._note(n, f"container {self.container_name(n)} at {node.address} ({image}); ports: {shown}")
        return dict(self._places)

    def _create_container(self, image: str, node: str, address: str, labels: dict[str, str]) -> Any:
        endpoint = self.client.api.create_endpoint_config(ipv4_address=address)
        return self.client.containers.run(
            image, ["sleep", "infinity"], name=self.container_name(node), hostname=node,
            labels={**labels, NODE_LABEL: node}, cap_add=["NET_ADMIN"], init=True, detach=True,
            network=self.network_name, networking_config={self.network_name: endpoint},
        )

    async def _prepare(self, node: _Node) -> None:
        """The node's directories, a +0 clock file, and the HARNESS chain."""
        lines = [["mkdir", "-p", f"{node.dir}/data", f"{node.dir}/log"],
                 ["sh", "-c", _WRITE, "write", node.clock_file, commands.clock_file_content(0.0)],
                 *commands.partition_setup()]
        code, out = await self._sh(node, lines)
        if code != 0:
            raise RuntimeError(f"cannot prepare {node.name}'s container: {out.strip()[-500:]}")

    async def _probe_netem(self, node: _Node) -> str:
        code, out = await self._exec(node, ["tc", "qdisc", "replace", "dev", DEVICE, "root", "netem",
                                            "delay", "0ms"])
        if code != 0:
            return f"tc netem does not work in the containers ({out.strip()}): this kernel may lack CONFIG_NET_SCH_NETEM"
        await self._sh(node, commands.netem_clear(DEVICE), check=False)
        return ""

    async def _probe_faketime(self, node: _Node) -> str:
        code, out = await self._exec(node, ["sh", "-c", 'test -e "$1" || cat "$2"', "probe",
                                            FAKETIME_LINK, FAKETIME_MISSING])
        if code == 0:
            return ""
        return f"the image has no usable libfaketime: {out.strip() or 'not found'}"

    def capabilities(self) -> BackendCapabilities:
        """Clock skew needs the image's libfaketime, packet faults the
        kernel's netem; both are probed at setup (assumed before)."""
        note = "" if self._set_up else "not probed before setup"
        return BackendCapabilities(
            clock=not self._clock_reason,
            clock_reason=self._clock_reason or "",
            packet=not self._packet_reason,
            packet_reason=self._packet_reason or "",
            extra={
                "links": "iptables DROP in each receiving container (chain HARNESS)",
                "packet": f"tc netem on each container's {DEVICE} (what the node sends)",
                "libfaketime": FAKETIME_LINK,
                **({"note": note} if note else {}),
            },
        )

    # -- processes ------------------------------------------------------------

    async def start(self, node: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        """Start the node's process in its container (a detached exec),
        under libfaketime when the image has it, output appended to its log
        directory's stdout.log and stderr.log; returns once its pid is known.
        Raises if it is running already."""
        n = self._node(node)
        if self.running(node):
            raise RuntimeError(f"{node} is running already (pid {n.pid})")
        full_env = dict(env)
        if self._clock_reason == "":
            # faketime.env's variables, with this container's paths (not
            # resolved on the host, where they do not exist).
            full_env.update(faketime_env(Path(n.clock_file), Path(FAKETIME_LINK)))
            full_env["LD_PRELOAD"] = " ".join(p for p in (FAKETIME_LINK, env.get("LD_PRELOAD", "")) if p)
            full_env["FAKETIME_TIMESTAMP_FILE"] = n.clock_file
        log_dir = f"{n.dir}/log"
        wrapper = ["sh", "-c", _START, "harness-start", n.pidfile, f"{log_dir}/stdout.log",
                   f"{log_dir}/stderr.log", *[str(a) for a in argv]]
        previous = n.pid
        api = self.client.api

        def launch() -> str:
            exec_id = api.exec_create(n.container.id, wrapper, environment=full_env, stdout=False,
                                      stderr=False)["Id"]
            api.exec_start(exec_id, detach=True)
            return str(exec_id)

        n.exec_id = await asyncio.to_thread(launch)
        n.pid = await self._read_pid(n, previous)
        clock = f" clock={n.clock:+g}s" if self._clock_reason == "" else " (no libfaketime)"
        self._note(node, f"start pid={n.pid}{clock}: {shlex.join(str(a) for a in argv)}")

    async def _read_pid(self, n: _Node, previous: int | None) -> int | None:
        """The pid the wrapper wrote (a new one: pids in a container only
        grow), or None if the process ended before writing it."""
        deadline = time.monotonic() + 10.0
        while True:
            code, out = await self._exec(n, ["cat", n.pidfile])
            if code == 0 and out.strip().isdigit() and int(out.strip()) != previous:
                return int(out.strip())
            if not self.running(n.name) or time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)

    async def kill(self, node: str) -> None:
        """SIGKILL the node's process and wait until it is gone; no-op if
        not running."""
        n = self._node(node)
        if not self.running(node) or n.pid is None:
            return
        await self._signal(n, "KILL")
        self._note(node, f"kill pid={n.pid}")
        deadline = time.monotonic() + WAIT_S
        while self.running(node):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node} (pid {n.pid}) still runs {WAIT_S:g} s after SIGKILL")
            await asyncio.sleep(0.02)
        n.exec_id = None  # ended by us: `exited` has nothing to report

    async def pause(self, node: str) -> None:
        """SIGSTOP: the node keeps its sockets and answers nothing."""
        n = self._node(node)
        if self.running(node) and n.pid is not None:
            await self._signal(n, "STOP")
            self._note(node, f"pause pid={n.pid}")

    async def resume(self, node: str) -> None:
        """SIGCONT."""
        n = self._node(node)
        if self.running(node) and n.pid is not None:
            await self._signal(n, "CONT")
            self._note(node, f"resume pid={n.pid}")

    def running(self, node: str) -> bool:
        """True while the node's exec runs (a paused process counts). One
        call to the engine, no process spawned."""
        import docker

        n = self._node(node)
        if n.exec_id is None:
            return False
        try:
            return bool(self.client.api.exec_inspect(n.exec_id)["Running"])
        except docker.errors.DockerException:
            return False

    async def exited(self, node: str) -> Exited | None:
        """How the node's process ended on its own: its exec's exit code (a
        process killed by signal N: 128 + N, as the engine reports it).
        None while it runs, if it never started, or after `kill`. One call
        to the engine, in a thread."""
        import docker

        n = self._node(node)
        exec_id = n.exec_id
        if exec_id is None:
            return None
        try:
            state = await asyncio.to_thread(self.client.api.exec_inspect, exec_id)
        except docker.errors.NotFound:
            return Exited(None)  # its container is gone
        if state.get("Running"):
            return None
        code = state.get("ExitCode")
        return Exited(int(code) if isinstance(code, int) else None)

    async def clock_blind(self, node: str, argv: Sequence[str]) -> str | None:
        """Why `argv` would not see `set_clock`'s skew (a Go or statically
        linked program), read from its file inside the node's container,
        where PATH and `#!` lines are the container's; else None. Raises
        RuntimeError if the image cannot tell (built before it could)."""
        n = self._node(node)
        code, out = await self._exec(n, [PYTHON, "-m", "harness.backends.binaries", *[str(a) for a in argv]])
        answer = binaries.answer_of(out)
        if code != 0 or answer is None or "error" in answer:
            why = answer.get("error") if answer else out.strip()[-300:]
            raise RuntimeError(f"cannot tell whether {node}'s program sees a skewed clock: {why} "
                               "(rebuild the node image: `harness docker build`)")
        blind = answer.get("blind")
        return binaries.refusal(node, str(blind)) if blind else None

    def pid(self, node: str) -> int | None:
        """The node's pid inside its container while it runs (tests, logs)."""
        n = self._node(node)
        return n.pid if self.running(node) else None

    async def _signal(self, n: _Node, signal_name: str) -> None:
        code, out = await self._exec(n, ["sh", "-c", 'kill -s "$1" "$2"', "signal", signal_name, str(n.pid)])
        if code != 0 and self.running(n.name):
            raise RuntimeError(f"cannot send SIG{signal_name} to {n.name} (pid {n.pid}): {out.strip()}")

    # -- links, packets, clocks -----------------------------------------------

    async def cut(self, grudge: Grudge) -> None:
        """Replace the partition: each node drops packets from the addresses
        of the nodes its grudge names (nodes not named drop nothing)."""
        for node, others in grudge.items():
            self._node(node)
            for other in others:
                self._node(other)

        async def update(n: _Node) -> None:
            want = frozenset(grudge.get(n.name, frozenset()))
            if n.dropping == want:
                return
            n.dropping = None  # unknown until the rules are in
            sources = [self._nodes[m].address for m in want]
            code, out = await self._sh(n, commands.partition(sources))
            if code != 0:
                raise RuntimeError(f"iptables in {n.name}'s container failed: {out.strip()[-500:]}")
            n.dropping = want
            self._note(n.name, f"drops traffic from {', '.join(sorted(want))}" if want else "drops nothing")

        await asyncio.gather(*(update(n) for n in self._nodes.values()))

    async def shape(self, nodes: Sequence[str], shape: PacketShape) -> None:
        """Replace the netem shaping of what these nodes send. Clearing
        (an all-zero shape) always succeeds; any other shape raises where
        netem does not work (see `capabilities`)."""
        targets = [self._node(n) for n in nodes]
        clear = not any((shape.delay_ms, shape.jitter_ms, shape.loss, shape.duplicate, shape.reorder))
        if self._packet_reason:
            if clear:
                return
            raise RuntimeError(f"cannot shape packets: {self._packet_reason}")

        async def apply(n: _Node) -> None:
            code, out = await self._sh(n, commands.netem(DEVICE, shape))
            if code != 0 and not clear:  # clearing fails where there was no qdisc: fine
                raise RuntimeError(f"tc in {n.name}'s container failed: {out.strip()[-500:]}")
            self._note(n.name, f"shape {shape}")

        await asyncio.gather(*(apply(n) for n in targets))

    async def set_clock(self, node: str, offset_s: float) -> None:
        """Offset the node's wall clock by offset_s from true time (0 resets),
        at once, while it runs; its monotonic clock is untouched."""
        n = self._node(node)
        if self._clock_reason:
            raise RuntimeError(f"cannot set {node}'s clock: {self._clock_reason}")
        await self._write_clock(n, offset_s)
        self._note(node, f"clock {offset_s:+g}s")

    async def _write_clock(self, n: _Node, offset_s: float) -> None:
        code, out = await self._exec(n, ["sh", "-c", _WRITE, "write", n.clock_file,
                                         commands.clock_file_content(offset_s)])
        if code != 0:
            raise RuntimeError(f"cannot write {n.name}'s clock file: {out.strip()}")
        n.clock = float(offset_s)

    async def heal_all(self) -> None:
        """Flush every HARNESS chain, remove every netem qdisc, reset every
        clock to +0 and SIGCONT every node: one exec per container, each
        step tried even if another fails."""

        async def heal(n: _Node) -> None:
            lines = [*commands.heal(), ["sh", "-c", _WRITE, "write", n.clock_file,
                                        commands.clock_file_content(0.0)]]
            if not self._packet_reason:
                lines += commands.netem_clear(DEVICE)
            if n.pid is not None and self.running(n.name):
                lines.append(["kill", "-s", "CONT", str(n.pid)])
            await self._sh(n, lines, check=False)
            n.dropping, n.clock = frozenset(), 0.0
            self._note(n.name, "heal_all")

        await asyncio.gather(*(heal(n) for n in self._nodes.values()))

    # -- commands -------------------------------------------------------------

    async def exec(self, node: str, argv: Sequence[str], *, clock: bool = False) -> tuple[int, str]:
        """Run a command in the node's container and return its exit code
        and output (stdout and stderr together). `clock=True` runs it under
        the node's libfaketime settings, as the node itself runs."""
        n = self._node(node)
        env: dict[str, str] | None = None
        if clock:
            if self._clock_reason:
                raise RuntimeError(f"no clock control in {node}'s container: {self._clock_reason}")
            env = {**faketime_env(Path(n.clock_file), Path(FAKETIME_LINK)),
                   "LD_PRELOAD": FAKETIME_LINK, "FAKETIME_TIMESTAMP_FILE": n.clock_file}
        return await self._exec(n, [str(a) for a in argv], env)

    async def _exec(self, n: _Node, argv: list[str], env: Mapping[str, str] | None = None) -> tuple[int, str]:
        def run() -> tuple[int, str]:
            result = n.container.exec_run(argv, environment=dict(env) if env else None)
            return int(result.exit_code), bytes(result.output or b"").decode("utf-8", "replace")

        return await asyncio.to_thread(run)

    async def _sh(self, n: _Node, lines: Sequence[Sequence[str]], *, check: bool = True) -> tuple[int, str]:
        """Several commands in one exec (one round trip to the engine): each
        line is an argument list quoted by `commands.shell_line`. `check`:
        stop at the first failure and return its code; else run them all."""
        script = "\n".join(commands.shell_line(line) for line in lines)
        return await self._exec(n, ["sh", "-c", ("set -e\n" if check else "") + script])

    # -- logs and teardown ----------------------------------------------------

    async def collect_logs(self, node: str, dest: Path) -> list[Path]:
        """Copy the files of the node's log directory (kept relative) out of
        its container into `dest`, with this backend's `backend.log`;
        returns the copies."""
        n = self._node(node)
        dest = Path(dest)

        def copy() -> list[Path]:
            stream, _ = n.container.get_archive(f"{n.dir}/log")
            return _extract(b"".join(stream), dest)

        copied = await asyncio.to_thread(copy)
        own = n.host_dir / "backend.log"
        if own.exists():
            target = dest / "backend.log"
            if target.resolve() != own.resolve():
                dest.mkdir(parents=True, exist_ok=True)
                target.write_bytes(own.read_bytes())
            copied.append(target)
        return copied

    async def teardown(self) -> None:
        """Remove every container (with its processes) and the network.
        Idempotent, and safe after a failed setup; a removal that fails is
        raised after the others were tried."""
        nodes = list(self._nodes.values())
        for n in nodes:
            self._note(n.name, "teardown: container removed")
        creating, self._creating = self._creating, None
        try:
            if creating is not None:
                await asyncio.to_thread(creating.shutdown, wait=True)
            await asyncio.to_thread(self._remove_now)
        finally:
            self._nodes.clear()
            self._places.clear()
            self._set_up = False
            atexit.unregister(self._remove_at_exit)

    def _remove_now(self) -> None:
        """Remove our containers and network (by their run label, so that a
        container whose creation was interrupted is found too)."""
        if self.run_id is None:
            return
        errors = _remove_labelled(self.client, f"{RUN_LABEL}={self.run_id}", lambda _: None)
        self.network = None
        if errors:
            raise RuntimeError("teardown: " + "; ".join(errors))

    def _remove_at_exit(self) -> None:
        """At interpreter exit, if teardown never ran: no container outlives us."""
        try:
            self._remove_now()
        except Exception as e:  # too late to raise; say what is left
            log.warning("docker backend: %s (`harness clean` removes it)", e)

    # -- helpers --------------------------------------------------------------

    def _node(self, node: str) -> _Node:
        try:
            return self._nodes[node]
        except KeyError:
            raise ValueError(f"unknown node {node!r} (set up: {sorted(self._nodes)})") from None

    def _note(self, node: str, text: str) -> None:
        """A line in the node's backend.log on the host."""
        n = self._nodes.get(node)
        if n is not None:
            note(n.host_dir, text)


def _extract(data: bytes, dest: Path) -> list[Path]:
    """The regular files of a `get_archive` tar (one top directory, which is
    dropped) written under dest; anything that would land outside is skipped."""
    copied: list[Path] = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts[1:]
            if not member.isfile() or not parts or ".." in parts or PurePosixPath(member.name).is_absolute():
                continue
            source = tar.extractfile(member)
            if source is None:
                continue
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())
            copied.append(target)
    return copied


def _remove_labelled(client: Any, label: str, report: Any) -> list[str]:
    """Remove the containers (force) and then the networks carrying `label`;
    `report(line)` for each removed; returns the errors."""
    import docker

    errors: list[str] = []

    def remove(container: Any) -> None:
        try:
            container.remove(force=True)
            report(f"removed container {container.name}")
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            errors.append(f"container {container.name}: {e.explanation or e}")

    # In parallel: the engine stops and unplugs several containers at once
    # faster than one after another.
    containers = client.containers.list(all=True, filters={"label": label})
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(remove, containers))
    for network in client.networks.list(filters={"label": label}):
        try:
            network.remove()
            report(f"removed network {network.name}")
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            errors.append(f"network {network.name}: {e.explanation or e}")
    return errors


def clean() -> list[str]:
    """Remove every container and network that a docker backend made (label
    `dynamo-harness=1`) and nothing else; a line per thing removed. Images
    stay: they are the build cache. No engine answering: nothing to do."""
    try:
        client = _connect()
    except OSError:
        return []
    lines: list[str] = []
    runs: dict[str, str] = {}  # run id -> owner token
    for thing in [*client.containers.list(all=True, filters={"label": f"{LABEL}=1"}),
                  *client.networks.list(filters={"label": f"{LABEL}=1"})]:
        labels = (thing.attrs.get("Config", {}) or {}).get("Labels") or thing.attrs.get("Labels") or {}
        runs.setdefault(str(labels.get(RUN_LABEL, "")), str(labels.get(OWNER_LABEL, "")))
    for run, run_owner in sorted(runs.items()):
        if owner.alive(run_owner):
            lines.append(f"left run {run} alone: its harness (pid {run_owner.split(':')[0]}) is still running")
            continue
        label = f"{RUN_LABEL}={run}" if run else f"{LABEL}=1"
        errors = _remove_labelled(client, label, lines.append)
        lines += [f"could not remove {e}" for e in errors]
    return lines


