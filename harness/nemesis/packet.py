"""Packet faults: `Packet` delays and drops traffic to and from some nodes
through `Backend.shape` (netem on the namespace, container and ssh backends;
the local backend's proxies delay and drop chunks).

Each start draws a profile: `delay` (a delay uniform in `delay_ms`, with a
jitter of up to half of it), `loss` (a loss probability uniform in `loss`), or
`delay+loss`, and applies it to the nodes `targets` picks (by default a
random non-empty subset, all nodes included). Stop shapes every node with
the empty `PacketShape()`.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from harness.backends.base import BackendCapabilities, PacketShape

from .base import ClusterHandle, Fault, check_targets, choose_nodes

if TYPE_CHECKING:
    from .schedule import FaultOptions

PROFILES = ("delay", "loss", "delay+loss")


class Packet(Fault):
    """Shape the traffic of some nodes with a random delay and/or loss. Needs
    `caps.packet`."""

    name = "packet"
    start_f = "start-packet"
    stop_f = "stop-packet"

    @classmethod
    def from_options(cls, handle: ClusterHandle, options: FaultOptions) -> Packet:
        return cls(handle, targets=options.packet_targets, delay_ms=options.packet_delay_ms,
                   loss=options.packet_loss)

    def __init__(
        self,
        handle: ClusterHandle,
        *,
        targets: str = "any",
        delay_ms: tuple[float, float] = (50.0, 500.0),
        loss: tuple[float, float] = (0.05, 0.30),
    ) -> None:
        if not 0 <= delay_ms[0] <= delay_ms[1]:
            raise ValueError(f"bad packet delay range {delay_ms}")
        if not 0 <= loss[0] <= loss[1] <= 1:
            raise ValueError(f"bad packet loss range {loss}")
        self._handle = handle
        self._targets = check_targets(targets)
        self._delay_ms, self._loss = delay_ms, loss
        self._shaped: list[str] = []  # nodes shaped (or being shaped)
        self._text = ""

    def unavailable(self, caps: BackendCapabilities) -> str | None:
        if caps.packet:
            return None
        return caps.packet_reason or "this backend cannot shape packets"

    async def start(self, rng: random.Random) -> Any:
        profile = rng.choice(PROFILES)
        nodes = await choose_nodes(self._handle, self._handle.nodes, rng, self._targets)
        delay = jitter = loss = 0.0
        if "delay" in profile:
            delay = round(rng.uniform(*self._delay_ms))
            jitter = round(rng.uniform(0.0, delay / 2))
        if "loss" in profile:
            loss = round(rng.uniform(*self._loss), 3)
        shape = PacketShape(delay_ms=delay, jitter_ms=jitter, loss=loss)
        parts = [f"{delay:g}±{jitter:g}ms"] if delay else []
        parts += [f"loss {loss:.1%}"] if loss else []
        self._text = f"packet {' '.join(parts)} on {' '.join(nodes)}"
        self._shaped = list(nodes)  # before the await: see stop
        await self._handle.backend.shape(nodes, shape)
        return {"nodes": nodes, "delay_ms": delay, "jitter_ms": jitter, "loss": loss}

    async def stop(self) -> Any:
        # Every node, not only those shaped: `shape` replaces what a node
        # had, so this is right even if the recorded set were incomplete.
        await self._handle.backend.shape(self._handle.nodes, PacketShape())
        self._shaped = []
        return {"nodes": list(self._handle.nodes)}

    def active(self) -> str | None:
        return self._text if self._shaped else None
