"""checkers/unique_register.py: the O(n log n) path for read/write registers
with unique written values, against a brute-force search and hand cases."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkers.history import Op, Operation, complete, pair
from checkers.unique_register import check_unique_register

Event = tuple[int, str, str, Any]  # process, type, f, value


def history(*events: Event) -> list[Op]:
    return [Op(index=i, time=i * 10_000_000, process=p, type=t, f=f, value=v)  # type: ignore[arg-type]
            for i, (p, t, f, v) in enumerate(events)]


def ops(*events: Event) -> list[Operation]:
    return complete(pair(history(*events)))


def verdict(operations: list[Operation], initial: Any = None) -> bool:
    result = check_unique_register(operations, initial)
    assert result is not None
    assert result.valid in (True, False)
    return result.valid is True


# ------------------------------------------------------------ brute force


def brute_force(operations: list[Operation], initial: Any = None) -> bool:
    """Try every order that respects real time: an op may go next if no other
    op still to place completed before it was invoked. Writes with an unknown
    outcome may be left out; reads with an unknown outcome are dropped (their
    result says nothing)."""
    items: list[tuple[int, int | None, str, Any]] = []  # start, end (None: optional), f, value
    for o in operations:
        if o.outcome == "fail":
            continue
        if o.f == "read":
            if o.outcome != "ok":
                continue
            assert o.completion is not None
            items.append((o.start, o.end, "read", o.completion.value))
        else:
            items.append((o.start, o.end, "write", o.invoke.value))
    required = sum(1 << i for i, it in enumerate(items) if it[1] is not None)

    @cache
    def search(done: int, state: Any) -> bool:
        if done & required == required:
            return True
        pending_end = min((it[1] for i, it in enumerate(items)
                           if not done >> i & 1 and it[1] is not None), default=None)
        for i, (start, _end, f, value) in enumerate(items):
            if done >> i & 1 or (pending_end is not None and pending_end < start):
                continue
            if f == "write":
                if search(done | 1 << i, value):
                    return True
            elif value == state and search(done | 1 << i, state):
                return True
        return False

    return search(0, initial)


# ------------------------------------------------------------- generator


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Op], Any]:
    """Up to 8 ops over up to 4 processes, simulated on a real register (each
    op takes effect at a point between its invocation and completion), with
    crashed writes that may or may not take effect, failed writes, reads whose
    outcome is unknown, ops that never complete, and some reads that lie."""
    initial = draw(st.sampled_from([None, 0]))
    n = draw(st.integers(1, 8))
    nproc = draw(st.integers(1, 4))
    domain = [None, 0, *range(1, n + 2)]
    queues: list[list[dict[str, Any]]] = [[] for _ in range(nproc)]
    for i in range(n):
        f = draw(st.sampled_from(["read", "write"]))
        spec = {
            "f": f,
            "value": i + 1,
            "outcome": draw(st.sampled_from(["ok", "ok", "ok", "info", "never", "fail" if f == "write" else "ok"])),
            "effect": draw(st.booleans()),
            "lie": draw(st.sampled_from(domain)) if draw(st.integers(0, 3)) == 0 else "no",
        }
        queues[draw(st.integers(0, nproc - 1))].append(spec)
    for q in queues:
        for spec in q[:-1]:
            if spec["outcome"] == "never":
                spec["outcome"] = "info"
    events: list[Event] = []
    state = initial
    stage = [0] * nproc  # 0 idle, 1 invoked, 2 took effect (or skipped it)
    seen: list[Any] = [None] * nproc
    pid = list(range(nproc))
    while True:
        live = [p for p in range(nproc) if queues[p] and not (stage[p] == 2 and queues[p][0]["outcome"] == "never")]
        if not live:
            break
        p = draw(st.sampled_from(live))
        spec = queues[p][0]
        if stage[p] == 0:
            events.append((pid[p], "invoke", spec["f"], spec["value"] if spec["f"] == "write" else None))
            stage[p] = 1
        elif stage[p] == 1:
            takes_effect = spec["outcome"] == "ok" or (spec["outcome"] != "fail" and spec["effect"])
            if takes_effect and spec["f"] == "write":
                state = spec["value"]
            seen[p] = state
            stage[p] = 2
        else:
            outcome = "ok" if spec["outcome"] == "never" else spec["outcome"]
            if spec["f"] == "write":
                events.append((pid[p], outcome, "write", spec["value"]))
            else:
                value = seen[p] if spec["lie"] == "no" else spec["lie"]
                events.append((pid[p], outcome, "read", value if outcome == "ok" else None))
            if outcome == "info":
                pid[p] += nproc  # Jepsen: a crashed process continues under a new id
            queues[p].pop(0)
            stage[p] = 0
    return history(*events), initial


@pytest.mark.slow
@settings(max_examples=3000)
@given(histories())
def test_agrees_with_brute_force(case: tuple[list[Op], Any]) -> None:
    hist, initial = case
    operations = complete(pair(hist))
    result = check_unique_register(operations, initial)
    assert result is not None
    assert (result.valid is True) == brute_force(operations, initial), hist
    if result.valid is False:
        (anomaly,) = result.anomalies
        op = anomaly.details["op"]
        assert op in anomaly.ops
        assert any(o.invoke.index == op for o in operations)
        assert anomaly.explanation


def test_the_generator_makes_both_verdicts() -> None:
    found: set[bool] = set()

    @settings(max_examples=300, database=None)
    @given(histories())
    def collect(case: tuple[list[Op], Any]) -> None:
        hist, initial = case
        found.add(brute_force(complete(pair(hist)), initial))

    collect()
    assert found == {True, False}


# ------------------------------------------------------------- hand cases


def test_stale_read_after_a_completed_write_is_invalid() -> None:
    operations = ops(
        (0, "invoke", "write", 1), (0, "ok", "write", 1),
        (0, "invoke", "write", 2), (0, "ok", "write", 2),
        (1, "invoke", "read", None), (1, "ok", "read", 1),
    )
    result = check_unique_register(operations)
    assert result is not None and result.valid is False
    (anomaly,) = result.anomalies
    assert anomaly.type == "nonlinearizable"
    assert anomaly.details["op"] == 4
    assert anomaly.details["key"] is None
    assert anomaly.details["prefix"] == [] and anomaly.details["states"] == []
    assert "read of 1 by process 1" in anomaly.explanation
    assert "held 2" in anomaly.explanation
    assert result.checker == "linearizable"
    assert result.counts == {"operations": 3, "partitions": 1, "steps": 0}
    rows = anomaly.details["operations"]
    assert rows[2] == {"index": 4, "process": 1, "f": "read", "value": None, "result": 1,
                       "outcome": "ok", "start": 40_000_000, "end": 50_000_000}


def test_read_of_a_value_before_its_write_began_is_invalid() -> None:
    operations = ops(
        (1, "invoke", "read", None), (1, "ok", "read", 1),
        (0, "invoke", "write", 1), (0, "ok", "write", 1),
    )
    result = check_unique_register(operations)
    assert result is not None and result.valid is False
    assert result.anomalies[0].details["op"] == 0
    assert "before the write of 1" in result.anomalies[0].explanation


def test_read_of_a_value_never_written_is_invalid() -> None:
    operations = ops((1, "invoke", "read", None), (1, "ok", "read", 7))
    assert verdict(operations) is False


def test_read_of_a_failed_write_is_invalid() -> None:
    operations = ops(
        (0, "invoke", "write", 1), (1, "invoke", "read", None),
        (0, "fail", "write", 1), (1, "ok", "read", 1),
    )
    assert verdict(operations) is False


def test_new_then_old_in_sequential_reads_is_invalid() -> None:
    operations = ops(
        (0, "invoke", "write", 1), (0, "ok", "write", 1),
        (0, "invoke", "write", 2),
        (1, "invoke", "read", None), (1, "ok", "read", 2),
        (1, "invoke", "read", None), (1, "ok", "read", 1),
        (0, "ok", "write", 2),
    )
    result = check_unique_register(operations)
    assert result is not None and result.valid is False
    assert result.anomalies[0].details["op"] == 5
    assert result.anomalies[0].details["concurrent"] == [2]


def test_initial_value_read_after_a_write_completed_is_invalid() -> None:
    operations = ops(
        (0, "invoke", "write", 1), (0, "ok", "write", 1),
        (1, "invoke", "read", None), (1, "ok", "read", 0),
    )
    assert verdict(operations, initial=0) is False
    result = check_unique_register(operations, 0)
    assert result is not None and "initial value 0" in result.anomalies[0].explanation


def test_concurrent_write_and_read_are_valid_in_both_orders() -> None:
    for seen in (None, 1):
        operations = ops(
            (0, "invoke", "write", 1), (1, "invoke", "read", None),
            (1, "ok", "read", seen), (0, "ok", "write", 1),
        )
        assert verdict(operations) is True, seen


def test_a_read_of_a_crashed_write_is_valid() -> None:
    operations = ops(
        (0, "invoke", "write", 1), (0, "info", "write", 1),
        (1, "invoke", "read", None), (1, "ok", "read", 1),
        (1, "invoke", "read", None), (1, "ok", "read", 1),
    )
    assert verdict(operations) is True


def test_a_crashed_write_may_take_effect_late() -> None:
    operations = ops(
        (0, "invoke", "write", 1), (0, "info", "write", 1),
        (1, "invoke", "write", 2), (1, "ok", "write", 2),
        (2, "invoke", "read", None), (2, "ok", "read", 2),
        (2, "invoke", "read", None), (2, "ok", "read", 1),
    )
    assert verdict(operations) is True


def test_an_unread_crashed_write_may_never_happen() -> None:
    operations = ops(
        (0, "invoke", "write", 1),
        (1, "invoke", "read", None), (1, "ok", "read", None),
        (1, "invoke", "read", None), (1, "ok", "read", None),
    )
    assert verdict(operations) is True


def test_reads_with_unknown_outcome_are_ignored() -> None:
    operations = ops(
        (0, "invoke", "write", 1), (0, "ok", "write", 1),
        (1, "invoke", "read", None), (1, "info", "read", None),
    )
    assert verdict(operations) is True


def test_empty_history_is_valid() -> None:
    assert verdict([]) is True


def test_does_not_apply_to_duplicates_cas_or_other_ops() -> None:
    dup = ops((0, "invoke", "write", 1), (0, "ok", "write", 1), (0, "invoke", "write", 1), (0, "ok", "write", 1))
    assert check_unique_register(dup) is None
    assert check_unique_register(ops((0, "invoke", "write", 0), (0, "ok", "write", 0)), initial=0) is None
    assert check_unique_register(ops((0, "invoke", "write", None), (0, "ok", "write", None))) is None
    cas = ops((0, "invoke", "cas", (0, 1)), (0, "ok", "cas", (0, 1)))
    assert check_unique_register(cas) is None
    assert check_unique_register(ops((0, "invoke", "write", [1]), (0, "ok", "write", [1]))) is None
    assert check_unique_register(ops((0, "invoke", "add", 1), (0, "ok", "add", 1))) is None
