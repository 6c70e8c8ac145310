"""The register workload: per key, reads, blind writes of unique values,
read-modify-writes that put a new unique value with the context of this
process's last read of the key, recording that read's values in `obs`, and
deletes: with that context and `obs` (they supersede what the read saw), or
blind (no context, no `obs`).

Written values are unique across the run (`<worker>.<sequence>`), so the
sibling checker can build the causal order from `obs` alone (DESIGN.md). A
delete writes no value (a tombstone: a read after it returns `[]`), so it is
`Invocation("delete", key, None, extra={"obs": [...]}, context=...)` and
completes `ok` with no value.

The mix (`WorkloadOptions.mix`, `harness run --mix`), as shares of what a
worker decides to do next: reads, read-modify-writes, blind writes and
deletes (half of them with context):

- `default`: 30% reads, 32% read-modify-writes, 30% blind writes, 8% deletes;
- `read-mostly`: 90% reads, 5%, 3% and 2%;
- `contention`: 5% reads, 55% read-modify-writes, 32% blind writes, 8%
  deletes; meant with `--active-keys 1` or 2 (a run file's `active_keys`).

A read-modify-write (or a delete with context) builds on this process's read
of the key since its last write or delete of it; without one it reads the
key first, and its write (delete) is the worker's next operation, if that
read succeeded. So about a third of the default run's operations are the
reads of such pairs, and in every mix reads make up a little more than its
share says.

**Deletes are on by default** (the mix's share); `WorkloadOptions.deletes`
(`harness run --deletes`, a share in [0, 1)) replaces that share, and 0
turns deletes off, for a system whose client cannot delete. Such a client
should refuse a delete cleanly with `Completion("fail", error="unknown
operation 'delete'")` (a `fail` certainly did not happen: the checkers ignore
it), never treat it as a write.

Which checkers judge the history follows from the system's promise (`claims`
below): `linearizable` by the linearizability checker with a register model
per key (reads as single values, `[]` the initial value None; a delete
writes None; keys without deletes have unique values: the Gibbons-Korach
path, no search; keys with deletes take the search), `siblings` and
`last-write-wins` by the sibling checker (P1-P6 as the claim's settings
promise them, with a delete as a write of a tombstone that supersedes its
`obs`, and no resurrection of deleted values), and always the run statistics.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar, NamedTuple

from checkers import linearizable, siblings, stats
from checkers.compose import Check
from checkers.history import Op
from contract.ops import Completion, Invocation
from contract.promise import Promise
from workloads import base
from workloads.base import WorkloadOptions, final_read, reads_and_writes, sibling_params
from workloads.keys import KeySchedule


class Mix(NamedTuple):
    """Shares of the operations a worker decides on (summing to 1)."""

    read: float
    rmw: float  # read-modify-writes
    blind: float  # blind writes
    delete: float  # deletes, half of them with context

    def with_deletes(self, share: float | None) -> Mix:
        """This mix with `share` of deletes (None: as it is), the other
        operations scaled to fill the rest."""
        if share is None or share == self.delete:
            return self
        scale = (1 - share) / (1 - self.delete)
        return Mix(read=self.read * scale, rmw=self.rmw * scale, blind=self.blind * scale, delete=share)


MIXES: dict[str, Mix] = {
    "default": Mix(read=0.30, rmw=0.32, blind=0.30, delete=0.08),
    "read-mostly": Mix(read=0.90, rmw=0.05, blind=0.03, delete=0.02),
    "contention": Mix(read=0.05, rmw=0.55, blind=0.32, delete=0.08),
}
assert set(MIXES) == set(base.MIXES)


class RegisterWorker:
    def __init__(self, index: int, rng: random.Random, keys: KeySchedule, mix: Mix = MIXES["default"]) -> None:
        self.index, self.rng, self.keys = index, rng, keys
        self.mix = mix
        self.i = 0
        self.seq = 0
        self.last: dict[str, tuple[list[Any], Any]] = {}  # key -> (values, context) of this process's last read
        # (generation, key, f): a read was sent for a read-modify-write
        # ("write") or a delete with context that had nothing to build on.
        self.then: tuple[int, str, str] | None = None

    def next(self) -> Invocation:
        i = self.i
        self.i += 1
        key = self.keys.key(i, self.rng)  # drawn whatever comes next: a seed replays the same keys
        x = self.rng.random()
        generation = i // self.keys.ops_per_generation
        then, self.then = self.then, None
        if then is not None and then[0] == generation and then[1] in self.last:
            # The second half of a read-then-write (or delete), on the key
            # read: one of this generation's keys, so the bound per key holds.
            return self._with_context(then[2], then[1])
        mix = self.mix
        if x < mix.read:
            return Invocation("read", key)
        x -= mix.read
        if x < mix.rmw + mix.blind:
            if x < mix.rmw:
                if key not in self.last:
                    self.then = (generation, key, "write")
                    return Invocation("read", key)
                return self._with_context("write", key)
            return Invocation("write", key, self._value())
        if x - mix.rmw - mix.blind < mix.delete / 2:
            if key not in self.last:
                self.then = (generation, key, "delete")
                return Invocation("read", key)
            return self._with_context("delete", key)
        return Invocation("delete", key, None)

    def _value(self) -> str:
        self.seq += 1
        return f"{self.index}.{self.seq}"

    def _with_context(self, f: str, key: str) -> Invocation:
        values, context = self.last[key]
        return Invocation(f, key, self._value() if f == "write" else None, extra={"obs": list(values)},
                          context=context)

    def completed(self, op: Invocation, completion: Completion) -> None:
        if op.f == "read" and completion.type == "ok":
            self.last[str(op.key)] = (list(completion.value or []), completion.context)
        elif op.f in ("write", "delete"):
            # After writing, that context is stale: the next read-modify-write
            # of this key reads first.
            self.last.pop(str(op.key), None)

    def new_process(self) -> None:
        self.last.clear()
        self.then = None


class RegisterWorkload:
    name = "register"
    claims: ClassVar[dict[str, str]] = {
        "linearizable": "linearizability of each key as a register (one value per read)",
        "siblings": "the sibling checker, DESIGN.md P1-P6 (those the claim's settings promise)",
        "last-write-wins": "the sibling checker under last-write-wins: P1-P4 (a write may be lost only "
                           "to a concurrent one), P5/P6 where promised",
    }

    def __init__(self, options: WorkloadOptions) -> None:
        self.options = options
        self.keys = options.keys()
        self.mix = MIXES[options.mix].with_deletes(options.deletes)

    def worker(self, index: int, rng: random.Random) -> RegisterWorker:
        return RegisterWorker(index, rng, self.keys, self.mix)

    def final_reads(self) -> list[Invocation]:
        return [final_read(k) for k in self.keys.used_keys()]

    def validate(self, op: Invocation, completion: Completion) -> str | None:
        return reads_and_writes(op, completion, "write")

    def checks(self, promise: Promise) -> list[Check]:
        checks: list[Check] = []
        time_limit = self.options.linearizability_time_limit
        memory_limit = self.options.linearizability_memory_limit
        for claim in promise.claims:
            if claim.name == "linearizable":
                checks.append(Check(name="linearizable", claim=claim.name,
                                    run=lambda h: linearizable.check(single_values(h), "register",
                                                                     time_limit=time_limit,
                                                                     memory_limit=memory_limit)))
            elif claim.name in ("siblings", "last-write-wins"):
                resolution = "dvv" if claim.name == "siblings" else "lww"
                name = "siblings" if all(c.name != "siblings" for c in checks) else "siblings-lww"
                checks.append(Check(name=name, claim=claim.name,
                                    run=partial(siblings.check, resolution=resolution,
                                                **sibling_params(claim.params))))
        checks.append(Check(name="stats", run=stats.check))
        return checks


def single_values(history: Sequence[Op]) -> list[Op]:
    """The history as a plain register's: a read's list of values becomes its
    one value (None for none; a list of two stays a list, which no write
    wrote: a register never returns siblings). A delete stays a delete: the
    register model writes its initial value (None) for it. Every op keeps its
    index, so anomalies name lines of the recorded history."""
    out: list[Op] = []
    for op in history:
        if op.f == "read" and op.type == "ok" and isinstance(op.value, list) and len(op.value) <= 1:
            op = replace(op, value=op.value[0] if op.value else None)
        out.append(op)
    return out
