"""The shopping cart of the Dynamo paper: `add` reads the cart, unions its
siblings, adds a unique item and puts the result with the read's context; the
final reads return every item in the cart (the union of the siblings, which
are kept in `siblings`).

Judged, as the system's promise says (`claims` below), by the cart/set check
(acknowledged adds lost, items nobody added), by linearizability of each cart
as a set, by the sibling checker over the carts written (each add is a write
of its cart, `wrote` in the completion's extra; the carts it read are its
`obs`), and always by the run statistics. A client that cannot say which
cart an add wrote leaves `wrote` out; the sibling checker then sees no write.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar

from checkers import linearizable, sets, siblings, stats
from checkers.compose import Check
from checkers.history import Op, pair
from checkers.result import Result
from contract.ops import Completion, Invocation
from contract.promise import Promise
from workloads.base import WorkloadOptions, final_read, reads_and_writes, sibling_params
from workloads.keys import KeySchedule

# The share of reads per mix (`WorkloadOptions.mix`); the rest are adds. The
# cart never deletes (an add is a read-modify-write already: `contention`
# differs from the default by fewer reads; meant with one or two active keys).
READS = {"default": 0.1, "read-mostly": 0.9, "contention": 0.05}
SOURCE = "source_index"  # in the register view: the op's index in the recorded history


class CartWorker:
    def __init__(self, index: int, rng: random.Random, keys: KeySchedule, reads: float = READS["default"]) -> None:
        self.index, self.rng, self.keys = index, rng, keys
        self.reads = reads
        self.i = 0
        self.seq = 0

    def next(self) -> Invocation:
        key = self.keys.key(self.i, self.rng)
        self.i += 1
        if self.rng.random() < self.reads:
            return Invocation("read", key)
        self.seq += 1
        return Invocation("add", key, f"{self.index}.{self.seq}")

    def completed(self, op: Invocation, completion: Completion) -> None:
        pass  # every add reads the cart itself

    def new_process(self) -> None:
        pass


class CartWorkload:
    name = "cart"
    claims: ClassVar[dict[str, str]] = {
        "no-lost-adds": "the set check: no acknowledged add lost, no item nobody added",
        "linearizable": "linearizability of each cart as a set, and the set check",
        "siblings": "the sibling checker over the carts written (an add writes its cart, having read `obs`)",
        "last-write-wins": "the sibling checker over the carts written, under last-write-wins",
    }

    def __init__(self, options: WorkloadOptions) -> None:
        self.options = options
        self.keys = options.keys()

    def worker(self, index: int, rng: random.Random) -> CartWorker:
        return CartWorker(index, rng, self.keys, READS[self.options.mix])

    def final_reads(self) -> list[Invocation]:
        return [final_read(k) for k in self.keys.used_keys()]

    def validate(self, op: Invocation, completion: Completion) -> str | None:
        return reads_and_writes(op, completion, "add")

    def checks(self, promise: Promise) -> list[Check]:
        checks: list[Check] = []

        def add(check: Check) -> None:
            if all(c.name != check.name for c in checks):
                checks.append(check)

        names = promise.names()
        time_limit = self.options.linearizability_time_limit
        memory_limit = self.options.linearizability_memory_limit
        for claim in promise.claims:
            if claim.name == "linearizable":
                add(Check(name="linearizable", claim=claim.name,
                          run=lambda h: linearizable.check(h, "set", time_limit=time_limit,
                                                           memory_limit=memory_limit)))
            elif claim.name in ("siblings", "last-write-wins"):
                resolution = "dvv" if claim.name == "siblings" else "lww"
                name = "siblings" if all(c.name != "siblings" for c in checks) else "siblings-lww"
                add(Check(name=name, claim=claim.name,
                          run=partial(_carts_as_siblings, resolution=resolution, **sibling_params(claim.params))))
        if "no-lost-adds" in names or "linearizable" in names:  # a linearizable set loses no add
            add(Check(name="set", claim="no-lost-adds", run=sets.check))
        checks.append(Check(name="stats", run=stats.check))
        return checks


def _carts_as_siblings(history: Sequence[Op], **options: Any) -> Result:
    """The sibling checker over the carts written (`as_register`), its
    anomalies pointed at the operations of the recorded history."""
    register = as_register(history)
    causal = siblings.check(register, **options)
    origin = [op.extra.get(SOURCE, op.index) for op in register]
    return replace(causal, anomalies=tuple(replace(a, ops=tuple(origin[i] for i in a.ops))
                                           for a in causal.anomalies))


def as_register(history: Sequence[Op]) -> list[Op]:
    """The cart history as a multi-value register's, for the sibling checker:
    an add becomes a write of the cart it put (`wrote`) with the carts it read
    as `obs`; a read returns its sibling carts. An add that never got as far
    as choosing its cart (its read failed) wrote nothing and is left out.
    Each op keeps its index in `history` as `extra["source_index"]`."""
    out: list[Op] = []

    def emit(op: Op, **changes: Any) -> None:
        changes["extra"] = {**changes.get("extra", op.extra), SOURCE: op.index}
        out.append(replace(op, **changes))  # keeps op.index: sorted by it below

    for o in pair(history):
        c = o.completion
        if o.f == "add":
            wrote = c.extra.get("wrote") if c is not None else None
            if wrote is None:
                continue
            obs = c.extra.get("obs", []) if c is not None else []
            emit(o.invoke, f="write", value=list(wrote), extra={"obs": obs})
            if c is not None:
                emit(c, f="write", value=list(wrote), extra={})
        elif o.f == "read":
            emit(o.invoke)
            if c is not None:
                value = c.extra.get("siblings", c.value) if c.type == "ok" else c.value
                emit(c, value=value, extra={k: v for k, v in c.extra.items() if k != "siblings"})
    out.sort(key=lambda op: op.index)
    return [replace(op, index=i) for i, op in enumerate(out)]
