"""The shopping cart of the Dynamo paper: `add` reads the cart, unions its
siblings, adds a unique item and puts the result with the read's context; the
final reads return every item in the cart (the union of the siblings, which
are kept in `siblings`).

Judged by the cart/set check (acknowledged adds lost, items nobody added), by
the sibling checker over the carts written (each add is a write of its cart;
the carts it read are its `obs`), and by the run statistics.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from checkers import sets, siblings, stats
from checkers.history import Op, pair
from checkers.result import Result
from harness.systems.base import Completion, Invocation
from workloads.base import WorkloadOptions, final_read, sibling_settings
from workloads.keys import KeySchedule

READS = 0.1  # of the operations, the rest are adds
SOURCE = "source_index"  # in the register view: the op's index in the recorded history


class CartWorker:
    def __init__(self, index: int, rng: random.Random, keys: KeySchedule) -> None:
        self.index, self.rng, self.keys = index, rng, keys
        self.i = 0
        self.seq = 0

    def next(self) -> Invocation:
        key = self.keys.key(self.i, self.rng)
        self.i += 1
        if self.rng.random() < READS:
            return Invocation("read", key)
        self.seq += 1
        return Invocation("add", key, f"{self.index}.{self.seq}")

    def completed(self, op: Invocation, completion: Completion) -> None:
        pass  # every add reads the cart itself

    def new_process(self) -> None:
        pass


class CartWorkload:
    name = "cart"

    def __init__(self, options: WorkloadOptions) -> None:
        self.options = options
        self.keys = options.keys()

    def worker(self, index: int, rng: random.Random) -> CartWorker:
        return CartWorker(index, rng, self.keys)

    def final_reads(self) -> list[Invocation]:
        return [final_read(k) for k in self.keys.used_keys()]

    def check(self, history: Sequence[Op], settings: Mapping[str, Any]) -> list[Result]:
        register = as_register(history)
        causal = siblings.check(register, **sibling_settings(settings))
        # Point the anomalies at the operations of the recorded history.
        origin = [op.extra.get(SOURCE, op.index) for op in register]
        causal = replace(causal, anomalies=tuple(replace(a, ops=tuple(origin[i] for i in a.ops))
                                                 for a in causal.anomalies))
        return [sets.check(history), causal, stats.check(history)]


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
