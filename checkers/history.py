"""The operation record every checker reads (DESIGN.md, "The operation and the
history"), and helpers to pair invocations with their completions.

An `Op` is one line of a history: an invocation (`type="invoke"`) or its
completion (`ok`: it happened; `fail`: it certainly did not; `info`: unknown).
Checkers never read files: `harness.history` turns files (this project's
JSON Lines, Jepsen EDN, Porcupine logs) into lists of `Op`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

OpType = Literal["invoke", "ok", "fail", "info"]
Process = int | str  # an integer client process, or "nemesis"
TYPES: tuple[OpType, ...] = ("invoke", "ok", "fail", "info")


@dataclass(frozen=True, kw_only=True, slots=True)
class Op:
    index: int  # position in the history, dense from 0
    time: int  # nanoseconds since the test started
    process: Process
    type: OpType
    f: str  # "read", "write", "cas", "add", ...; nemesis: "start-partition", ...
    key: Any = None  # the key, where the workload has several
    value: Any = None  # the argument (invoke) or the result (completion)
    node: str | None = None  # the node the client talked to
    error: str | None = None  # a short reason on fail/info
    extra: dict[str, Any] = field(default_factory=dict)  # workload fields such as "obs"


@dataclass(frozen=True, kw_only=True, slots=True)
class Operation:
    """An invocation paired with its completion. `completion` is None when the
    history ended before it completed (as good as `info`)."""

    invoke: Op
    completion: Op | None

    @property
    def outcome(self) -> OpType:
        return "info" if self.completion is None else self.completion.type

    @property
    def process(self) -> Process:
        return self.invoke.process

    @property
    def f(self) -> str:
        return self.invoke.f

    @property
    def key(self) -> Any:
        return self.invoke.key

    @property
    def start(self) -> int:
        return self.invoke.index

    @property
    def end(self) -> int | None:
        """Index of the completion, or None if it never completed or is `info`
        (then it may take effect at any point after its invocation)."""
        if self.completion is None or self.completion.type == "info":
            return None
        return self.completion.index


class HistoryError(ValueError):
    """A history that breaks the contract: a completion without an
    invocation, a process with two operations in flight, ..."""


def pair(history: Iterable[Op], *, include_nemesis: bool = False) -> list[Operation]:
    """Pair each invocation with its process's next completion, in invocation
    order. Raises HistoryError naming the offending op."""
    open_: dict[Process, Op] = {}
    out: list[Operation] = []
    slots: dict[int, int] = {}
    for op in history:
        if op.process == "nemesis" and not include_nemesis:
            continue
        if op.type == "invoke":
            if op.process in open_:
                raise HistoryError(
                    f"op {op.index}: process {op.process} invokes while op {open_[op.process].index} is in flight")
            open_[op.process] = op
            slots[op.index] = len(out)
            out.append(Operation(invoke=op, completion=None))
        else:
            inv = open_.pop(op.process, None)
            if inv is None:
                raise HistoryError(f"op {op.index}: a {op.type} completion by process {op.process} without an invocation")
            out[slots[inv.index]] = Operation(invoke=inv, completion=op)
    return out


def complete(ops: Sequence[Operation]) -> list[Operation]:
    """Drop operations that certainly did not happen (`fail`)."""
    return [o for o in ops if o.outcome != "fail"]
