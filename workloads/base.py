"""What a workload is: a generator of operations per worker, the final reads
that end a run, and the checkers that judge the history.

The runner owns time, processes and nodes; a workload only decides *what* to
do next. `Worker.next()` returns the next `Invocation` for one worker;
`Worker.completed()` tells it how that ended (a read's values and context feed
later read-modify-writes); `Worker.new_process()` is called when the worker's
process crashed (an `info` completion) and it continues as a new process,
which knows nothing the old one read.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from checkers.history import Op
from checkers.result import Result
from harness.systems.base import Completion, Invocation
from workloads.keys import KeySchedule


@dataclass(frozen=True)
class WorkloadOptions:
    concurrency: int = 10
    active_keys: int = 4  # keys in use at once
    max_ops_per_key: int = 150  # then a key retires for a fresh one
    settings: Mapping[str, Any] = field(default_factory=dict)  # the cluster's n, w, r, resolution ...
    linearizability_time_limit: float = 60.0

    def keys(self) -> KeySchedule:
        return KeySchedule.for_writes(concurrency=self.concurrency, max_ops_per_key=self.max_ops_per_key,
                                      active=self.active_keys)


class Worker(Protocol):
    def next(self) -> Invocation: ...

    def completed(self, op: Invocation, completion: Completion) -> None: ...

    def new_process(self) -> None: ...


class Workload(Protocol):
    name: str

    def worker(self, index: int, rng: random.Random) -> Worker: ...

    def final_reads(self) -> list[Invocation]:
        """One read per key used, to send to every node after healing."""
        ...

    def check(self, history: Sequence[Op], settings: Mapping[str, Any]) -> list[Result]:
        """Judge a history of this workload recorded with these cluster settings."""
        ...


def final_read(key: str) -> Invocation:
    return Invocation("read", key, None, {"final": True})


def sibling_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The cluster settings the sibling checker needs (DESIGN.md's defaults)."""
    return {"n": int(settings.get("n", 3)), "w": int(settings.get("w", 2)), "r": int(settings.get("r", 2)),
            "resolution": str(settings.get("resolution", "dvv")), "quorum": str(settings.get("quorum", "sloppy")),
            "read_repair": str(settings.get("read_repair", "async"))}
