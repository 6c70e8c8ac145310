"""A simulated world: a kvnode cluster, its clients and its faults in one
process, on `harness.sim.loop`'s virtual time, from one seed.

Each node is the real `kvnode.server.Node`, built through its seams only:
a clock reading the loop's virtual time (with an optional wall-clock skew),
`InlineOffload` and `InlineBackground` instead of threads, a `SimTransport`
on the world's `SimNetwork`, and a `SimFileSystem` as its disk. A request
reaches a node through `Node._accept`, the function every frame read off a
socket goes through (access rules, the inline `replica_get`, a task per
request), in that node's own context, so every task the node spawns is its
own (`loop.OWNER`).

- **Crash** (`crash`, the kill fault): the node leaves the network
  (requests in flight to it are lost), every task it owns is cancelled and
  its `Node` object is dropped; its disk keeps every byte written, synced or
  not, as the OS's page cache would (`SimFileSystem.kill`). **Power loss**
  (`power`): the same, and the disk loses what was not fsynced, torn as its
  seed says (`SimFileSystem.crash`). **Restart** (`restart`, `power-on`): a
  new `Node` on the same disk, as a new process would be.
- **Pause** (`pause`, `resume`): as SIGSTOP, everything the node would run is
  held by the loop (`SimLoop.pause`) and messages to it wait, until resume.
- **Clock** (`clock`, `clock-reset`): a node's wall clock jumps by an offset
  (its monotonic clock does not, as with libfaketime), and back.
- **Packet** (`packet`, `packet-stop`): messages to and from some nodes are
  delayed (a large delay is a clogged link) and lost (`SimNetwork.shape`).
- **Clients** are the harness's own: the workload's workers (`Workload.worker`)
  drive `harness.systems.kvnode.KvnodeClient`, whose `AsyncClient` sends its
  requests over the simulated network (`SimAsyncClient`); operations are
  timed by `harness.generator.OpTimer` and recorded in the history format
  (`checkers.history.Op`), times in virtual nanoseconds.
- **Faults** (`nemesis`): every `nemesis_interval` the next kind in turn
  starts or ends: `partition` (two random groups), `kill`, `pause`, `power`
  (a random node), `clock` (a random node's clock jumps by up to 10 s either
  way), `packet` (a random non-empty set of nodes: delay, loss or both).
  The faults form an explicit schedule of `Step`s (`World.plan`), recorded
  as nemesis ops as `harness run` records them.
- **The end**, as `harness run` has it: heal, restart what is down, let the
  cluster settle (`recovery` simulated seconds), read every key from every
  node, then judge the history with the checkers the workload plans for
  the promise `KvnodeSystem` makes for these settings.

`simulate(config, seed)` runs one seed and returns its `Outcome`: the
verdict, the checker results, the history and the trace hash. The same
config and seed give the same trace hash and history.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import random
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from checkers.history import REPLICA_READ, Op, Process
from checkers.result import Result, Verdict, worst
from contract.ops import Completion, Invocation
from contract.promise import Promise
from harness import registry
from harness.generator import OpTimer, Pace
from harness.nemesis.partition import SHAPES
from harness.sim.loop import OWNER, SimLoop, SimulationError
from harness.sim.network import NetworkSettings, SimNetwork, SimTransport
from harness.systems.base import ReplicaRead, replicas_agree
from harness.systems.kvnode import KvnodeClient, KvnodeDB, KvnodeSystem
from kvnode import auth, protocol
from kvnode.client import AsyncClient, BadRequest, ConnectionFailed, KvError, Timeout, _remote_error
from kvnode.client import ConnectionLost as ClientConnectionLost
from kvnode.config import ClusterSettings, NodeConfig
from kvnode.connection import ConnectionLost
from kvnode.log import EventLog
from kvnode.offload import InlineOffload
from kvnode.server import Node, _Link
from kvnode.storage.background import InlineBackground
from kvnode.storage.simfs import SimFileSystem
from kvnode.transport import PeerUnreachable
from workloads.base import Workload, WorkloadOptions, judge, plan

__all__ = ["FAULTS", "Outcome", "SimClock", "Step", "World", "WorldConfig", "drain", "simulate"]

FAULTS = ("partition", "kill", "pause", "clock", "packet", "power", "wipe")
ACTIONS = ("partition", "heal", "crash", "restart", "pause", "resume", "clock", "clock-reset", "packet",
           "packet-stop", "power", "power-on", "wipe", "rejoin")
Action = Literal["partition", "heal", "crash", "restart", "pause", "resume", "clock", "clock-reset", "packet",
                 "packet-stop", "power", "power-on", "wipe", "rejoin"]
EPOCH_NS = 1_767_225_600 * 10**9  # 2026-01-01: the simulated wall clock's start
PORT = 7000  # never opened: a node's configured address is only a name in the simulation


@dataclass(frozen=True, kw_only=True, slots=True)
class Step:
    """One fault of a schedule, `at` simulated seconds after the start:
    `partition` into `groups` (both ways; replaces any partition in force),
    `heal`; `crash`, `restart`, `pause`, `resume` of `node`; `clock` moves
    `node`'s wall clock by `offset` seconds, `clock-reset` puts every clock
    back; `packet` delays (`delay` seconds) and loses (`loss`) messages of
    `nodes`, `packet-stop` ends it; `power` cuts `nodes`' power (their disks
    lose what was not synced), `power-on` restarts them; `wipe` kills `node`
    and gives it an empty disk, `rejoin` restarts it and waits (at most
    `WorldConfig.converge_s`) for the cluster to converge."""

    at: float
    action: Action
    groups: tuple[tuple[str, ...], ...] = ()
    # or, for a partition of a named shape (harness.nemesis.partition.SHAPES),
    # the nodes each node drops: (node, (dropped, ...)), ...
    grudge: tuple[tuple[str, tuple[str, ...]], ...] = ()
    shape: str = ""
    node: str = ""
    nodes: tuple[str, ...] = ()
    offset: float = 0.0
    delay: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown step action {self.action!r} (one of: {', '.join(ACTIONS)})")

    def __str__(self) -> str:
        t = f"t={self.at:.2f} s"
        match self.action:
            case "partition" if self.grudge:
                drops = "; ".join(f"{n} drops {' '.join(d)}" for n, d in self.grudge if d)
                return f"{t} cut ({self.shape or 'shape'}): {drops}"
            case "partition":
                return f"{t} cut {' | '.join(' '.join(g) for g in self.groups)}"
            case "heal" | "clock-reset" | "packet-stop":
                return f"{t} {self.action.replace('-', ' ')}"
            case "clock":
                return f"{t} clock {self.node} {self.offset:+.3f} s"
            case "packet":
                what = [f"delay {self.delay:.2f} s"] if self.delay else []
                what += [f"loss {self.loss:.0%}"] if self.loss else []
                return f"{t} packet {' '.join(self.nodes)}: {', '.join(what) or 'nothing'}"
            case "power":
                return f"{t} power off {' '.join(self.nodes)}"
            case "power-on":
                return f"{t} power on {' '.join(self.nodes)}"
        return f"{t} {self.action} {self.node}"


_START_STOP: dict[str, tuple[Action, Action]] = {
    "kill": ("crash", "restart"), "pause": ("pause", "resume"), "wipe": ("wipe", "rejoin")}


class SimClock:
    """A node's `kvnode.clock.Clock` on the loop's virtual time: monotonic
    is the loop's time; the wall clock adds a skew (the clock fault)."""

    __slots__ = ("_loop", "offset_ns", "skew_ns")

    def __init__(self, loop: asyncio.AbstractEventLoop, skew_ns: int = 0) -> None:
        self._loop = loop
        self.skew_ns = skew_ns  # the node's own, for the whole run
        self.offset_ns = 0  # a clock fault's jump

    def wall_ns(self) -> int:
        return EPOCH_NS + round(self._loop.time() * 1e9) + self.skew_ns + self.offset_ns

    def monotonic(self) -> float:
        return self._loop.time()


class _Discard:
    """Where the nodes' event logs go: nowhere (the trace hash and the
    history are the record of a simulated run)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        return None


def _default_settings() -> ClusterSettings:
    return ClusterSettings(cluster="sim")


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """One simulated test. Times are simulated seconds."""

    nodes: int = 3
    settings: ClusterSettings = field(default_factory=_default_settings)
    workload: str = "register"
    concurrency: int | None = None  # default: 2 per node
    rate: float = 50.0  # operations per simulated second, over all clients
    simulated_seconds: float = 10.0
    nemesis: tuple[str, ...] = ()
    nemesis_interval: float = 2.0
    op_timeout: float = 5.0
    recovery: float = 12.0  # quiet after healing, before the final reads
    network: NetworkSettings = field(default_factory=NetworkSettings)
    active_keys: int = 3
    mix: str = "default"  # the workload's operation mix (workloads.base.MIXES)
    max_ops_per_key: int = 100
    skew_ns: int = 0  # the most a node's wall clock is off (each node: seeded, in [-skew, skew])
    power_targets: Literal["one", "all"] = "one"  # whose power the power fault cuts
    kill_targets: Literal["one", "majority"] = "one"  # whom the kill fault kills at once
    partition_shapes: tuple[str, ...] = ()  # harness run's shapes, drawn in turn; none: two random groups
    deletes: float | None = None  # the workload's share of deletes (None: its mix's own)
    replica_reads: bool = False  # after healing, read each key's replicas until they agree (checkers.replicas)
    converge_s: float = 30.0  # the longest a wipe's rejoin waits for the cluster to converge
    fifo: bool = False  # ready callbacks in the order they came (asyncio's), not in the seed's shuffled order
    check: tuple[str, ...] = ()  # claims to check beyond what kvnode promises (as `harness run --check`)

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"nodes must be at least 1, not {self.nodes}")
        if self.nodes < self.settings.n:
            raise ValueError(f"n={self.settings.n} replicas per key need at least {self.settings.n} nodes, "
                             f"not {self.nodes}")
        if self.simulated_seconds <= 0 or self.nemesis_interval <= 0 or self.op_timeout <= 0:
            raise ValueError("simulated_seconds, nemesis_interval and op_timeout must be positive")
        if self.rate <= 0:
            raise ValueError(f"rate must be positive, not {self.rate}")
        if self.power_targets not in ("one", "all"):
            raise ValueError(f"power_targets is one or all, not {self.power_targets!r}")
        if self.kill_targets not in ("one", "majority"):
            raise ValueError(f"kill_targets is one or majority, not {self.kill_targets!r}")
        bad = [shape for shape in self.partition_shapes if shape not in SHAPES]
        if bad:
            raise ValueError(f"unknown partition shape {bad[0]!r} (one of: {', '.join(SHAPES)})")
        unknown = [f for f in self.nemesis if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault {unknown[0]!r} (the simulation has: {', '.join(FAULTS)})")

    @property
    def clients(self) -> int:
        return self.concurrency or 2 * self.nodes


@dataclass
class Outcome:
    seed: int
    valid: Verdict
    results: list[Result]
    history: list[Op]
    trace_hash: str
    simulated: float  # simulated seconds the run took, end to end
    wall: float  # wall seconds
    steps: int
    faults: dict[str, int] = field(default_factory=dict)
    promise: Promise = field(default_factory=Promise)  # what the checkers judged
    schedule: tuple[Step, ...] = ()  # the faults it ran

    def anomalies(self) -> list[str]:
        """`checker: anomaly type` for each kind of anomaly found."""
        return sorted({f"{r.checker}: {a.type}" for r in self.results for a in r.anomalies})


class _Outbox:
    """`protocol.Outbox`'s one method, for a reply that goes back over the
    simulated network."""

    def __init__(self, reply: Callable[[dict[str, Any]], None]) -> None:
        self._reply = reply

    def send(self, message: dict[str, Any]) -> None:
        self._reply(dict(message))


class SimAsyncClient(AsyncClient):
    """kvnode's `AsyncClient` with its one request path (`_request`) over the
    simulated network: the same requests, the same replies, the same
    mapping of failures to `KvError`s (definite or not) as over TCP."""

    def __init__(self, network: SimNetwork, name: str, node: str, *, timeout: float) -> None:
        super().__init__(f"{node}:{PORT}", cluster="sim", timeout=timeout, connect_timeout=timeout)
        self._network = network
        self._name = name
        self._target = node

    async def _request(self, message: dict[str, Any], expect: str) -> dict[str, Any]:
        node = self._target
        if self._closed:
            raise ConnectionFailed("the client is closed", code="closed")
        try:
            reply = await self._network.request(self._name, node, message, self._timeout)
        except PeerUnreachable as e:
            raise ConnectionFailed(f"cannot connect to node {node}: {e}", code="connect_failed",
                                   node=node) from None
        except TimeoutError:
            raise Timeout(f"no reply from node {node} within {self._timeout:g}s: the {message['type']} "
                          "may or may not have happened", node=node) from None
        except protocol.ProtocolError as e:
            raise BadRequest(f"cannot send the {message['type']}: {e}", node=node) from None
        except ConnectionLost as e:
            raise ClientConnectionLost(f"connection to node {node} lost before the reply: the "
                                       f"{message['type']} may or may not have happened ({e})", node=node) from None
        if reply["type"] == "error":
            raise _remote_error(reply, node)
        if reply["type"] != expect:
            raise KvError(f"node {node} answered a {message['type']} with {reply['type']!r}, not {expect!r}",
                          code="protocol_error", definite=False, node=node)
        return reply

    async def close(self) -> None:
        self._closed = True


class _SimKvnodeClient(KvnodeClient):
    """The harness's kvnode adapter, given a simulated connection instead
    of opening a TCP one (`open` needs a backend's NodeSetup)."""

    def attach(self, client: AsyncClient) -> None:
        self._client = client


class _SimKvnodeDB(KvnodeDB):
    """The kvnode adapter's cluster-side calls (`replica_reads`,
    `converged`), unchanged, with their clients on the simulated network: a
    node is named by `SimPlace`s instead of a backend's NodeSetup."""

    ENDPOINT = "harness-db"

    def __init__(self, world: World) -> None:
        super().__init__(world.config.settings)
        self._world = world
        world.network.add(self.ENDPOINT, client=True)
        world.network.attach(self.ENDPOINT, lambda src, m, reply: None)
        self.setups = [cast(Any, types.SimpleNamespace(place=types.SimpleNamespace(name=n))) for n in world.nodes]

    def _client(self, node: Any, *, timeout: float, connect_timeout: float) -> AsyncClient:
        return SimAsyncClient(self._world.network, self.ENDPOINT, node.place.name, timeout=timeout)


class _SimNode:
    """One node of the world: what survives a crash (name, disk, clock) and
    what does not (the `Node`, its tasks)."""

    def __init__(self, world: World, name: str, config: NodeConfig, clock: SimClock, disk: SimFileSystem) -> None:
        self.world = world
        self.name = name
        self.config = config
        self.clock = clock
        self.disk = disk
        self.node: Node | None = None
        self.incarnation = 0
        self.context = contextvars.Context()
        self.links: dict[str, _Link] = {}
        self.held: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], None]]] | None = None  # paused
        self.wipes = 0

    @property
    def owner(self) -> str:
        return f"{self.name}#{self.incarnation}"

    async def boot(self) -> None:
        self.incarnation += 1
        self.context = contextvars.Context()
        self.context.run(OWNER.set, self.owner)
        self.links = {}
        node = Node(self.config, clock=self.clock, offload=InlineOffload(),
                    log=EventLog(self.name, self.clock, cast(Any, _Discard())),
                    transport=SimTransport(self.world.network, self.name), fs=self.disk,
                    background=InlineBackground())
        self.node = node
        loop = asyncio.get_running_loop()
        await loop.create_task(node.start(listen=False), context=self.context)
        self.world.network.attach(self.name, self._receive)

    def _receive(self, src: str, message: dict[str, Any], reply: Callable[[dict[str, Any]], None]) -> None:
        node, incarnation = self.node, self.incarnation
        if node is None:
            return
        if self.held is not None:  # paused: it waits, as in a stopped process's socket buffer
            self.held.append((src, message, reply))
            return

        def answer(m: dict[str, Any]) -> None:
            if self.incarnation == incarnation and self.node is node:  # not from a crashed incarnation
                reply(m)

        link = self.links.get(src)
        if link is None:
            peer = src in self.world.nodes
            c = node.credentials
            roles = auth.grant(c, node=src if peer else None, proved=peer and c.secret is not None,
                               token=None if peer else c.client_token)
            link = self.links[src] = _Link(writer=cast(Any, None), peername=f"sim:{src}",
                                           last_active=self.clock.monotonic(), roles=roles,
                                           claimed=src if peer else None)
        self.context.run(node._accept, message, link, cast(Any, _Outbox(answer)))

    def pause(self) -> bool:
        if self.node is None or self.held is not None:
            return False
        self.held = []
        self.world.loop.pause(self.owner)
        return True

    def resume(self) -> bool:
        if self.held is None:
            return False
        held, self.held = self.held, None
        loop = self.world.loop
        loop.resume(self.owner)
        for src, message, reply in held:
            loop.call_soon(self._receive, src, message, reply)
        return True

    def crash(self, *, power: bool = False) -> None:
        """The process dies (its disk keeps the page cache) or, with `power`,
        the machine loses power (the disk keeps what was synced)."""
        if self.node is None:
            return
        self.world.network.detach(self.name)
        loop = self.world.loop
        self.held = None
        loop.resume(self.owner)  # held callbacks run, to be cancelled
        for task in loop.tasks_of(self.owner):
            task.cancel()
        self.node = None
        if power:
            self.disk.crash()
        else:
            self.disk.kill()


class World:
    """The cluster and its clients on one `SimLoop`; see the module docstring."""

    def __init__(self, config: WorldConfig, seed: int, loop: SimLoop) -> None:
        self.config = config
        self.seed = seed
        self.loop = loop
        self.rng = random.Random(f"{seed}:world")
        self.network = SimNetwork(random.Random(f"{seed}:network"), config.network)
        self.nodes = [f"n{i + 1}" for i in range(config.nodes)]
        self.history: list[Op] = []
        self.faults: dict[str, int] = {}
        self._next_process = config.clients * 1000
        self.schedule: tuple[Step, ...] = ()
        members = {name: (name, PORT) for name in self.nodes}
        self.sim: dict[str, _SimNode] = {}
        for name in self.nodes:
            self.network.add(name)
            skew = self.rng.randint(-config.skew_ns, config.skew_ns) if config.skew_ns else 0
            node_config = NodeConfig(id=name, listen=(name, PORT), data=f"/{name}/data", peers=members,
                                     settings=config.settings, sync="always", seed=seed)
            disk = SimFileSystem(random.Random(f"{seed}:disk:{name}"))
            self.sim[name] = _SimNode(self, name, node_config, SimClock(loop, skew), disk)
        system = KvnodeSystem(**{f.name: getattr(config.settings, f.name)
                                 for f in dataclasses.fields(config.settings)})
        self.system = system
        self.workload = _make_workload(config)
        unknown = [c for c in config.check if c not in self.workload.claims]
        if unknown:
            raise ValueError(f"check {unknown[0]!r}: the {config.workload} workload cannot check it "
                             f"(it checks: {', '.join(self.workload.claims)})")
        self.promise = system.promise(config.workload).asking(config.check)
        self.db = _SimKvnodeDB(self)

    # ---------------------------------------------------------- history

    def record(self, process: Process, type: str, f: str, *, key: Any = None, value: Any = None,
               node: str | None = None, error: str | None = None, extra: dict[str, Any] | None = None) -> None:
        self.history.append(Op(index=len(self.history), time=round(self.loop.time() * 1e9), process=process,
                               type=cast(Any, type), f=f, key=key, value=value, node=node, error=error,
                               extra=dict(extra or {})))

    def _new_process(self) -> int:
        self._next_process += 1
        return self._next_process

    # ------------------------------------------------------------ nodes

    async def start(self) -> None:
        for name in self.nodes:
            await self.sim[name].boot()

    def crash(self, name: str) -> None:
        self._node(name).crash()

    async def restart(self, name: str) -> None:
        node = self._node(name)
        if node.node is not None:
            raise SimulationError(f"restart of {name}, which is running: crash it first")
        await node.boot()

    def is_up(self, name: str) -> bool:
        return self._node(name).node is not None

    def node(self, name: str) -> Node | None:
        return self._node(name).node

    def _node(self, name: str) -> _SimNode:
        if name not in self.sim:
            raise ValueError(f"unknown node {name!r}; the world has {', '.join(self.nodes)}")
        return self.sim[name]

    def client(self, name: str, node: str) -> _SimKvnodeClient:
        """The harness's kvnode client for `node`, as the client endpoint `name`."""
        if name not in self.network.nodes:
            self.network.add(name, client=True)
            self.network.attach(name, lambda src, m, reply: None)  # clients serve nothing
        # As KvnodeClient.open sizes it: an add makes two requests within op_timeout.
        timeout = min(5.0, self.config.op_timeout / 2.5)
        kc = _SimKvnodeClient(self.config.workload, timeout, "sim")
        kc.attach(SimAsyncClient(self.network, name, node, timeout=timeout))
        return kc

    # ---------------------------------------------------------- clients

    async def _worker(self, index: int, node: str, deadline: float) -> None:
        config = self.config
        gen = self.workload.worker(index, random.Random(f"{self.seed}:ops:{index}"))
        pauses = random.Random(f"{self.seed}:pace:{index}")
        pace = Pace(config.rate, config.clients)
        timer = OpTimer(config.op_timeout)
        process = index
        client = self.client(f"c{index}", node)
        try:
            while True:
                wait = pace.delay(pauses)
                if self.loop.time() + wait >= deadline:
                    return
                await asyncio.sleep(wait)
                op = gen.next()
                self.record(process, "invoke", op.f, key=op.key, value=op.value, node=node, extra=op.extra)
                completion = await timer.invoke(client, op)
                self._vet(op, completion)
                self._complete(process, node, op, completion)
                gen.completed(op, completion)
                if completion.type == "info":
                    process += config.clients
                    gen.new_process()
                    await client.close()
                    client = self.client(f"c{index}", node)
        finally:
            timer.close()

    def _vet(self, op: Invocation, completion: Completion) -> None:
        problem = self.workload.validate(op, completion)
        if problem:
            raise SimulationError(f"the kvnode client returned a completion the workload cannot record: {problem}")

    def _complete(self, process: int, node: str, op: Invocation, c: Completion,
                  extra: dict[str, Any] | None = None) -> None:
        self.record(process, c.type, op.f, key=op.key, value=op.value if c.value is None else c.value,
                    node=node, error=c.error, extra={**c.extra, **(extra or {})})

    async def _final_reads(self) -> None:
        reads = self.workload.final_reads()

        async def at(node: str) -> None:
            process = self._new_process()
            client = self.client(f"final-{node}", node)
            timer = OpTimer(self.config.op_timeout)
            try:
                for op in reads:
                    for _attempt in range(3):
                        self.record(process, "invoke", op.f, key=op.key, value=op.value, node=node,
                                    extra=op.extra)
                        c = await timer.invoke(client, op)
                        self._vet(op, c)
                        self._complete(process, node, op, c, op.extra)
                        if c.type == "ok":
                            break
                        if c.type == "info":
                            process = self._new_process()
                        await asyncio.sleep(0.5)
            finally:
                timer.close()

        await asyncio.gather(*(at(node) for node in self.nodes))

    # ----------------------------------------------------------- faults

    def _fault(self, f: str, value: Any) -> None:
        self.faults[f] = self.faults.get(f, 0) + 1
        self.record("nemesis", "invoke", f, value=value)
        self.record("nemesis", "info", f, value=value)

    def plan(self) -> tuple[Step, ...]:
        """The fault schedule this seed draws (what `_nemesis` would do
        without an explicit schedule): every `nemesis_interval`, the next
        fault kind in turn starts or, if it is in force, ends."""
        config = self.config
        faults = list(config.nemesis)
        steps: list[Step] = []
        active: dict[str, Any] = {}
        at, turn = config.nemesis_interval, 0
        while faults and at < config.simulated_seconds:
            kind = faults[turn % len(faults)]
            turn += 1
            if kind == "partition":
                if "partition" in active:
                    del active["partition"]
                    steps.append(Step(at=at, action="heal"))
                elif config.partition_shapes:
                    shape = self.rng.choice(config.partition_shapes)
                    drops = SHAPES[shape](self.nodes, self.rng)
                    grudge = tuple((n, tuple(sorted(drops.get(n, ())))) for n in self.nodes)
                    active["partition"] = grudge
                    steps.append(Step(at=at, action="partition", grudge=grudge, shape=shape))
                else:
                    shuffled = self.nodes[:]
                    self.rng.shuffle(shuffled)
                    cut = self.rng.randint(1, max(1, len(shuffled) // 2))
                    groups = (tuple(sorted(shuffled[:cut])), tuple(sorted(shuffled[cut:])))
                    active["partition"] = groups
                    steps.append(Step(at=at, action="partition", groups=groups))
            elif kind in ("kill", "pause", "wipe"):
                start, stop = _START_STOP[kind]
                if kind in active:
                    steps.extend(Step(at=at, action=stop, node=name) for name in active.pop(kind))
                else:
                    many = kind == "kill" and config.kill_targets == "majority"
                    names = sorted(self.rng.sample(self.nodes, len(self.nodes) // 2 + 1)) if many else \
                        [self.rng.choice(self.nodes)]
                    active[kind] = names
                    steps.extend(Step(at=at, action=start, node=name) for name in names)
            elif kind == "power":
                if kind in active:
                    steps.append(Step(at=at, action="power-on", nodes=active.pop(kind)))
                else:
                    nodes = tuple(self.nodes) if config.power_targets == "all" else (self.rng.choice(self.nodes),)
                    active[kind] = nodes
                    steps.append(Step(at=at, action="power", nodes=nodes))
            elif kind == "clock":
                if active.pop(kind, None):
                    steps.append(Step(at=at, action="clock-reset"))
                else:
                    # log-uniform in [10 ms, 10 s], either way, to the millisecond
                    offset = round(self.rng.choice((-1, 1)) * 10 ** self.rng.uniform(-2, 1), 3)
                    active[kind] = True
                    steps.append(Step(at=at, action="clock", node=self.rng.choice(self.nodes), offset=offset))
            elif kind == "packet":
                if active.pop(kind, None):
                    steps.append(Step(at=at, action="packet-stop"))
                else:
                    chosen = tuple(sorted(self.rng.sample(self.nodes, self.rng.randint(1, len(self.nodes)))))
                    profile = self.rng.choice(("delay", "loss", "delay+loss"))
                    delay = round(self.rng.uniform(0.05, 1.0), 3) if "delay" in profile else 0.0
                    loss = round(self.rng.uniform(0.05, 0.5), 3) if "loss" in profile else 0.0
                    active[kind] = True
                    steps.append(Step(at=at, action="packet", nodes=chosen, delay=delay, loss=loss))
            at = round(at + config.nemesis_interval, 9)
        return tuple(steps)

    async def _nemesis(self, schedule: tuple[Step, ...]) -> None:
        """Carry out `schedule`, each step at its time from the start."""
        start = self.loop.time()
        for step in schedule:
            await asyncio.sleep(max(0.0, start + step.at - self.loop.time()))
            if step.action == "partition":
                self.network.heal()
                if step.grudge:
                    for src, dropped in step.grudge:
                        for dst in dropped:
                            self.network.cut(src, dst)
                    grudge = {n: list(d) for n, d in step.grudge if d}
                else:
                    self.network.partition(step.groups)
                    grudge = {n: sorted(set(self.nodes) - set(g)) for g in step.groups for n in g}
                self._fault("start-partition", {"grudge": grudge, **({"shape": step.shape} if step.shape else {})})
            elif step.action == "heal":
                self.network.heal()
                self._fault("stop-partition", None)
            elif step.action == "crash" and self.is_up(step.node):
                self.crash(step.node)
                self._fault("kill", [step.node])
            elif step.action == "restart" and not self.is_up(step.node):
                await self.restart(step.node)
                self._fault("start", [step.node])
            elif step.action == "pause" and self._node(step.node).pause():
                self._fault("pause", [step.node])
            elif step.action == "resume" and self._node(step.node).resume():
                self._fault("resume", [step.node])
            elif step.action == "clock":
                self._node(step.node).clock.offset_ns = round(step.offset * 1e9)
                self._fault("bump-clock", {step.node: step.offset})
            elif step.action == "clock-reset":
                self._reset_clocks()
            elif step.action == "packet":
                self.network.shape(step.nodes, delay=step.delay, loss=step.loss)
                self._fault("start-packet", {"nodes": list(step.nodes), "delay": step.delay, "loss": step.loss})
            elif step.action == "packet-stop" and self.network.shaped:
                self.network.unshape()
                self._fault("stop-packet", None)
            elif step.action == "power":
                down = [n for n in step.nodes if self.is_up(n)]
                for name in down:  # every target down before any disk forgets: one outage
                    self._node(name).crash(power=True)
                if down:
                    self._fault("power-off", {"nodes": down})
            elif step.action == "wipe" and self.is_up(step.node):
                self.crash(step.node)
                node = self._node(step.node)
                node.wipes += 1
                node.disk = SimFileSystem(random.Random(f"{self.seed}:disk:{step.node}:{node.wipes}"))
                self._fault("wipe", {"nodes": [step.node]})
            elif step.action == "rejoin" and not self.is_up(step.node):
                await self.restart(step.node)
                converged, waited = await self._converge()
                self._fault("rejoin", {"nodes": [step.node], "converged": converged, "waited-s": waited})
            elif step.action == "power-on":
                up = [n for n in step.nodes if not self.is_up(n)]
                for name in up:
                    await self.restart(name)
                if up:
                    self._fault("power-on", {"nodes": up})

    def _reset_clocks(self) -> None:
        moved = {n: s.clock.offset_ns / 1e9 for n, s in self.sim.items() if s.clock.offset_ns}
        for name in moved:
            self.sim[name].clock.offset_ns = 0
        if moved:
            self._fault("reset-clock", {n: 0.0 for n in moved})

    async def _converge(self) -> tuple[bool, float]:
        """Wait (polling, at most `converge_s`) until the adapter says the
        cluster converged, as the wipe fault's rejoin does."""
        started = self.loop.time()
        while True:
            if await self.db.converged(self.db.setups):
                return True, round(self.loop.time() - started, 2)
            if self.loop.time() - started >= self.config.converge_s:
                return False, round(self.loop.time() - started, 2)
            await asyncio.sleep(0.5)

    async def _replica_convergence(self) -> None:
        """As `harness run` does after healing: poll each key's replicas,
        without repair, until they agree or `recovery` passes; record each
        key's last read at each replica as a `replica-read` op."""
        keys = list(dict.fromkeys(str(op.key) for op in self.workload.final_reads()))
        started = self.loop.time()
        last: dict[str, dict[str, ReplicaRead | None]] = {}
        pending = keys
        while pending:
            reads = await asyncio.gather(*(self.db.replica_reads(self.db.setups, k) for k in pending))
            last.update(zip(pending, reads, strict=True))
            pending = [k for k in pending if not replicas_agree(last[k])]
            if not pending or self.loop.time() - started >= self.config.recovery:
                break
            await asyncio.sleep(0.5)
        for key in keys:
            process = self._new_process()
            found: list[tuple[str | None, ReplicaRead | None]] = [*sorted(last[key].items())] or [(None, None)]
            for node, got in found:
                self.record(process, "invoke", REPLICA_READ, key=key, node=node)
                if got is None:
                    self.record(process, "info", REPLICA_READ, key=key, node=node, error="could not be read")
                    process = self._new_process()
                else:
                    self.record(process, "ok", REPLICA_READ, key=key, node=node, value=list(got.values),
                                extra={"waited_s": round(self.loop.time() - started, 3)})

    async def _heal(self) -> None:
        if self.network.cuts:
            self.network.heal()
            self._fault("stop-partition", None)
        if self.network.shaped:
            self.network.unshape()
            self._fault("stop-packet", None)
        self._reset_clocks()
        for name in self.nodes:
            if self._node(name).resume():
                self._fault("resume", [name])
        for name in self.nodes:
            if not self.is_up(name):
                await self.restart(name)
                self._fault("start", [name])

    # -------------------------------------------------------------- run

    async def run(self, schedule: tuple[Step, ...] | None = None) -> list[Result]:
        """The whole test (see the module docstring) with the faults of
        `schedule` (None: the seed's own, `plan()`); the checker results."""
        config = self.config
        self.schedule = self.plan() if schedule is None else schedule
        await self.start()
        deadline = self.loop.time() + config.simulated_seconds
        workers = [asyncio.ensure_future(self._worker(i, self.nodes[i % len(self.nodes)], deadline))
                   for i in range(config.clients)]
        await self._nemesis(self.schedule)
        await asyncio.gather(*workers)
        await self._heal()
        if config.replica_reads:
            await self._replica_convergence()
        else:
            await asyncio.sleep(config.recovery)
        await self._final_reads()
        for name in self.nodes:
            self.crash(name)  # the end: nothing more runs (a crash needs no shutdown on virtual time)
        checks = plan(self.workload, self.promise, replicas=config.replica_reads).checks
        return judge(self.history, checks)


def _make_workload(config: WorldConfig) -> Workload:
    """The workload by its registered name, as `harness run` finds it."""
    try:
        factory = registry.load("workloads", config.workload)
    except registry.PluginError as e:
        raise ValueError(f"workload: {e}") from None
    workload: Workload = factory(WorkloadOptions(
        concurrency=config.clients, active_keys=config.active_keys, max_ops_per_key=config.max_ops_per_key,
        mix=config.mix, deletes=config.deletes))
    return workload


def drain(loop: SimLoop) -> None:
    """Cancel what is left on `loop` (the crashed nodes' tasks, a failed
    run's) and let it finish, so nothing is destroyed while pending."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def simulate(config: WorldConfig, seed: int, schedule: tuple[Step, ...] | None = None) -> Outcome:
    """Run one seed of `config` on a fresh loop, with the faults of
    `schedule` (None: the seed's own); see `Outcome`."""
    loop = SimLoop(seed, shuffle=not config.fifo)
    wall = time.monotonic()
    try:
        world = World(config, seed, loop)
        results = loop.run_until_complete(world.run(schedule))
        if loop.callback_errors:  # a callback raised: a bug in the world or the node, not a verdict
            raise SimulationError(f"seed {seed}: {len(loop.callback_errors)} callback(s) raised; the first: "
                                  f"{loop.callback_errors[0]}")
    finally:
        drain(loop)
        loop.close()
    return Outcome(seed=seed, valid=worst(r.valid for r in results), results=results, history=world.history,
                   trace_hash=loop.trace_hash, simulated=loop.time(), wall=time.monotonic() - wall,
                   steps=loop.steps, faults=dict(world.faults), promise=world.promise, schedule=world.schedule)
