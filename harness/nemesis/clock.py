"""Clock skew: `ClockSkew` offsets nodes' wall clocks through
`Backend.set_clock` (libfaketime on every backend; monotonic time stays true).

Each start draws one kind (Jepsen's clock nemesis ops):

- `bump` (`bump-clock`): a random subset of nodes each gets its own offset,
  of magnitude log-uniform between `min_s` and `max_s` (as likely to be tens
  of milliseconds as tens of seconds) and random sign.
- `strobe` (`strobe-clock`): a background task flips a random subset of nodes
  between offset 0 and one offset `delta` every `period` seconds for
  `duration` seconds, then leaves them at the last offset it set. It sleeps on
  `handle.clock`.
- `reset` (`reset-clock`): every node back to offset 0.

Stop (`reset-clock`) cancels a running strobe and sets every node's offset
to 0. Values are JSON: node -> offset in seconds, or for a strobe
`{"strobe": {"nodes", "delta", "period", "duration"}}`.

What a node really saw: when the system can tell a node's wall clock
(`ClusterHandle.node_time`, kvnode's `status`), a bump also records
`"observed"`: node -> the offset the node's process reads, in seconds; a
node whose clock did not follow a bump of a second or more is named in
`"error"` (the history never claims a skew that did not happen). The
backends refuse `clock` up front for programs libfaketime cannot reach.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from harness.backends.base import BackendCapabilities

from .base import ClusterHandle, Fault, check_targets, choose_nodes, describe_error, log_uniform

if TYPE_CHECKING:
    from .schedule import FaultOptions

KINDS = ("bump", "strobe", "reset")


class ClockSkew(Fault):
    """Skew nodes' wall clocks: bump, strobe or reset, drawn per start from
    `kinds`. Needs `caps.clock` (libfaketime)."""

    name = "clock"
    start_f = "bump-clock"  # the f of the default kind; `choose` gives the drawn one
    stop_f = "reset-clock"

    @classmethod
    def from_options(cls, handle: ClusterHandle, options: FaultOptions) -> ClockSkew:
        return cls(handle, kinds=options.clock_kinds, targets=options.clock_targets, min_s=options.clock_min_s,
                   max_s=options.clock_max_s)

    def __init__(
        self,
        handle: ClusterHandle,
        *,
        kinds: Sequence[str] = KINDS,
        targets: str = "any",
        min_s: float = 0.01,
        max_s: float = 300.0,
        strobe_period_s: tuple[float, float] = (0.01, 1.0),
        strobe_duration_s: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        self._kinds = tuple(kinds)
        if not self._kinds or any(k not in KINDS for k in self._kinds):
            raise ValueError(f"bad clock kinds {list(kinds)!r}; valid: {', '.join(KINDS)}")
        if not 0 < min_s <= max_s:
            raise ValueError(f"clock offsets need 0 < min_s <= max_s, got {min_s}, {max_s}")
        if not 0 < strobe_period_s[0] <= strobe_period_s[1]:
            raise ValueError(f"bad strobe period range {strobe_period_s}")
        if not 0 <= strobe_duration_s[0] <= strobe_duration_s[1]:
            raise ValueError(f"bad strobe duration range {strobe_duration_s}")
        self._handle = handle
        self._targets = check_targets(targets)
        self._min_s, self._max_s = min_s, max_s
        self._period_s, self._duration_s = strobe_period_s, strobe_duration_s
        self._kind: str | None = None  # drawn by choose, used by the next start
        # node -> offset it was (or is being) set to, while possibly non-zero
        self._offsets: dict[str, float] = {}
        self._strobe: asyncio.Task[None] | None = None
        self._strobe_text = ""
        self._strobe_error: str | None = None

    def choose(self, rng: random.Random) -> str:
        self._kind = rng.choice(self._kinds)
        return f"{self._kind}-clock"

    def unavailable(self, caps: BackendCapabilities) -> str | None:
        if caps.clock:
            return None
        return caps.clock_reason or "clock skew needs libfaketime (e.g. apt-get install faketime)"

    def _offset(self, rng: random.Random) -> float:
        magnitude = log_uniform(rng, self._min_s, self._max_s)
        # rounded to the millisecond so the history shows what was applied
        return round(rng.choice((-1.0, 1.0)) * magnitude, 3)

    async def start(self, rng: random.Random) -> Any:
        if self._kind is None:
            self.choose(rng)
        kind, self._kind = self._kind, None
        await self._cancel_strobe()  # a stop always comes between, but be sure
        if kind == "bump":
            nodes = await choose_nodes(self._handle, self._handle.nodes, rng, self._targets)
            offsets = {node: self._offset(rng) for node in nodes}
            for node, offset in offsets.items():
                self._offsets[node] = offset  # before the await: see stop
                await self._handle.backend.set_clock(node, offset)
            return await self._observe(offsets)
        if kind == "strobe":
            nodes = await choose_nodes(self._handle, self._handle.nodes, rng, self._targets)
            delta = self._offset(rng)
            period = round(log_uniform(rng, *self._period_s), 3)
            duration = round(rng.uniform(*self._duration_s), 1)
            self._strobe_error = None
            self._strobe_text = f"clock strobe {' '.join(nodes)} 0/{delta:+g}s every {period:g}s"
            self._strobe = asyncio.create_task(self._run_strobe(nodes, delta, period, duration))
            return {
                "strobe": {"nodes": nodes, "delta": delta, "period": period, "duration": duration}
            }
        return await self._reset_all()

    async def _observe(self, offsets: dict[str, float]) -> dict[str, Any]:
        """`offsets`, with what each node's process reads where the system
        can tell (see the module docstring)."""
        node_time = self._handle.node_time
        value: dict[str, Any] = dict(offsets)
        if node_time is None or not offsets:
            return value
        observed: dict[str, float | None] = {}
        for node in offsets:
            before = time.time()
            try:
                seen = await asyncio.wait_for(node_time(node), 2.0)
            except Exception:  # a paused or unreachable node: not observed
                seen = None
            after = time.time()
            observed[node] = None if seen is None else round(seen - (before + after) / 2, 3)
        value["observed"] = observed
        stuck = [f"{node} reads {got:+g} s, not {offsets[node]:+g} s" for node, got in observed.items()
                 if got is not None and abs(offsets[node]) >= 1.0 and abs(got - offsets[node]) > abs(offsets[node]) / 2]
        if stuck:
            value["error"] = "the clock did not move: " + "; ".join(stuck)
        return value

    async def _run_strobe(
        self, nodes: Sequence[str], delta: float, period: float, duration: float
    ) -> None:
        clock = self._handle.clock
        end = clock.monotonic() + duration
        offset = delta
        try:
            while True:
                for node in nodes:
                    self._offsets[node] = offset
                    await self._handle.backend.set_clock(node, offset)
                if clock.monotonic() + period > end:
                    return  # leave the nodes at the last offset set
                await clock.sleep(period)
                offset = 0.0 if offset else delta
        except Exception as exc:
            # Nobody awaits this task until stop: keep the error for stop's value.
            self._strobe_error = describe_error(exc)

    async def _cancel_strobe(self) -> None:
        task, self._strobe = self._strobe, None
        if task is not None:
            task.cancel()
            # return_exceptions: the task's own CancelledError is a result
            # here; a cancellation of this coroutine still propagates.
            await asyncio.gather(task, return_exceptions=True)

    async def _reset_all(self) -> dict[str, float]:
        for node in self._handle.nodes:
            await self._handle.backend.set_clock(node, 0.0)
            self._offsets.pop(node, None)
        return {node: 0.0 for node in self._handle.nodes}

    async def stop(self) -> Any:
        await self._cancel_strobe()
        value: dict[str, Any] = dict(await self._reset_all())
        if self._strobe_error is not None:
            value["strobe-error"], self._strobe_error = self._strobe_error, None
        return value

    def active(self) -> str | None:
        if self._strobe is not None and not self._strobe.done():
            return self._strobe_text
        skewed = [f"{node} {off:+g}s" for node, off in self._offsets.items() if off]
        return f"clock {', '.join(skewed)}" if skewed else None
