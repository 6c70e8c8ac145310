"""The register workload: per key, reads, blind writes of unique values, and
read-modify-writes that put a new unique value with the context of this
process's last read of the key, recording that read's values in `obs`.

Written values are unique across the run (`<worker>.<sequence>`), so the
sibling checker can build the causal order from `obs` alone (DESIGN.md).

Which checkers judge the history follows from the system's promise (`claims`
below): `linearizable` by the linearizability checker with a register model
per key (reads as single values; unique values: the Gibbons-Korach path, no
search), `siblings` and `last-write-wins` by the sibling checker (P1-P6, as
the claim's settings promise), and always the run statistics.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar

from checkers import linearizable, siblings, stats
from checkers.compose import Check
from checkers.history import Op
from contract.ops import Completion, Invocation
from contract.promise import Promise
from workloads.base import WorkloadOptions, final_read, reads_and_writes, sibling_params
from workloads.keys import KeySchedule

READ, BLIND, RMW = 0.4, 0.25, 0.35  # the operation mix (RMW needs an earlier read, else it reads)


class RegisterWorker:
    def __init__(self, index: int, rng: random.Random, keys: KeySchedule) -> None:
        self.index, self.rng, self.keys = index, rng, keys
        self.i = 0
        self.seq = 0
        self.last: dict[str, tuple[list[Any], Any]] = {}  # key -> (values, context) of this process's last read

    def next(self) -> Invocation:
        key = self.keys.key(self.i, self.rng)
        self.i += 1
        x = self.rng.random()
        if x < READ:
            return Invocation("read", key)
        self.seq += 1
        value = f"{self.index}.{self.seq}"
        seen = self.last.get(key)
        if x < READ + RMW and seen is not None:
            values, context = seen
            return Invocation("write", key, value, extra={"obs": list(values)}, context=context)
        return Invocation("write", key, value)

    def completed(self, op: Invocation, completion: Completion) -> None:
        if op.f == "read" and completion.type == "ok":
            self.last[str(op.key)] = (list(completion.value or []), completion.context)
        elif op.f == "write":
            # After writing, that context is stale: the next read-modify-write
            # of this key reads first.
            self.last.pop(str(op.key), None)

    def new_process(self) -> None:
        self.last.clear()


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

    def worker(self, index: int, rng: random.Random) -> RegisterWorker:
        return RegisterWorker(index, rng, self.keys)

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
    wrote: a register never returns siblings). Every op keeps its index, so
    anomalies name lines of the recorded history."""
    out: list[Op] = []
    for op in history:
        if op.f == "read" and op.type == "ok" and isinstance(op.value, list) and len(op.value) <= 1:
            op = replace(op, value=op.value[0] if op.value else None)
        out.append(op)
    return out
