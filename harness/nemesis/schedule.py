"""The fault schedule of `harness run --nemesis ...`: which faults a run uses
(`parse_fault_names`, `build_faults`, `check_available`) and `Nemesis`, which
alternates them while the clients work.

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

`Nemesis.run` repeats, until the deadline: sleep a staggered interval
(`interval` times uniform(0.5, 1.5)), pick one of the faults at random,
record `invoke` of its start `f`, start it, record `info` with what it did,
sleep another staggered interval (cut short at the deadline), record
`invoke` of its stop `f`, stop it, record `info`. A start or stop that raises
is recorded as `info` with `{"error": "..."}` and the schedule carries on; a
stop always follows a start, even a failed one, to undo any part of it that
took effect. `run` returns once the deadline has passed with no fault active
(it never starts a fault after the deadline); with no faults it returns at
once.

Every random choice (intervals, faults, their kinds, targets and values)
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

from harness import registry
from harness.backends.base import BackendCapabilities

from .base import ClusterHandle, Fault, Record, check_targets, describe_error
from .clock import KINDS
from .partition import SHAPES, check_shapes

FAULT_NAMES = ("partition", "kill", "pause", "clock", "packet")  # the built-ins, in this order


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

    def __post_init__(self) -> None:
        check_shapes(self.partition_shapes)
        for targets in (
            self.kill_targets,
            self.pause_targets,
            self.clock_targets,
            self.packet_targets,
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
    partition,kill`). `all` means every built-in fault (`FAULT_NAMES`);
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
                wanted.update(n for n in FAULT_NAMES if n in known)
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
        """Alternate faults until `until` (a deadline on `handle.clock`'s
        monotonic time); return with no fault active. Run it as a task and
        call `heal` afterwards whatever happens."""
        self._run_task = asyncio.current_task()
        try:
            if not self._faults:
                return
            while await self._sleep(until):
                fault = self._rng.choice(self._faults)
                await self._start(fault)
                await self._sleep(until)
                await self._stop(fault)
        finally:
            self._run_task = None

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

    async def _start(self, fault: Fault) -> None:
        f = fault.choose(self._rng)
        self._record("invoke", f, None)
        # Before the start: a start cancelled or failing halfway may have
        # done part of its harm, which stop (or heal) must undo.
        if fault not in self._unhealed:
            self._unhealed.append(fault)
        try:
            value = await fault.start(self._rng)
        except asyncio.CancelledError:
            self._record("info", f, {"error": "cancelled"})
            raise
        except Exception as exc:
            value = {"error": describe_error(exc)}
        self._record("info", f, value)

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
