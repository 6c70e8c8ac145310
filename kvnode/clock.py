"""The node's one time seam: every reading of time in kvnode goes through a `Clock`.

Two readings, kept apart on purpose:

- `wall_ns()` is wall-clock time in nanoseconds. It is used for the
  timestamps of last-write-wins versions (`kvnode.versions`), and for the
  age of stored hints (`kvnode.handoff`, which must survive a restart), and
  for log timestamps. The harness's clock nemesis skews a node with
  libfaketime, which moves the wall clock and leaves the monotonic clock
  alone, so a skew changes exactly these (a node skewed forward also expires
  its hints early, as a real one would) and timeouts keep working.
- `monotonic()` is seconds on a clock that never goes backwards, for
  timeouts, failure detection and anything else that measures an interval.

Why a seam and not `time.time()`: a later deterministic simulation runs a whole
cluster in one process on virtual time (see DESIGN.md). It swaps `SystemClock`
for a `ManualClock` it advances itself; nothing else in the node has to change,
as long as nothing outside this module reads the time.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Where a node reads the time. Both methods are cheap and never block."""

    def wall_ns(self) -> int:
        """Wall-clock nanoseconds since the epoch. Called to stamp
        last-write-wins versions, hints and log lines; must not be used to
        measure intervals (it may jump, backwards included, under skew)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards, with an arbitrary
        origin. Called for timeouts and intervals; must not be stored in or
        compared with anything another process produced."""
        ...


class SystemClock:
    """The real clocks of the process (`time.time_ns`, `time.monotonic`)."""

    __slots__ = ()

    def wall_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to, for tests and simulation.

    `advance(seconds)` moves both readings together, as real time does;
    `skew(ns)` moves the wall clock alone, as libfaketime does.
    """

    __slots__ = ("_monotonic", "_wall_ns")

    def __init__(self, *, wall_ns: int = 0, monotonic: float = 0.0) -> None:
        self._wall_ns = wall_ns
        self._monotonic = monotonic

    def wall_ns(self) -> int:
        return self._wall_ns

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Let `seconds` of time pass on both clocks."""
        if seconds < 0:
            raise ValueError(f"time cannot go backwards: advance({seconds!r})")
        self._monotonic += seconds
        self._wall_ns += round(seconds * 1_000_000_000)

    def skew(self, offset_ns: int) -> None:
        """Jump the wall clock by `offset_ns` (negative: backwards); the
        monotonic clock does not move."""
        self._wall_ns += offset_ns

    def __repr__(self) -> str:
        return f"ManualClock(wall_ns={self._wall_ns!r}, monotonic={self._monotonic!r})"
