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
indeterminate, as it must be. A node that is down (`set_up(node, False)`:
crashed or not started) refuses connections at once (`PeerUnreachable`:
nothing was sent), and requests in flight to it end with `ConnectionLost`.

Not modelled yet: duplication, clogging (a link slowed rather than cut),
bandwidth.
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
    is the chance that one message (request or reply) is dropped."""

    latency_min: float = 0.0005
    latency_max: float = 0.005
    jitter: float = 0.5
    loss: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.latency_min <= self.latency_max:
            raise ValueError(f"latency must satisfy 0 <= min <= max, got {self.latency_min}, {self.latency_max}")
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}")
        if not 0 <= self.loss <= 1:
            raise ValueError(f"loss must be in [0, 1], got {self.loss}")


class SimNetwork:
    """The links between the world's nodes. All randomness comes from `rng`."""

    def __init__(self, rng: random.Random, settings: NetworkSettings | None = None) -> None:
        self.rng = rng
        self.settings = settings or NetworkSettings()
        self._receivers: dict[str, Receiver | None] = {}
        self._base: dict[tuple[str, str], float] = {}
        self._cut: set[tuple[str, str]] = set()
        self._inflight: dict[str, set[asyncio.Future[dict[str, Any]]]] = {}
        self._ids = 0
        self.counters = {"sent": 0, "delivered": 0, "lost": 0, "cut": 0}

    # ------------------------------------------------------------ nodes

    def add(self, node: str) -> None:
        """Name a node of the network (down until `attach`)."""
        if node in self._receivers:
            raise ValueError(f"node {node!r} is already on the network")
        self._receivers[node] = None
        self._inflight[node] = set()

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
        """Mend every link."""
        self._cut.clear()

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
        return base * (1 + self.rng.uniform(0, s.jitter))

    def _passes(self, src: str, dst: str) -> bool:
        if (src, dst) in self._cut:
            self.counters["cut"] += 1
            return False
        if self.settings.loss and self.rng.random() < self.settings.loss:
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

    def _arrive(self, src: str, dst: str, frame: bytes, future: asyncio.Future[dict[str, Any]]) -> None:
        receiver = self._receivers.get(dst)
        if future.done() or receiver is None or not self._passes(src, dst):
            return
        self.counters["delivered"] += 1
        answered = False

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
        if future.done() or not self.is_up(src) or not self._passes(dst, src):
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
