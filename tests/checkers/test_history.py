"""checkers/history.py: pair() against a plain reference implementation on
generated histories (pending invocations, `info` and `fail` completions,
nemesis ops, string and integer processes, broken histories), and the
garbage-collector pause the checkers run under."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkers.history import HistoryError, Op, Operation, gc_paused, pair

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROCESSES: list[int | str] = [0, 1, 2, 7, "nemesis", "client-a"]


def reference_pair(history: list[Op], include_nemesis: bool = False) -> list[Operation]:
    """The contract, written plainly: each invocation with its process's next
    completion, in invocation order; None for one still in flight at the end."""
    in_flight: dict[Any, list[Any]] = {}
    pairs: list[list[Any]] = []
    for op in history:
        if op.process == "nemesis" and not include_nemesis:
            continue
        if op.type == "invoke":
            if op.process in in_flight:
                raise HistoryError(f"op {op.index}: process {op.process} invokes while op "
                                   f"{in_flight[op.process][0].index} is in flight")
            in_flight[op.process] = [op, None]
            pairs.append(in_flight[op.process])
        else:
            entry = in_flight.pop(op.process, None)
            if entry is None:
                raise HistoryError(f"op {op.index}: a {op.type} completion by process "
                                   f"{op.process} without an invocation")
            entry[1] = op
    return [Operation(invoke=i, completion=c) for i, c in pairs]


@st.composite
def histories(draw: st.DrawFn) -> list[Op]:
    """Mostly well-formed interleavings; `mistakes` lets a process invoke
    twice or complete what it never invoked."""
    mistakes = draw(st.booleans())
    ops: list[Op] = []
    busy: set[Any] = set()
    for _ in range(draw(st.integers(0, 40))):
        p = draw(st.sampled_from(PROCESSES))
        invoke = p not in busy
        if mistakes and draw(st.integers(0, 9)) == 0:
            invoke = not invoke
        if invoke:
            busy.add(p)
            f = "start-partition" if p == "nemesis" else draw(st.sampled_from(["read", "write"]))
            ops.append(Op(index=len(ops), time=len(ops) * 1000, process=p, type="invoke", f=f,
                          key=draw(st.sampled_from([None, "a", "b"])), value=len(ops)))
        else:
            busy.discard(p)
            ops.append(Op(index=len(ops), time=len(ops) * 1000, process=p,
                          type=draw(st.sampled_from(["ok", "ok", "fail", "info"])),
                          f="read", value=[len(ops)], node="n1"))
    return ops


def outcome(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except HistoryError as e:
        return ("HistoryError", str(e))


@SETTINGS
@given(histories(), st.booleans())
def test_pair_matches_the_reference(history: list[Op], include_nemesis: bool) -> None:
    got = outcome(pair, history, include_nemesis=include_nemesis)
    want = outcome(reference_pair, history, include_nemesis)
    assert got == want
    if isinstance(want, list):
        assert all(type(o) is Operation for o in got)
        assert [(o.invoke, o.completion) for o in got] == [(o.invoke, o.completion) for o in want]
        # pair() takes any iterable, read once
        assert pair(iter(history), include_nemesis=include_nemesis) == want


def test_pending_invocations_and_nemesis() -> None:
    ops = [Op(index=0, time=0, process=0, type="invoke", f="write", value=1),
           Op(index=1, time=1, process="nemesis", type="invoke", f="start-partition"),
           Op(index=2, time=2, process=1, type="invoke", f="read"),
           Op(index=3, time=3, process="nemesis", type="info", f="start-partition"),
           Op(index=4, time=4, process=1, type="ok", f="read", value=[1])]
    got = pair(ops)
    assert [(o.start, o.end, o.outcome) for o in got] == [(0, None, "info"), (2, 4, "ok")]
    with_nemesis = pair(ops, include_nemesis=True)
    assert [(o.process, o.outcome) for o in with_nemesis] == [(0, "info"), ("nemesis", "info"),
                                                              (1, "ok")]


def test_paired_operations_are_ordinary_operations() -> None:
    ops = [Op(index=0, time=0, process=0, type="invoke", f="read"),
           Op(index=1, time=1, process=0, type="ok", f="read", value=[])]
    (got,) = pair(ops)
    want = Operation(invoke=ops[0], completion=ops[1])
    assert got == want and repr(got) == repr(want)
    assert dataclasses.replace(got, completion=None) == Operation(invoke=ops[0], completion=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.completion = None  # type: ignore[misc]


def test_errors_name_the_op() -> None:
    twice = [Op(index=0, time=0, process=3, type="invoke", f="read"),
             Op(index=1, time=1, process=3, type="invoke", f="read")]
    with pytest.raises(HistoryError, match="op 1: process 3 invokes while op 0 is in flight"):
        pair(twice)
    orphan = [Op(index=0, time=0, process=3, type="fail", f="read")]
    with pytest.raises(HistoryError, match="op 0: a fail completion by process 3 without"):
        pair(orphan)


@pytest.fixture
def gc_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


@pytest.mark.usefixtures("gc_enabled")
def test_gc_paused_restores_the_collector() -> None:
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # nested: the inner one leaves it to the outer one
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(HistoryError), gc_paused():
        raise HistoryError("boom")
    assert gc.isenabled()
    with pytest.raises(HistoryError):
        pair([Op(index=0, time=0, process=0, type="ok", f="read")])
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()
