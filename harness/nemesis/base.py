"""What every fault is: the `Fault` protocol, the `ClusterHandle` it hurts the
cluster through, the `Clock` it waits on, and the node-picking helper the
faults share.

A fault is one kind of harm (a partition, killed processes, a skewed clock
...) with a `start` that injects it and a `stop` that undoes it. The schedule
(`harness.nemesis.schedule.Nemesis`) alternates them and writes each start and
stop to the history as an `invoke`/`info` pair of process `"nemesis"`, the way
Jepsen's nemesis ops look. A fault never writes the history itself: it returns
a JSON-able description of what it did, which becomes the `info` op's value.

Faults act only through the backend's primitives (`harness.backends.base`)
and the runner's `restart`; they hold the state needed to undo themselves, so
that `stop` is correct after a `start` that raised or was cancelled halfway.
All their randomness comes from the `random.Random` handed to `choose` and
`start`, so a seed replays the same faults.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.backends.base import Backend, BackendCapabilities

# record(type, f, value): type is "invoke" or "info"; the runner writes it to
# the history as an op of process "nemesis" (adding index and time).
Record = Callable[[str, str, Any], None]

# How many nodes a fault hits (Jepsen's node targets):
# one: one random node; minority: 1 .. (n-1)//2 random nodes (one when n < 3);
# majority: n//2+1 random nodes; all: every node; any: a random non-empty
# subset of random size (1 .. n, so sometimes all); primaries: every replica
# of the key written last (`ClusterHandle.hot_replicas`; one random node when
# the system cannot say), so that the key's writes go to fallbacks; primary:
# one random replica of that key (the one whose restart meets its writes).
TARGETS = ("one", "minority", "majority", "all", "any", "primaries", "primary")


class Clock(Protocol):
    """The time a nemesis schedules on: the runner's, or a virtual one in tests."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines are on it)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after `seconds` on this clock; cancellable."""
        ...


class AsyncioClock:
    """Real time: `time.monotonic` (what asyncio's loop uses) and `asyncio.sleep`."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "AsyncioClock()"


@dataclass
class ClusterHandle:
    """What a fault may touch: the backend's primitives, the node names, and
    the runner's `restart`."""

    backend: Backend
    nodes: list[str]
    # The runner's: start the node's process again on the same data and wait
    # until it serves (a killed node is brought back through the DB's command,
    # which only the runner knows).
    restart: Callable[[str], Awaitable[None]]
    # Faults that act over time (the clock strobe) sleep on this clock.
    clock: Clock = field(default_factory=AsyncioClock)
    # The system's: the wall clock a node's process sees (Unix seconds), or
    # None if it cannot tell; None when the system cannot be asked at all.
    # The clock fault records the skew each node really saw.
    node_time: Callable[[str], Awaitable[float | None]] | None = None
    # The runner's: the replicas of the key a client wrote last, as the
    # system says (`ReplicaReads`); [] when it cannot say. For the
    # `primaries` targets.
    hot_replicas: Callable[[], Awaitable[list[str]]] | None = None
    # The system's convergence signal (`DB.converged` over every node):
    # True once the replicas agree, None if the system cannot tell; None
    # when it cannot be asked. The wipe fault waits on it before another
    # replica may lose its data.
    converge: Callable[[], Awaitable[bool | None]] | None = None


class Fault(Protocol):
    """One kind of fault. Subclass it explicitly to inherit the defaults of
    `choose` and `unavailable`.

    The schedule calls, for each round: `choose(rng)`, records an `invoke` of
    the `f` it returned, awaits `start(rng)`, records an `info` with the
    value, later records an `invoke` of `stop_f`, awaits `stop()` and records
    an `info` with its value. `heal` calls `stop` again for any fault whose
    `active()` is not None, so `stop` must be idempotent and must undo a
    partial or cancelled `start`.
    """

    name: str  # "partition", "kill", "pause", "clock", "packet"
    start_f: str  # the f of a start ("start-partition", "kill", ...)
    stop_f: str  # the f of a stop ("stop-partition", "restart", ...)

    def choose(self, rng: random.Random) -> str:
        """Called just before `start`: draw what the next start will do (for a
        fault with several kinds of start, such as the clock's bump, strobe
        and reset) and return the `f` to record for it. Must not inject
        anything. Faults with one kind of start return `start_f` and draw
        nothing."""
        return self.start_f

    def unavailable(self, caps: BackendCapabilities) -> str | None:
        """Why this fault cannot run on a backend with these capabilities
        (saying what to install or which backend to use), else None. Called
        before the run; must not touch the cluster."""
        return None

    async def start(self, rng: random.Random) -> Any:
        """Inject the fault (of the kind `choose` drew); return a JSON-able
        description of what was done, recorded as the `info` op's value.
        May raise: the schedule records the error and calls `stop` later."""
        ...

    async def stop(self) -> Any:
        """Undo everything `start` did, including a partial or cancelled
        start; safe to call when nothing is active and to call twice. Return
        a JSON-able description of what was undone."""
        ...

    def active(self) -> str | None:
        """A short text for the live status line while the fault is in
        effect (or might be: a start was begun), else None. Pure."""
        ...


def check_targets(targets: str) -> str:
    """Return `targets` if it is one of `TARGETS`, else raise ValueError."""
    if targets not in TARGETS:
        raise ValueError(f"unknown targets {targets!r}; valid: {', '.join(TARGETS)}")
    return targets


def pick_nodes(nodes: Sequence[str], rng: random.Random, targets: str) -> list[str]:
    """Some of `nodes` as `targets` says (see `TARGETS`), in `nodes`' order."""
    n = len(nodes)
    if n == 0:
        return []
    if targets == "one":
        count = 1
    elif targets == "minority":
        count = rng.randint(1, max(1, (n - 1) // 2))
    elif targets == "majority":
        count = n // 2 + 1
    elif targets == "all":
        count = n
    elif targets == "any":
        count = rng.randint(1, n)
    elif targets in ("primaries", "primary"):  # without the system's word (see `choose_nodes`): one node
        count = 1
    else:
        check_targets(targets)
    chosen = set(rng.sample(list(nodes), count))
    return [node for node in nodes if node in chosen]


async def choose_nodes(handle: ClusterHandle, among: Sequence[str], rng: random.Random, targets: str) -> list[str]:
    """`pick_nodes`, where `primaries` asks the handle for the replicas of the
    key written last (those of them in `among`; one random node of `among`
    when there are none) and `primary` for one random replica of it."""
    if targets not in ("primaries", "primary"):
        return pick_nodes(among, rng, targets)
    hot = await handle.hot_replicas() if handle.hot_replicas is not None else []
    chosen = [node for node in among if node in hot]
    if targets == "primary" and chosen:
        return [rng.choice(chosen)]
    return chosen or pick_nodes(among, rng, "one")


def log_uniform(rng: random.Random, low: float, high: float) -> float:
    """A number between low and high (both > 0) whose logarithm is uniform:
    as likely to be in 10-100 ms as in 10-100 s."""
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def describe_error(exc: BaseException) -> str:
    """The text recorded for a fault that raised."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
