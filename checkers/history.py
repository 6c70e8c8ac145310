"""The operation record every checker reads (DESIGN.md, "The operation and the
history"), and helpers to pair invocations with their completions.

An `Op` is one line of a history: an invocation (`type="invoke"`) or its
completion (`ok`: it happened; `fail`: it certainly did not; `info`: unknown).
Checkers never read files: `harness.history` and `harness.foreign` turn
files (this project's JSON Lines, Jepsen EDN, Porcupine logs) into lists of
`Op`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

OpType = Literal["invoke", "ok", "fail", "info"]
Process = int | str  # an integer client process, or "nemesis"
TYPES: tuple[OpType, ...] = ("invoke", "ok", "fail", "info")
# The `f` of a read of one replica's own copy of a key, recorded after the
# faults heal (`checkers.replicas`): an observation of the system, not a
# client operation, which the checkers of client operations leave out.
REPLICA_READ = "replica-read"


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


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the block, then restore it
    as it was. For a checker that builds millions of objects from a history
    of millions: each full collection walks every object alive, the history
    included, and one is due every few hundred thousand new objects (about a
    fifth of the checker's time on 1,000,000 operations). Reference counting
    still frees everything the block drops; checkers make no cycles."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def pair(history: Iterable[Op], *, include_nemesis: bool = False) -> list[Operation]:
    """Pair each invocation with its process's next completion, in invocation
    order. Raises HistoryError naming the offending op."""
    with gc_paused():
        return _pair(history, include_nemesis)


def _pair(history: Iterable[Op], include_nemesis: bool) -> list[Operation]:
    # The hot loop of every checker: it keeps the invocations and their
    # completions in two parallel lists and builds each Operation once, at
    # the end (building a frozen dataclass costs more than the rest of the
    # loop). Locals, not attribute lookups, inside the loop.
    open_: dict[Process, int] = {}  # process -> slot of its invocation in flight
    invokes: list[Op] = []
    completions: list[Op | None] = []
    add_invoke, add_completion = invokes.append, completions.append
    take = open_.pop
    skip_nemesis = not include_nemesis
    for op in history:
        process = op.process
        if skip_nemesis and process == "nemesis":
            continue
        if op.type == "invoke":
            if process in open_:
                raise HistoryError(
                    f"op {op.index}: process {process} invokes while op "
                    f"{invokes[open_[process]].index} is in flight")
            open_[process] = len(invokes)
            add_invoke(op)
            add_completion(None)
        else:
            slot = take(process, None)
            if slot is None:
                raise HistoryError(f"op {op.index}: a {op.type} completion by process {process} without an invocation")
            completions[slot] = op
    return list(map(_operation, invokes, completions))


def _operation_factory() -> Any:
    """`Operation(invoke=i, completion=c)` at about half the cost: a frozen
    dataclass's __init__ goes through object.__setattr__ for every field; this
    sets the slots through their descriptors. The result is the same object
    (same class, same fields: equal, same repr, as frozen)."""
    new = object.__new__
    set_invoke = vars(Operation)["invoke"].__set__
    set_completion = vars(Operation)["completion"].__set__

    def operation(invoke: Op, completion: Op | None) -> Operation:
        o = new(Operation)
        set_invoke(o, invoke)
        set_completion(o, completion)
        return o

    return operation


_operation: Any = _operation_factory()


def complete(ops: Sequence[Operation]) -> list[Operation]:
    """Drop operations that certainly did not happen (`fail`)."""
    return [o for o in ops if o.outcome != "fail"]
