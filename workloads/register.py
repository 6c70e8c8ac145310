"""The register workload: per key, reads, blind writes of unique values, and
read-modify-writes that put a new unique value with the context of this
process's last read of the key, recording that read's values in `obs`.

Written values are unique across the run (`<worker>.<sequence>`), so the
sibling checker can build the causal order from `obs` alone (DESIGN.md). The
history is judged by the sibling checker (P1-P6, as the cluster's settings
promise), by the run statistics, and, when reads return one value (LWW), by
the linearizability checker with a register model per key (unique values: the
Gibbons-Korach path, no search).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from checkers import linearizable, siblings, stats
from checkers.history import Op
from checkers.result import Result
from harness.systems.base import Completion, Invocation
from workloads.base import WorkloadOptions, final_read, sibling_settings
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
            return Invocation("write", key, value, {"obs": list(values)}, context=context)
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

    def __init__(self, options: WorkloadOptions) -> None:
        self.options = options
        self.keys = options.keys()

    def worker(self, index: int, rng: random.Random) -> RegisterWorker:
        return RegisterWorker(index, rng, self.keys)

    def final_reads(self) -> list[Invocation]:
        return [final_read(k) for k in self.keys.used_keys()]

    def check(self, history: Sequence[Op], settings: Mapping[str, Any]) -> list[Result]:
        results = [siblings.check(history, **sibling_settings(settings)), stats.check(history)]
        if settings.get("resolution") == "lww":
            results.append(linearizable.check(single_values(history), "register",
                                              time_limit=self.options.linearizability_time_limit))
        return results


def single_values(history: Sequence[Op]) -> list[Op]:
    """The history as a plain register's: a read's list of values becomes its
    one value (None for none; a list of two stays a list, which no write
    wrote: LWW must never return siblings). Nemesis ops are dropped."""
    out: list[Op] = []
    for op in history:
        if op.process == "nemesis":
            continue
        if op.f == "read" and op.type == "ok" and isinstance(op.value, list) and len(op.value) <= 1:
            op = replace(op, value=op.value[0] if op.value else None)
        out.append(replace(op, index=len(out)))
    return out
