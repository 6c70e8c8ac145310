"""What a checker's anomaly sentence cannot say by itself: which node answered,
which fault was in force, and which acknowledged write the read missed.

Checkers are pure functions of the client history and know nothing of the
nemesis; the harness does. `describe(anomaly, run)` returns one clause to
put after the checker's sentence, such as

    n3 answered, cut off from n1 n2 (partition halves since 0.11 s before);
    the value it missed, '5.117', was written by process 4 via n2,
    acknowledged at 14.33 s (history.jsonl line 3101)

and `lines(anomaly)` the `history.jsonl` line numbers of the operations the
anomaly names (an op's line is its index + 1: the index is dense in file
order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from checkers.history import Op
from checkers.result import Anomaly
from harness.report.faults import FaultInterval, in_force, last_before

_WRITES = frozenset({"write", "put", "w"})


@dataclass
class RunHistory:
    """A history indexed for the questions above."""

    ops: Sequence[Op]
    faults: Sequence[FaultInterval]

    def __post_init__(self) -> None:
        self.end = self.ops[-1].time if self.ops else 0
        self._completion: dict[int, Op] = {}
        pending: dict[object, Op] = {}
        for op in self.ops:
            if op.process == "nemesis":
                continue
            if op.type == "invoke":
                pending[op.process] = op
            else:
                inv = pending.pop(op.process, None)
                if inv is not None:
                    self._completion[inv.index] = op
        self._invocation = {c.index: i for i, c in self._completion.items()}
        self._writes: dict[tuple[object, str], list[Op]] | None = None

    def writes_of(self, key: object, shown: str) -> list[Op]:
        """The write invocations on `key` whose value shows as `shown`
        (its repr or str), in history order."""
        if self._writes is None:
            self._writes = {}
            for op in self.ops:
                if op.type == "invoke" and op.f in _WRITES and op.process != "nemesis":
                    try:
                        k = (op.key, repr(op.value))
                        hash(k)
                    except TypeError:
                        continue
                    self._writes.setdefault(k, []).append(op)
        try:
            return list(self._writes.get((key, shown), ()) or self._writes.get((key, repr(shown)), ()))
        except TypeError:  # an unhashable key
            return []

    def op(self, index: int) -> Op | None:
        if 0 <= index < len(self.ops) and self.ops[index].index == index:
            return self.ops[index]
        return next((o for o in self.ops if o.index == index), None)

    def span(self, index: int) -> tuple[Op, Op | None] | None:
        """The invocation and completion of the operation holding op `index`."""
        op = self.op(index)
        if op is None or op.process == "nemesis":
            return None
        if op.type == "invoke":
            return op, self._completion.get(op.index)
        inv_index = self._invocation.get(op.index)
        inv = self.op(inv_index) if inv_index is not None else None
        return (inv, op) if inv is not None else (op, op)


def lines(anomaly: Anomaly) -> list[int]:
    return sorted({i + 1 for i in anomaly.ops})


def _secs(ns: int) -> str:
    return f"{ns / 1e9:.2f} s"


def describe(anomaly: Anomaly, run: RunHistory) -> tuple[str, list[int]]:
    """The node, the fault in force and the missed write of `anomaly`, as one
    clause ('' when the anomaly names no client operation), and the history
    indexes of the operations the clause names beyond the anomaly's own."""
    spans = [s for s in (run.span(i) for i in anomaly.ops) if s is not None]
    if not spans:
        return "", []
    inv, comp = spans[0]
    node = (comp.node if comp is not None else None) or inv.node
    a, b = inv.time, comp.time if comp is not None and comp.type != "info" else run.end
    verb = "answered" if comp is not None and comp.type == "ok" else "was asked"
    parts = [_faults_clause(node, verb, a, b, run)]
    named: list[int] = []
    missed = _missed_write(anomaly, run, before=inv.index)
    if missed is not None:
        clause, write, ack = missed
        parts.append(clause)
        named += [write.index, ack.index]
    return "; ".join(p for p in parts if p), named


def _faults_clause(node: str | None, verb: str, a: int, b: int, run: RunHistory) -> str:
    who = f"{node} {verb}" if node else "no node is recorded"
    active = in_force(run.faults, a, b, run.end)
    if not active:
        last = last_before(run.faults, a)
        if last is None:
            return f"{who}; no fault had been injected yet"
        assert last.end is not None
        return f"{who}; no fault in force (the last, {last.label}, healed {_secs(a - last.end)} before)"
    said = []
    for fault in active:
        since = (f"since {_secs(a - fault.start)} before" if fault.start <= a
                 else f"from {_secs(fault.start - a)} after it began")
        effect = fault.effect(node) if node is not None else None
        if effect is not None and node in fault.cut:
            said.append(f"{node} was {effect} ({fault.kind} {_shape(fault)}{since})")
        elif effect is not None and fault.kind == "clock" and node in fault.offsets:
            said.append(f"{node}'s clock was off by {fault.offsets[node]} ({since}; {fault.label})")
        elif effect is not None:
            said.append(f"{node}: {effect}, during {fault.label} ({since})")
        else:
            said.append(f"during {fault.label} ({since})")
    return f"{who}; " + "; ".join(said)


def _shape(fault: FaultInterval) -> str:
    # "partition halves: n1 n2 | n3 n4 n5" -> "halves, "
    head = fault.label.split(":", 1)[0].removeprefix(fault.kind).strip()
    return f"{head}, " if head else ""


def _missed_write(anomaly: Anomaly, run: RunHistory, before: int) -> tuple[str, Op, Op] | None:
    """For a read that could only have returned one of `details["states"]`
    (a register's linearizability anomaly): the acknowledged write of that
    value it missed, if the history has one on the same key."""
    states = anomaly.details.get("states") if isinstance(anomaly.details, dict) else None
    if not states or len(states) != 1:
        return None
    key = anomaly.details.get("key")
    wanted = states[0]
    found: tuple[Op, Op] | None = None
    for op in run.writes_of(key, wanted):
        if op.index >= before:
            break
        comp = run.span(op.index)
        if comp is not None and comp[1] is not None and comp[1].type == "ok":
            found = (op, comp[1])
    if found is None:
        return None
    w, c = found
    via = f" via {c.node or w.node}" if (c.node or w.node) else ""
    return (f"the value it should have seen, {wanted}, was written by process {w.process}{via}, "
            f"acknowledged at {_secs(c.time)} (history.jsonl line {w.index + 1})", w, c)
