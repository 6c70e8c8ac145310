"""The fault schedule of `harness run --nemesis ...`: which faults a run uses
(`parse_fault_names`, `build_faults`, `check_available`), how often
(`auto_interval`) and `Nemesis`, which alternates them while the clients work.

How the runner uses it::

    faults = build_faults(["partition", "kill"], handle, FaultOptions())
    if reasons := check_available(faults, backend.capabilities()):
        ...  # refuse to run (exit 254), listing the reasons
    nemesis = Nemesis(faults, handle, record, random.Random(seed), interval=10.0)
    task = asyncio.create_task(nemesis.run(until=handle.clock.monotonic() + time_limit))
    try:
        ...  # clients run; the status line shows nemesis.active()
        await task
    finally:
        await nemesis.heal()  # on every exit path, Ctrl-C included

`Nemesis.run` repeats rounds until the deadline: sleep a staggered interval
(`interval` times uniform(0.5, 1.5)), start the round's faults, sleep
another staggered interval (cut short at the deadline), stop them in the
reverse order. Each start and stop is recorded as an `invoke` of its `f`
and an `info` with what it did. A start or stop that raises is recorded as
`info` with `{"error": "..."}` and the schedule carries on; a stop always
follows a start, even a failed one, to undo any part of it that took
effect. `run` returns once the deadline has passed with no fault active (it
never starts a round after the deadline); with no faults it returns at
once.

Which faults a round uses is drawn from a bag that holds every fault once
(and, with several faults, the pairs in `PAIRS`), shuffled, refilled when
empty: so every kind gets its share of a short run, where drawing each
round at random let one kind crowd out the others. A pair starts its two
faults a moment apart and keeps both in force together: a partition and
then a kill or pause aimed at its minority side (the nodes that can no
longer reach a majority), the harm that quorum bugs need.

Every random choice (the bag's order, intervals, kinds, targets and values)
comes from the one `random.Random` given, and every wait is on
`handle.clock`, so on a virtual clock a seed replays the same history.

`heal` cancels a `run` still going, stops every fault that is or may be
active (recording the stop ops), then calls `backend.heal_all()`. It is safe
to call twice, and after a start that was cancelled or raised.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from harness import registry
from harness.backends.base import BackendCapabilities

from .base import ClusterHandle, Fault, Record, check_targets, describe_error
from .clock import KINDS
from .partition import SHAPES, check_shapes

FAULT_NAMES = ("partition", "kill", "pause", "clock", "packet", "power", "wipe")  # the built-ins, in this order
# What `--nemesis all` means: the built-ins that lose no data (not power, wipe).
ALL = ("partition", "kill", "pause", "clock", "packet")

# Rounds that keep two faults in force together: the first is started, then
# after a moment the second, aimed at the first's minority side when it can
# be (`Aimable`).
PAIRS = (("partition", "kill"), ("partition", "pause"))

DEFAULT_INTERVAL = 10.0  # seconds, for a run long enough to give every fault its rounds
ROUNDS_PER_FAULT = 2  # what `auto_interval` aims for in a short run


def auto_interval(time_limit: float, faults: int) -> float:
    """The nemesis interval when none is given: `DEFAULT_INTERVAL`, or
    shorter for a short run, so that each of `faults` kinds (a round is two
    intervals on average) gets about `ROUNDS_PER_FAULT` rounds."""
    if faults <= 0:
        return DEFAULT_INTERVAL
    fitted = time_limit / (2 * ROUNDS_PER_FAULT * faults)
    return round(max(0.5, min(DEFAULT_INTERVAL, fitted)), 2)


@runtime_checkable
class Aimable(Protocol):
    """Optional, for a fault whose victims can be chosen among given nodes
    (kill and pause): the second fault of a pair is aimed at the first's
    minority side."""

    async def start_among(self, rng: random.Random, nodes: Sequence[str]) -> Any:
        """`start`, with the victims (as many as the fault's targets say, at
        most all of `nodes`) picked among `nodes`."""
        ...


@dataclass(frozen=True, kw_only=True)
class FaultOptions:
    """How the faults pick their victims and values (see each fault's class)."""

    partition_shapes: tuple[str, ...] = tuple(SHAPES)
    kill_targets: str = "one"  # harness.nemesis.base.TARGETS
    pause_targets: str = "one"
    clock_kinds: tuple[str, ...] = KINDS
    clock_targets: str = "any"
    clock_min_s: float = 0.01
    clock_max_s: float = 300.0
    packet_targets: str = "any"
    packet_delay_ms: tuple[float, float] = (50.0, 500.0)
    packet_loss: tuple[float, float] = (0.05, 0.30)
    power_targets: str = "one"  # a whole-cluster power loss: "all"
    power_torn: float = 0.5  # probability that a node's loss tears its last unsynced writes
    wipe_targets: str = "one"

    def __post_init__(self) -> None:
        check_shapes(self.partition_shapes)
        for targets in (
            self.kill_targets,
            self.pause_targets,
            self.clock_targets,
            self.packet_targets,
            self.power_targets,
            self.wipe_targets,
        ):
            check_targets(targets)


def fault_names() -> tuple[str, ...]:
    """Every registered fault (`harness.registry`, group
    `dynamo_harness.nemeses`): the built-ins in `FAULT_NAMES` order, then
    plug-ins by name."""
    registered = registry.names("nemeses")
    return (*(n for n in FAULT_NAMES if n in registered),
            *sorted(n for n in registered if n not in FAULT_NAMES))


def parse_fault_names(names: Iterable[str]) -> tuple[str, ...]:
    """The fault names that `names` asks for, in `fault_names()` order.

    Each item may hold several comma-separated names (`--nemesis
    partition,kill`). `all` means every built-in fault that loses no data (`ALL`: not power, wipe);
    `none` means no fault and cannot be combined with another name. Raises
    ValueError naming a bad name and the valid ones.
    """
    known = fault_names()
    wanted: set[str] = set()
    saw_none = False
    for item in names:
        for raw in item.split(","):
            name = raw.strip().lower()
            if not name:
                continue
            if name == "all":
                wanted.update(n for n in ALL if n in known)
            elif name == "none":
                saw_none = True
            elif name in known:
                wanted.add(name)
            else:
                valid = ", ".join((*known, "all", "none"))
                raise ValueError(f"unknown nemesis {raw.strip()!r}; valid: {valid}")
    if saw_none and wanted:
        raise ValueError(f"nemesis 'none' cannot be combined with {', '.join(sorted(wanted))}")
    return tuple(name for name in known if name in wanted)


def build_faults(
    names: Sequence[str], handle: ClusterHandle, options: FaultOptions | None = None
) -> list[Fault]:
    """The faults `names` asks for (see `parse_fault_names`), each built by
    its registered factory as `factory(handle, options)`. Touches nothing:
    checking that the backend can run them is `check_available`'s job."""
    opts = options if options is not None else FaultOptions()
    faults: list[Fault] = []
    for name in parse_fault_names(names):
        factory = registry.load("nemeses", name)
        fault = factory(handle, opts)
        for member in ("name", "start_f", "stop_f", "start", "stop", "active"):
            if not hasattr(fault, member):
                raise registry.PluginError(f"the nemesis {name!r} built {type(fault).__name__}, which has no "
                                           f"`{member}`: a fault needs name, start_f, stop_f, start, stop "
                                           "and active (harness.nemesis.base.Fault)")
        faults.append(fault)
    return faults


def check_available(faults: Iterable[Fault], caps: BackendCapabilities) -> list[str]:
    """Why some of these faults cannot run on a backend with `caps`, one
    `"name: reason"` line per fault; empty when all can. The runner refuses
    to start a run when this is not empty."""
    return [
        f"{fault.name}: {reason}"
        for fault in faults
        if (reason := fault.unavailable(caps)) is not None
    ]


class Nemesis:
    """Runs the fault schedule (see the module docstring) and heals."""

    def __init__(
        self,
        faults: Sequence[Fault],
        handle: ClusterHandle,
        record: Record,
        rng: random.Random,
        *,
        interval: float = 10.0,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"nemesis interval must be positive, got {interval}")
        self._faults = list(faults)
        self._handle = handle
        self._record = record
        self._rng = rng
        self._interval = interval
        # Faults started and not yet stopped cleanly (a stop that raised
        # leaves its fault here for heal to try again), in start order.
        self._unhealed: list[Fault] = []
        self._run_task: asyncio.Task[object] | None = None

    @property
    def faults(self) -> list[Fault]:
        return list(self._faults)

    def active(self) -> list[str]:
        """Short texts for the faults in effect, for the live status line."""
        return [text for fault in self._faults if (text := fault.active()) is not None]

    async def run(self, until: float) -> None:
        """Run rounds until `until` (a deadline on `handle.clock`'s
        monotonic time); return with no fault active. Run it as a task and
        call `heal` afterwards whatever happens."""
        self._run_task = asyncio.current_task()
        try:
            if not self._faults:
                return
            bag: list[tuple[Fault, ...]] = []
            while await self._sleep(until):
                if not bag:
                    bag = self.rounds()
                    self._rng.shuffle(bag)
                await self._round(bag.pop(), until)
        finally:
            self._run_task = None

    def rounds(self) -> list[tuple[Fault, ...]]:
        """One bagful of rounds: every fault alone, then the `PAIRS` whose
        two faults are both in use."""
        by_name = {fault.name: fault for fault in self._faults}
        rounds: list[tuple[Fault, ...]] = [(fault,) for fault in self._faults]
        rounds += [(by_name[a], by_name[b]) for a, b in PAIRS if a in by_name and b in by_name]
        return rounds

    async def _round(self, faults: tuple[Fault, ...], until: float) -> None:
        # A cancellation leaves the faults to `heal`, which stops them all.
        first, *rest = faults
        value = await self._start(first)
        for fault in rest:
            # A moment after the first: its harm is in force, and writes it
            # caught are still in flight.
            await self._handle.clock.sleep(self._interval * self._rng.uniform(0.05, 0.25))
            await self._start(fault, among=minority_side(value, self._handle.nodes))
        await self._sleep(until)
        for fault in reversed(faults):
            await self._stop(fault)

    async def heal(self) -> None:
        """Cancel a `run` still going, stop every fault that is or may be
        active (recording the stop ops), then `backend.heal_all()`. Safe to
        call twice; call it on every exit path."""
        task = self._run_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            # The run task's CancelledError is a result here; a cancellation
            # of heal itself still propagates.
            await asyncio.gather(task, return_exceptions=True)
        for fault in self._faults:
            if fault in self._unhealed or fault.active() is not None:
                await self._stop(fault)
        # Whatever the faults' own stops did or failed to do.
        await self._handle.backend.heal_all()

    async def _sleep(self, until: float) -> bool:
        """Sleep a staggered interval, but not past `until`; False once the
        deadline has passed."""
        clock = self._handle.clock
        pause = self._interval * self._rng.uniform(0.5, 1.5)
        remaining = until - clock.monotonic()
        if remaining <= 0:
            return False
        if pause >= remaining:
            # Cut short at the deadline. Decided here, not by reading the
            # clock after: asyncio may wake a timer up to its clock resolution
            # early, which must not start one more fault at the deadline.
            await clock.sleep(remaining)
            return False
        await clock.sleep(pause)
        return clock.monotonic() < until

    async def _start(self, fault: Fault, among: Sequence[str] | None = None) -> Any:
        """Start `fault` (its victims among `among` if given and it can aim);
        the value recorded."""
        f = fault.choose(self._rng)
        self._record("invoke", f, None)
        # Before the start: a start cancelled or failing halfway may have
        # done part of its harm, which stop (or heal) must undo.
        if fault not in self._unhealed:
            self._unhealed.append(fault)
        try:
            if among is not None and isinstance(fault, Aimable):
                value = await fault.start_among(self._rng, among)
            else:
                value = await fault.start(self._rng)
        except asyncio.CancelledError:
            self._record("info", f, {"error": "cancelled"})
            raise
        except Exception as exc:
            value = {"error": describe_error(exc)}
        self._record("info", f, value)
        return value

    async def _stop(self, fault: Fault) -> None:
        self._record("invoke", fault.stop_f, None)
        try:
            value = await fault.stop()
        except asyncio.CancelledError:
            self._record("info", fault.stop_f, {"error": "cancelled"})
            raise
        except Exception as exc:
            value = {"error": describe_error(exc)}
        else:
            if fault in self._unhealed:
                self._unhealed.remove(fault)
        self._record("info", fault.stop_f, value)


def minority_side(value: Any, nodes: Sequence[str]) -> list[str]:
    """The nodes a partition (as its start recorded it: `{"grudge": {node:
    [dropped ...]}}`) left unable to reach a majority, itself included; every
    node when it left none so (a majorities ring) or `value` is no partition."""
    grudge = value.get("grudge") if isinstance(value, dict) else None
    if not isinstance(grudge, dict) or not grudge:
        return list(nodes)
    majority = len(nodes) // 2 + 1
    side = [n for n in nodes if len(nodes) - len(grudge.get(n, ())) < majority]
    return side or list(nodes)
