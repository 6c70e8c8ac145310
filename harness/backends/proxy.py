"""Network faults without privileges: a TCP proxy per ordered pair of nodes
and port.

The local backend runs every node on its own loopback address and tells node
A to reach node B's port P at the proxy for the link A->B on P (`ProxyMesh`),
which relays every connection A opens to B's real address for P
(`LinkProxy`). Every byte between nodes then passes a place where it can be
held, delayed or thrown away, which is what iptables and netem do to packets
in the other backends.
Clients of the system under test dial the nodes directly and are never
partitioned, like Jepsen's control node.

A link has two directions: *forward* carries what the dialer A sends to B,
*backward* what B answers. Each direction has its own `Faults`, changeable at
any time while connections are open:

**Blocked** (iptables DROP). The sender's writes succeed and nothing reaches
the other side; the connection is neither reset nor closed, and no FIN or RST
crosses a blocked direction (an EOF or reset waits for the heal, as a
retransmitted FIN would). What happens to the bytes is the link's
`on_block`:

- `"hold"` (the default, and what TCP over a DROP really does): the bytes wait
  in the proxy and are delivered when the direction heals, like the
  retransmissions that deliver them after a real partition heals (TCP gives up
  only after ~15 minutes, longer than any partition a test makes). A request
  sent into a partition can so arrive, and be acted on, long after its sender
  timed out: the late delivery that Jepsen's partitions provoke. Past
  `QUEUE_LIMIT` held bytes the proxy stops reading from the sender, so its
  socket buffers fill and its writes finally block, as with a real full window.
- `"drop"`: the bytes are discarded for good. After the heal the receiver sees
  the stream resume mid-way, which breaks any length-prefixed framing; a
  node notices only through a protocol error or its timeouts. Useful to test
  exactly that, not a faithful model of a partition.

A connection opened while either direction is blocked is accepted by the
kernel at once (the proxy cannot refuse a SYN without a firewall), but the
proxy does not connect upstream until both directions are open: a TCP
handshake needs the SYN to cross one way and the SYN-ACK the other. The
dialer's connect therefore "succeeds" and its first request (kvnode's hello)
gets no answer, so the dialer's connect-plus-handshake timeout fires, as its
connect timeout would on a dropped SYN; a node cannot tell the two apart
because it bounds connect and handshake with one timeout. Whatever the
dialer wrote meanwhile is held, as its kernel would hold it in a socket not
yet established, and delivered once the link heals (a retransmitted SYN). If
the dialer gives up and closes before that, the proxy never connects
upstream. If B refuses the upstream connection (B is down), the proxy resets
the dialer's connection, which is what the dialer would see from a dead
node's port.

**Delay and jitter** (netem `delay D J`): each chunk read is delivered
`D ± J` (uniform) later, never before the chunk read before it on the same
connection (TCP delivers in order, so jitter cannot reorder a stream).

**Loss** (netem `loss P`): dropping a chunk of a TCP stream would corrupt it,
which a real lossy link never does: TCP retransmits. So a "lost" chunk is
delivered late instead, after a retransmission timeout (`RETRANSMIT_S` plus
the link's round trip, as Linux computes its RTO, doubling for each further
loss of the same chunk, at most `MAX_RETRANSMITS` times), and the chunks
behind it wait with it (head-of-line blocking). The stream stays intact; what
the node sees is latency spikes, as over a real lossy link. Duplication and
reordering are invisible above TCP and are not modelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import struct
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from harness.backends.base import Grudge, PacketShape

__all__ = [
    "BlockMode",
    "Direction",
    "Faults",
    "LinkCounters",
    "LinkProxy",
    "ProxyMesh",
    "faults_of_shape",
]

Direction = Literal["forward", "backward"]
BlockMode = Literal["hold", "drop"]
Address = tuple[str, int]

CHUNK = 64 * 1024  # bytes read at once
QUEUE_LIMIT = 1 << 20  # bytes queued per direction of a connection before the sender is not read
RETRANSMIT_S = 0.2  # Linux's minimum retransmission timeout
MAX_RETRANSMITS = 6  # a chunk is "lost" at most this many times in a row (0.2 s * 63 = 12.6 s)
CONNECT_TIMEOUT_S = 5.0  # for the upstream connection (loopback: refused or accepted at once)


@dataclass(frozen=True, kw_only=True, slots=True)
class Faults:
    """The faults on one direction of a link."""

    blocked: bool = False
    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0  # probability that a chunk is "lost" (delivered after a retransmission timeout)

    def __post_init__(self) -> None:
        if not (self.delay_s >= 0 and self.jitter_s >= 0):
            raise ValueError(f"delay and jitter must be >= 0, not {self.delay_s}, {self.jitter_s}")
        if not 0 <= self.loss <= 1:
            raise ValueError(f"loss must be within 0..1, not {self.loss}")

    def then(self, other: Faults) -> Faults:
        """These faults and then `other` in series (a packet through two
        netems): delays add up, either can lose it, either can block it."""
        return Faults(
            blocked=self.blocked or other.blocked,
            delay_s=self.delay_s + other.delay_s,
            jitter_s=self.jitter_s + other.jitter_s,
            loss=(self.loss if not other.loss else other.loss if not self.loss
                  else 1 - (1 - self.loss) * (1 - other.loss)),
        )


def faults_of_shape(shape: PacketShape) -> Faults:
    """The proxy's reading of a netem shape (duplicate and reorder ignored)."""
    return Faults(delay_s=shape.delay_ms / 1000, jitter_s=shape.jitter_ms / 1000, loss=shape.loss)


@dataclass
class LinkCounters:
    """What a link has done since it started."""

    connections: int = 0  # accepted from the dialer
    refused: int = 0  # the upstream connect failed: the dialer was reset
    forward_bytes: int = 0  # delivered dialer -> target
    backward_bytes: int = 0  # delivered target -> dialer
    forward_dropped: int = 0  # discarded while blocked ("drop" mode only)
    backward_dropped: int = 0
    retransmits: int = 0  # chunks "lost" and delivered late


def _check_loopback(host: str) -> None:
    """The proxies only ever touch loopback: a test must not send traffic elsewhere."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{host!r} is not a loopback address; the local backend uses only 127.0.0.0/8")


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_EOF = _Marker("EOF")  # the sender half-closed: deliver a FIN
_RESET = _Marker("RESET")  # the sender's connection broke: reset the receiver's


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, not a FIN: what a peer whose socket died sends."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _wait_closed(writer: asyncio.StreamWriter) -> None:
    """Wait until a closing socket is closed, which also consumes the error a
    reset connection leaves behind (else asyncio may log "exception was never
    retrieved"). A socket whose peer reads nothing is aborted after 1 s."""
    try:
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except OSError:
        pass
    except TimeoutError:
        writer.transport.abort()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise


class _Stream:
    """One direction of one relayed connection: a reader fills a queue of
    chunks stamped with their delivery time; a writer empties it."""

    def __init__(self, link: LinkProxy, direction: Direction) -> None:
        self._link = link
        self._direction = direction
        self._items: deque[tuple[float, bytes | _Marker]] = deque()
        self._queued = 0
        self._last_at = 0.0
        self._has_items = asyncio.Event()
        self._has_space = asyncio.Event()
        self._has_space.set()

    def _push(self, payload: bytes | _Marker) -> None:
        loop = asyncio.get_running_loop()
        # Never before the chunk ahead of it: a TCP stream arrives in order.
        at = max(loop.time() + self._link._sample_delay(self._direction), self._last_at)
        self._last_at = at
        self._items.append((at, payload))
        if isinstance(payload, bytes):
            self._queued += len(payload)
        self._has_items.set()

    async def pump_in(self, reader: asyncio.StreamReader) -> None:
        """Read the sender until EOF or an error, queueing what it sends."""
        try:
            while True:
                while self._queued >= QUEUE_LIMIT:
                    self._has_space.clear()
                    await self._has_space.wait()
                data = await reader.read(CHUNK)
                if not data:
                    self._push(_EOF)
                    return
                self._push(data)
        except OSError:
            self._push(_RESET)

    async def pump_out(self, writer: asyncio.StreamWriter) -> Literal["eof", "reset"]:
        """Deliver the queue to the receiver, each item at its time and only
        while the direction is not blocked. Returns how the stream ended."""
        loop = asyncio.get_running_loop()
        link, direction = self._link, self._direction
        try:
            while True:
                while not self._items:
                    self._has_items.clear()
                    await self._has_items.wait()
                at, payload = self._items[0]
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue  # the faults may have changed meanwhile
                if link.faults(direction).blocked:
                    if isinstance(payload, bytes) and link.on_block == "drop":
                        self._take()
                        link._count(direction, dropped=len(payload))
                        continue
                    # Held (and an EOF or reset always is: TCP retransmits a FIN).
                    await link._wait_unblocked(direction)
                    continue
                self._take()
                if payload is _EOF:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return "eof"
                if payload is _RESET:
                    return "reset"
                assert isinstance(payload, bytes)
                writer.write(payload)
                link._count(direction, delivered=len(payload))
                await writer.drain()
        except OSError:
            return "reset"

    def _take(self) -> None:
        _, payload = self._items.popleft()
        if isinstance(payload, bytes):
            self._queued -= len(payload)
            if self._queued < QUEUE_LIMIT:
                self._has_space.set()


class LinkProxy:
    """The proxy for one ordered link: the dialer connects to `address`, and
    each connection is relayed to `target` under the link's current faults.

    `start()` before use, `close()` after (it ends every connection and task).
    Faults may be changed at any time, from the proxy's event loop."""

    def __init__(
        self,
        target: Address,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        name: str = "",
        on_block: BlockMode = "hold",
        rng: random.Random | None = None,
    ) -> None:
        """`target`: the real (host, port) to relay to; `listen_port` 0 lets
        the OS pick; `on_block`: what blocked bytes become (module docstring);
        `rng`: for jitter and loss (seed it for repeatable runs)."""
        _check_loopback(listen_host)
        _check_loopback(target[0])
        if on_block not in ("hold", "drop"):
            raise ValueError(f"on_block must be 'hold' or 'drop', not {on_block!r}")
        self.name = name or f"->{target[0]}:{target[1]}"
        self.target: Address = (target[0], int(target[1]))
        self.on_block: BlockMode = on_block
        self.counters = LinkCounters()
        self._listen = (listen_host, listen_port)
        self._rng = rng or random.Random()
        self._faults: dict[Direction, Faults] = {"forward": Faults(), "backward": Faults()}
        self._server: asyncio.Server | None = None
        self._address: Address | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        # Every socket of every relayed connection, until closed: close()
        # aborts what a cancelled handler could not (one cancelled before it
        # ever ran never reaches its finally).
        self._writers: set[asyncio.StreamWriter] = set()
        self._changed: asyncio.Future[None] | None = None
        self._closed = False

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> Address:
        """Listen; returns the (host, port) the dialer must connect to."""
        if self._server is not None or self._closed:
            raise RuntimeError(f"link {self.name} already started or closed")
        self._changed = asyncio.get_running_loop().create_future()
        self._server = await asyncio.start_server(self._accept, *self._listen, reuse_address=True)
        sockname = self._server.sockets[0].getsockname()
        self._address = (str(sockname[0]), int(sockname[1]))
        return self._address

    async def close(self) -> None:
        """Stop listening and end every relayed connection (both sockets
        aborted) and every task. Idempotent."""
        self._closed = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.gather(*handlers, return_exceptions=True)
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()
        if self._changed is not None and not self._changed.done():
            self._changed.cancel()

    @property
    def address(self) -> Address:
        """Where the dialer connects (after `start`)."""
        if self._address is None:
            raise RuntimeError(f"link {self.name} is not started")
        return self._address

    @property
    def open_connections(self) -> int:
        return len(self._handlers)

    # -- faults -----------------------------------------------------------

    def faults(self, direction: Direction) -> Faults:
        return self._faults[direction]

    @property
    def forward(self) -> Faults:
        """Faults on what the dialer sends."""
        return self._faults["forward"]

    @property
    def backward(self) -> Faults:
        """Faults on what the target answers."""
        return self._faults["backward"]

    def set_faults(self, *, forward: Faults | None = None, backward: Faults | None = None) -> None:
        """Replace the faults of either direction (None keeps them); takes
        effect at once on every open connection."""
        if forward is not None:
            self._faults["forward"] = forward
        if backward is not None:
            self._faults["backward"] = backward
        self._notify()

    @property
    def block_forward(self) -> bool:
        return self._faults["forward"].blocked

    @block_forward.setter
    def block_forward(self, blocked: bool) -> None:
        self._set_blocked("forward", blocked)

    @property
    def block_backward(self) -> bool:
        return self._faults["backward"].blocked

    @block_backward.setter
    def block_backward(self, blocked: bool) -> None:
        self._set_blocked("backward", blocked)

    def heal(self) -> None:
        """No faults in either direction."""
        self.set_faults(forward=Faults(), backward=Faults())

    def _set_blocked(self, direction: Direction, blocked: bool) -> None:
        f = self._faults[direction]
        self._faults[direction] = Faults(blocked=blocked, delay_s=f.delay_s, jitter_s=f.jitter_s, loss=f.loss)
        self._notify()

    def _notify(self) -> None:
        """Wake whatever waits for a fault to change."""
        if self._changed is None or self._closed:
            return
        fired, self._changed = self._changed, asyncio.get_running_loop().create_future()
        if not fired.done():
            fired.set_result(None)

    async def _wait_unblocked(self, direction: Direction) -> None:
        while self._faults[direction].blocked:
            assert self._changed is not None
            # shield: a cancelled waiter must not cancel the future others share
            await asyncio.shield(self._changed)

    def _sample_delay(self, direction: Direction) -> float:
        f = self._faults[direction]
        delay = f.delay_s
        if f.jitter_s:
            delay += self._rng.uniform(-f.jitter_s, f.jitter_s)
        delay = max(0.0, delay)
        if f.loss:
            # Linux: RTO = smoothed RTT + max(4 * RTT variance, 200 ms).
            other = self._faults["backward" if direction == "forward" else "forward"]
            rto = RETRANSMIT_S + f.delay_s + other.delay_s
            for _ in range(MAX_RETRANSMITS):
                if self._rng.random() >= f.loss:
                    break
                delay += rto
                rto *= 2
                self.counters.retransmits += 1
        return delay

    def _count(self, direction: Direction, *, delivered: int = 0, dropped: int = 0) -> None:
        c = self.counters
        if direction == "forward":
            c.forward_bytes += delivered
            c.forward_dropped += dropped
        else:
            c.backward_bytes += delivered
            c.backward_dropped += dropped

    # -- one connection ---------------------------------------------------

    def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        # A task of our own rather than the server's callback task: close()
        # cancels and awaits these, which asyncio's callback task would
        # report as an error.
        if self._closed:  # accepted just before close(): never relay it
            _reset(client_w)
            return
        self.counters.connections += 1
        self._writers.add(client_w)
        task = asyncio.get_running_loop().create_task(self._relay(client_r, client_w))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        forward, backward = _Stream(self, "forward"), _Stream(self, "backward")
        upstream_w: asyncio.StreamWriter | None = None
        tasks: list[asyncio.Task[Any]] = []
        graceful = False
        try:
            forward_in = asyncio.create_task(forward.pump_in(client_r))
            tasks.append(forward_in)
            if not await self._handshake_passes(forward_in):
                return  # the dialer gave up before the link healed: it never connected
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can lose a
                # connection that completes just as it is cancelled.
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    upstream_r, upstream = await asyncio.open_connection(*self.target)
            except (OSError, TimeoutError):
                self.counters.refused += 1
                return
            upstream_w = upstream
            self._writers.add(upstream)
            forward_out = asyncio.create_task(forward.pump_out(upstream))
            backward_out = asyncio.create_task(backward.pump_out(client_w))
            tasks += [forward_out, backward_out, asyncio.create_task(backward.pump_in(upstream_r))]
            # Over when both directions delivered their EOF, or either a reset.
            pending: set[asyncio.Task[Any]] = {forward_out, backward_out}
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(t.result() == "reset" for t in done):
                    return
            graceful = True
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writers = [w for w in (client_w, upstream_w) if w is not None]
            for w in writers:  # both at once, so that a cancellation below leaves neither open
                if graceful:
                    w.close()
                else:
                    _reset(w)
            for w in writers:
                await _wait_closed(w)
                self._writers.discard(w)

    async def _handshake_passes(self, forward_in: asyncio.Task[None]) -> bool:
        """Wait until a TCP handshake could cross the link (neither direction
        blocked): True, or False if the dialer closed first."""
        while self._faults["forward"].blocked or self._faults["backward"].blocked:
            if forward_in.done():
                return False
            assert self._changed is not None
            await asyncio.wait({self._changed, forward_in}, return_when=asyncio.FIRST_COMPLETED)
        return True

    def __repr__(self) -> str:
        where = f"{self._address[0]}:{self._address[1]}" if self._address else "not started"
        return (f"LinkProxy({self.name}, {where} -> {self.target[0]}:{self.target[1]}, "
                f"forward={self.forward}, backward={self.backward})")


class ProxyMesh:
    """Every ordered link between a set of nodes, one `LinkProxy` per link
    *and port* of the target (a system may listen on several: etcd on a
    client and a peer port), each listening on the dialer's own address;
    and the node-level faults (grudges, packet shapes) translated into link
    faults, the same on every port of a link."""

    def __init__(
        self,
        nodes: Mapping[str, Mapping[str, Address]],
        *,
        on_block: BlockMode = "hold",
        seed: int | None = None,
    ) -> None:
        """`nodes`: each node's real listen (host, port) per port name; the
        proxy for A's link to B's port P listens on A's host (that of A's
        own port P) with an OS-chosen port and relays to B's port P. `seed`
        seeds every link's jitter and loss (None: unseeded)."""
        rng = random.Random(seed)
        self.nodes: dict[str, dict[str, Address]] = {n: dict(ports) for n, ports in nodes.items()}
        self._links: dict[tuple[str, str, str], LinkProxy] = {}
        for a, own in self.nodes.items():
            for b, ports in self.nodes.items():
                if a == b:
                    continue
                for port, target in ports.items():
                    host = (own.get(port) or next(iter(own.values())))[0]
                    self._links[(a, b, port)] = LinkProxy(
                        target, listen_host=host, name=f"{a}->{b}:{port}", on_block=on_block,
                        rng=random.Random(rng.getrandbits(64)))
        self._grudge: dict[str, frozenset[str]] = {}
        self._shapes: dict[str, Faults] = {}

    async def start(self) -> None:
        """Start every link; on failure closes those started and raises."""
        try:
            for link in self._links.values():
                await link.start()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close every link. Idempotent."""
        await asyncio.gather(*(link.close() for link in self._links.values()), return_exceptions=True)

    def address(self, dialer: str, target: str, port: str) -> Address:
        """Where `dialer` must connect to reach `target`'s `port`."""
        return self._links[(dialer, target, port)].address

    def link(self, dialer: str, target: str, port: str) -> LinkProxy:
        return self._links[(dialer, target, port)]

    @property
    def links(self) -> Mapping[tuple[str, str, str], LinkProxy]:
        """Every link, keyed by (dialer, target, port name)."""
        return self._links

    def cut(self, grudge: Grudge) -> None:
        """Replace the partition: `grudge[b]` holds the nodes whose traffic b
        drops. If b drops from a, the a->b direction of both links between
        them is blocked (forward on a->b, backward on b->a), on every port,
        which is what a DROP of a's packets in b's INPUT chain does to TCP
        in both."""
        unknown = (set(grudge) | {n for ns in grudge.values() for n in ns}) - set(self.nodes)
        if unknown:
            raise ValueError(f"grudge names unknown nodes: {sorted(unknown)}")
        self._grudge = {b: frozenset(a) for b, a in grudge.items() if a}
        self._apply()

    def shape(self, nodes: Iterable[str], shape: PacketShape) -> None:
        """Replace the packet shaping: traffic to and from each of `nodes`
        gets `shape` (a link between two shaped nodes gets both, in series);
        every other node's is cleared."""
        nodes = list(nodes)
        unknown = set(nodes) - set(self.nodes)
        if unknown:
            raise ValueError(f"unknown nodes: {sorted(unknown)}")
        faults = faults_of_shape(shape)
        self._shapes = {n: faults for n in nodes}
        self._apply()

    def heal(self) -> None:
        """No partition, no shaping."""
        self._grudge = {}
        self._shapes = {}
        self._apply()

    def _direction(self, sender: str, receiver: str) -> Faults:
        f = self._shapes.get(sender, Faults()).then(self._shapes.get(receiver, Faults()))
        if sender in self._grudge.get(receiver, frozenset()):
            f = f.then(Faults(blocked=True))
        return f

    def _apply(self) -> None:
        for (a, b, _), link in self._links.items():
            link.set_faults(forward=self._direction(a, b), backward=self._direction(b, a))
