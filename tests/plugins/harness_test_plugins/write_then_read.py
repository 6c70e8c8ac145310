"""A workload plug-in: each worker writes a unique value to a key shared
with the others, then reads that key back. Besides `linearizable` (the
built-in checker) it checks a claim of its own, `read-your-writes`: after a
process's write is acknowledged, its next read of the key returns that value
or one written later, never nothing and never a value whose write had
completed before its own began."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, ClassVar

from checkers import linearizable, stats
from checkers.compose import Check
from checkers.history import Op, pair
from checkers.result import Anomaly, Result
from contract import Completion, Invocation, Promise
from workloads.base import WorkloadOptions, final_read, reads_and_writes
from workloads.keys import KeySchedule
from workloads.register import single_values


class _Worker:
    def __init__(self, index: int, rng: random.Random, keys: KeySchedule) -> None:
        self.index, self.rng, self.keys = index, rng, keys
        self.i = 0
        self.pending: str | None = None  # the key to read back next

    def next(self) -> Invocation:
        if self.pending is not None:
            key, self.pending = self.pending, None
            return Invocation("read", key)
        key = self.keys.key(self.i, self.rng)
        self.i += 1
        return Invocation("write", key, f"{self.index}.{self.i}")

    def completed(self, op: Invocation, completion: Completion) -> None:
        if op.f == "write" and completion.type == "ok":
            self.pending = str(op.key)

    def new_process(self) -> None:
        self.pending = None


def read_your_writes(history: Sequence[Op]) -> Result:
    ended: dict[Any, int] = {}  # value -> index of its write's ok completion
    for o in pair(history):
        if o.f == "write" and o.completion is not None and o.completion.type == "ok":
            ended[o.invoke.value] = o.completion.index
    last: dict[tuple[Any, Any], Op] = {}  # (process, key) -> the invocation of its last ok write
    anomalies: list[Anomaly] = []
    for o in pair(history):
        c = o.completion
        if c is None or c.type != "ok":
            continue
        if o.f == "write":
            last[(o.process, o.key)] = o.invoke
            continue
        mine = last.pop((o.process, o.key), None)
        if mine is None:
            continue
        got = c.value[0] if isinstance(c.value, list) and c.value else None
        if got is None or ended.get(got, mine.index) < mine.index:
            anomalies.append(Anomaly(type="stale-own-read", ops=(mine.index, o.invoke.index),
                                     explanation=f"process {o.process} wrote {mine.value!r} to {o.key!r}, then "
                                                 f"read {got!r}, written before"))
    return Result(checker="read-your-writes", valid=not anomalies, anomalies=tuple(anomalies))


class WriteThenRead:
    name = "write-then-read"
    speaks = "register"  # reads and writes: every system's register client serves it
    claims: ClassVar[dict[str, str]] = {
        "linearizable": "linearizability of each key as a register",
        "read-your-writes": "a process reads back its own write, or a later one",
    }

    def __init__(self, options: WorkloadOptions) -> None:
        self.keys = options.keys()

    def worker(self, index: int, rng: random.Random) -> _Worker:
        return _Worker(index, rng, self.keys)

    def final_reads(self) -> list[Invocation]:
        return [final_read(k) for k in self.keys.used_keys()]

    def validate(self, op: Invocation, completion: Completion) -> str | None:
        return reads_and_writes(op, completion, "write")

    def checks(self, promise: Promise) -> list[Check]:
        checks = []
        if "linearizable" in promise.names():
            checks.append(Check(name="linearizable", claim="linearizable",
                                run=lambda h: linearizable.check(single_values(h), "register")))
        if "read-your-writes" in promise.names():
            checks.append(Check(name="read-your-writes", claim="read-your-writes", run=read_your_writes))
        checks.append(Check(name="stats", run=stats.check))
        return checks
