"""An in-memory network for the simulated world, behind kvnode's transport
seam (`kvnode.transport.Transport`).

Every message is encoded and decoded with kvnode's own wire format
(`protocol.encode` / `protocol.decode_body`), so a simulated request is
validated exactly as one read off a socket, and sender and receiver never
share a mutable object. A message takes its link's latency (each link gets a
base latency drawn from the seed, and each message a jitter on top of it, so
messages on a link can overtake each other: reordering), may be lost
(`loss`), and is dropped while its link is cut.

Faults, as the harness's partition nemesis has them (a "grudge"):
`cut(src, dst)` drops what src sends to dst (one way); `partition(groups)`
cuts every link between two groups (both ways); `heal()` mends every link.
A cut link behaves like the local backend's blackholing proxy: the peer
still counts as reachable and requests to it time out, which is
indeterminate, as it must be. What is sent across a cut is dropped
(`NetworkSettings.cuts="drop"`, as iptables drops it on a connection that
is then given up) or held and delivered once the link heals (`"hold"`, as
the local backend's proxies and TCP's retransmissions deliver it). A node that is down (`detach`: crashed or not
started) refuses connections at once (`PeerUnreachable`: nothing was sent),
and requests in flight to it end with `ConnectionLost`.

Packet faults, as the packet nemesis shapes a node's interface: `shape(nodes,
delay=, loss=)` adds a delay (with up to half of it again as jitter) and a
loss chance to every message to or from those nodes; a large delay is a
clogged link (slowed, not cut); `unshape()` ends it.

Duplication (`NetworkSettings.duplicate`): a request between two nodes is
delivered a second time, later, with its reply going nowhere, as a
retrying transport would do it. TCP never duplicates a frame, so this tests
what kvnode's replica messages would survive, not what the real node meets;
requests from clients are never duplicated.

Not modelled: bandwidth.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kvnode import protocol
from kvnode.connection import ConnectionLost
from kvnode.transport import PeerUnreachable

__all__ = ["NetworkSettings", "Receiver", "SimNetwork", "SimTransport"]

# Called with (sender, request, reply): the receiver answers by calling
# reply(message) once, at once or later (or never, if it crashes first).
Receiver = Callable[[str, dict[str, Any], Callable[[dict[str, Any]], None]], None]


@dataclass(frozen=True, kw_only=True, slots=True)
class NetworkSettings:
    """Latency in seconds: each link's base is uniform in [latency_min,
    latency_max]; each message adds up to `jitter` times the base. `loss`
    is the chance that one message (request or reply) is dropped;
    `duplicate` the chance that a request between nodes arrives twice."""

    latency_min: float = 0.0005
    latency_max: float = 0.005
    jitter: float = 0.5
    loss: float = 0.0
    duplicate: float = 0.0
    cuts: str = "drop"  # what a cut link does with a message: "drop" it, or "hold" it until it heals

    def __post_init__(self) -> None:
        if not 0 <= self.latency_min <= self.latency_max:
            raise ValueError(f"latency must satisfy 0 <= min <= max, got {self.latency_min}, {self.latency_max}")
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}")
        if not 0 <= self.loss <= 1:
            raise ValueError(f"loss must be in [0, 1], got {self.loss}")
        if self.cuts not in ("drop", "hold"):
            raise ValueError(f"cuts must be drop or hold, got {self.cuts!r}")
        if not 0 <= self.duplicate <= 1:
            raise ValueError(f"duplicate must be in [0, 1], got {self.duplicate}")


class SimNetwork:
    """The links between the world's nodes. All randomness comes from `rng`."""

    def __init__(self, rng: random.Random, settings: NetworkSettings | None = None) -> None:
        self.rng = rng
        self.settings = settings or NetworkSettings()
        self._receivers: dict[str, Receiver | None] = {}
        self._base: dict[tuple[str, str], float] = {}
        self._cut: set[tuple[str, str]] = set()
        self._held: list[tuple[str, str, Callable[..., None], tuple[Any, ...]]] = []  # across cuts, in order
        self._shaped: dict[str, tuple[float, float]] = {}  # node -> (delay, loss) of a packet fault
        self._clients: set[str] = set()
        self._inflight: dict[str, set[asyncio.Future[dict[str, Any]]]] = {}
        self._ids = 0
        self.counters = {"sent": 0, "delivered": 0, "lost": 0, "cut": 0, "duplicated": 0}

    # ------------------------------------------------------------ nodes

    def add(self, node: str, *, client: bool = False) -> None:
        """Name a node of the network (down until `attach`); a `client`'s
        requests are never duplicated."""
        if node in self._receivers:
            raise ValueError(f"node {node!r} is already on the network")
        self._receivers[node] = None
        self._inflight[node] = set()
        if client:
            self._clients.add(node)

    @property
    def nodes(self) -> list[str]:
        return sorted(self._receivers)

    def attach(self, node: str, receiver: Receiver) -> None:
        """The node is up: requests to it go to `receiver`."""
        self._known(node)
        self._receivers[node] = receiver

    def detach(self, node: str) -> None:
        """The node is down (crashed or stopped): new requests to it are
        refused, requests in flight to it end with ConnectionLost."""
        self._known(node)
        self._receivers[node] = None
        for future in sorted(self._inflight[node], key=hash):
            if not future.done():
                future.set_exception(ConnectionLost(f"{node} went down"))
        self._inflight[node].clear()

    def is_up(self, node: str) -> bool:
        return self._receivers.get(node) is not None

    def _known(self, node: str) -> None:
        if node not in self._receivers:
            raise ValueError(f"unknown node {node!r}; the network has {', '.join(self.nodes) or 'none'}")

    # ----------------------------------------------------------- faults

    def cut(self, src: str, dst: str) -> None:
        """Drop everything `src` sends to `dst` (one way)."""
        self._known(src)
        self._known(dst)
        if src != dst:
            self._cut.add((src, dst))

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Cut every link between nodes of different groups, both ways
        (nodes in no group keep their links)."""
        sets = [sorted(set(g)) for g in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1:]:
                for x in a:
                    for y in b:
                        self.cut(x, y)
                        self.cut(y, x)

    def heal(self) -> None:
        """Mend every link; what the cuts held is sent on, in order."""
        self._cut.clear()
        held, self._held = self._held, []
        if held:
            loop = asyncio.get_running_loop()
            for src, dst, deliver, args in held:
                loop.call_later(self._delay(src, dst), deliver, *args)

    def _hold(self, src: str, dst: str, deliver: Callable[..., None], *args: Any) -> bool:
        """True if the message is held at a cut link (to go on at `heal`)."""
        if self.settings.cuts != "hold" or (src, dst) not in self._cut:
            return False
        self.counters["cut"] += 1
        self._held.append((src, dst, deliver, args))
        return True

    def shape(self, nodes: Iterable[str], *, delay: float = 0.0, loss: float = 0.0) -> None:
        """Delay (seconds, plus up to half again) and lose (a chance) every
        message to or from `nodes`, until `unshape`."""
        if delay < 0 or not 0 <= loss <= 1:
            raise ValueError(f"a packet fault needs delay >= 0 and loss in [0, 1], got {delay}, {loss}")
        for node in nodes:
            self._known(node)
            self._shaped[node] = (delay, loss)

    def unshape(self) -> None:
        """End every packet fault."""
        self._shaped.clear()

    @property
    def shaped(self) -> dict[str, tuple[float, float]]:
        return dict(self._shaped)

    def is_cut(self, src: str, dst: str) -> bool:
        return (src, dst) in self._cut

    @property
    def cuts(self) -> list[tuple[str, str]]:
        return sorted(self._cut)

    # --------------------------------------------------------- delivery

    def _delay(self, src: str, dst: str) -> float:
        s = self.settings
        base = self._base.get((src, dst))
        if base is None:
            base = self._base[(src, dst)] = self.rng.uniform(s.latency_min, s.latency_max)
        delay = base * (1 + self.rng.uniform(0, s.jitter))
        if self._shaped:
            extra = max(self._shaped.get(src, (0.0, 0.0))[0], self._shaped.get(dst, (0.0, 0.0))[0])
            if extra:
                delay += extra * (1 + self.rng.uniform(0, 0.5))
        return delay

    def _passes(self, src: str, dst: str) -> bool:
        if (src, dst) in self._cut:
            self.counters["cut"] += 1
            return False
        if self.settings.loss and self.rng.random() < self.settings.loss:
            self.counters["lost"] += 1
            return False
        if self._shaped:
            loss = max(self._shaped.get(src, (0.0, 0.0))[1], self._shaped.get(dst, (0.0, 0.0))[1])
            if loss and self.rng.random() < loss:
                self.counters["lost"] += 1
                return False
        return True

    async def request(self, src: str, dst: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """What `SimTransport.request` does for `src` (see kvnode.transport)."""
        self._known(dst)
        if not self.is_up(dst):
            raise PeerUnreachable(f"{dst}: connection refused (down)")
        self._ids += 1
        frame = protocol.encode({**message, "id": self._ids})  # raises ProtocolError, as a real send does
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._inflight[dst].add(future)
        self.counters["sent"] += 1
        loop.call_later(self._delay(src, dst), self._arrive, src, dst, frame, future)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._inflight[dst].discard(future)

    def _arrive(self, src: str, dst: str, frame: bytes, future: asyncio.Future[dict[str, Any]],
                duplicate: bool = False) -> None:
        receiver = self._receivers.get(dst)
        # Delivered even if the sender stopped waiting (a quorum reached, a
        # timeout): the frame was on the wire, as bytes written to a socket are.
        if receiver is None or self._hold(src, dst, self._arrive, src, dst, frame, future, duplicate) \
                or not self._passes(src, dst):
            return
        self.counters["delivered"] += 1
        dup = self.settings.duplicate
        if dup and not duplicate and src not in self._clients and self.rng.random() < dup:
            self.counters["duplicated"] += 1
            asyncio.get_running_loop().call_later(self._delay(src, dst), self._arrive, src, dst, frame, future,
                                                  True)
        answered = duplicate  # a duplicate's answer goes nowhere: the sender took the first

        def reply(answer: dict[str, Any]) -> None:
            nonlocal answered
            if answered or not self.is_up(dst):  # a crashed node sends nothing more
                return
            answered = True
            back = protocol.encode(answer)
            asyncio.get_running_loop().call_later(self._delay(dst, src), self._answer, dst, src, back, future)

        try:
            message = protocol.decode_body(frame[protocol.LENGTH.size:])
        except protocol.ProtocolError as e:  # answered as a node answers a bad frame
            reply(protocol.error(e.request_id or 0, "bad_request", str(e)))
            return
        receiver(src, message, reply)

    def _answer(self, dst: str, src: str, frame: bytes, future: asyncio.Future[dict[str, Any]]) -> None:
        if future.done() or not self.is_up(src) or self._hold(dst, src, self._answer, dst, src, frame, future) \
                or not self._passes(dst, src):
            return
        future.set_result(protocol.decode_body(frame[protocol.LENGTH.size:]))


class SimTransport:
    """One node's `kvnode.transport.Transport` on a `SimNetwork`."""

    def __init__(self, network: SimNetwork, node: str) -> None:
        network._known(node)
        self._network = network
        self._node = node

    async def reachable(self, peer: str) -> bool:
        return self._network.is_up(peer)

    def connected_to(self, peer: str) -> bool:
        return self._network.is_up(peer)

    async def request(self, peer: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        if peer not in self._network._receivers:
            raise PeerUnreachable(f"{peer}: not a member of this cluster")
        return await self._network.request(self._node, peer, message, timeout)

    async def close(self) -> None:
        return None
