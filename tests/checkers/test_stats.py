"""Run statistics: counts, latency quantiles, unavailability windows and the
never-succeeded verdict, on hand-made histories with known answers."""

from __future__ import annotations

import time

import pytest

from checkers.history import HistoryError, Op, OpType
from checkers.stats import check, quantile

S = 1_000_000_000
MS = 1_000_000


class H:
    def __init__(self) -> None:
        self.ops: list[Op] = []

    def add(self, t: int, p: int | str, type_: OpType, f: str) -> int:
        self.ops.append(Op(index=len(self.ops), time=t, process=p, type=type_, f=f))
        return len(self.ops) - 1


def test_counts_and_quantiles() -> None:
    h = H()
    t = 0
    for i in range(100):  # reads with latencies 1..100 ms, sequential
        h.add(t, 0, "invoke", "read")
        t += (i + 1) * MS
        h.add(t, 0, "ok", "read")
    h.add(t, 1, "invoke", "write")
    h.add(t + MS, 1, "fail", "write")
    h.add(t + MS, 1, "invoke", "write")
    h.add(t + 2 * MS, 1, "ok", "write")
    h.add(t + 2 * MS, 2, "invoke", "write")
    h.add(t + 3 * MS, 2, "info", "write")
    h.add(t + 3 * MS, 3, "invoke", "cas")  # never completes
    h.add(t + 3 * MS, "nemesis", "invoke", "start-partition")
    r = check(h.ops)
    c = r.counts
    assert (c["read.invoke"], c["read.ok"]) == (100, 100)
    assert (c["write.invoke"], c["write.ok"], c["write.fail"], c["write.info"]) == (3, 1, 1, 1)
    assert (c["cas.invoke"], c["cas.pending"]) == (1, 1)
    assert (c["invocations"], c["ok"], c["fail"], c["info"], c["pending"]) == (104, 101, 1, 1, 1)
    lat = r.details["latency_ms"]["read"]
    assert lat == {"count": 100, "p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert r.details["latency_ms"]["write"]["max"] == 1.0
    assert "start-partition" not in r.details["by_f"]
    # cas was invoked and never succeeded: invalid, with an anomaly naming it.
    assert r.valid is False
    (a,) = r.anomalies
    assert a.type == "never-succeeded" and "'cas'" in a.explanation


def test_quantile_nearest_rank() -> None:
    assert quantile([5.0], 0.99) == 5.0
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.95) == 4.0


def test_unavailability_window_bounds() -> None:
    h = H()
    h.add(0, 0, "invoke", "read")
    h.add(1 * S, 0, "ok", "read")  # last ok before the outage
    h.add(2 * S, 1, "invoke", "write")  # idle from 1 s to 2 s: not unavailability
    f1 = h.add(3 * S, 1, "fail", "write")
    h.add(3 * S, 1, "invoke", "write")
    i1 = h.add(5 * S, 1, "info", "write")
    h.add(5 * S, 2, "invoke", "read")
    h.add(6 * S, 2, "ok", "read")  # recovery at 6 s
    h.add(6 * S, 2, "invoke", "read")
    h.add(6 * S + 500 * MS, 2, "fail", "read")  # short blip, under the threshold
    h.add(6 * S + 600 * MS, 2, "invoke", "read")
    h.add(7 * S, 2, "ok", "read")
    r = check(h.ops)
    assert [a.details["f"] for a in r.anomalies] == ["write"]  # windows are not anomalies
    (w,) = r.details["unavailable"]
    assert (w["start_s"], w["end_s"], w["duration_s"]) == (2.0, 6.0, 4.0)
    assert (w["fail"], w["info"], w["ops"], w["open"]) == (1, 1, [f1, i1], False)
    assert w["invocations"] == 3
    assert r.counts["unavailability_windows"] == 1
    assert check(h.ops, threshold_s=5.0).details["unavailable"] == []


def test_window_from_in_flight_and_open_at_end() -> None:
    h = H()
    h.add(0, 0, "invoke", "read")
    h.add(0, 1, "invoke", "read")
    h.add(1 * S, 0, "ok", "read")  # process 1 still in flight: the window starts here
    h.add(4 * S, 1, "info", "read")
    h.add(4 * S, 5, "invoke", "read")  # never completes
    h.add(9 * S, 0, "invoke", "read")
    r = check(h.ops, max_listed=1)
    (w,) = r.details["unavailable"]
    assert (w["start_s"], w["end_s"], w["open"]) == (1.0, 9.0, True)
    assert w["ops"] == [3] and w["ops_total"] == 3  # the info, plus two never completed


def test_never_succeeding_and_empty() -> None:
    h = H()
    h.add(0, 0, "invoke", "write")
    h.add(1, 0, "fail", "write")
    r = check(h.ops)
    assert r.valid is False and "'write' was invoked 1 times" in r.anomalies[0].explanation
    e = check([])
    assert e.valid == "unknown" and e.reason


def test_a_kind_that_mostly_failed_is_a_warning_not_a_verdict() -> None:
    h = H()
    t = 0
    for outcome in ["ok", "fail", "info", "fail", "ok", "fail"]:  # reads: 2 of 6
        h.add(t, 0, "invoke", "read")
        h.add(t + 1, 0, outcome, "read")  # type: ignore[arg-type]
        t += 2
    for outcome in ["ok", "ok", "fail"]:  # writes: 2 of 3
        h.add(t, 1, "invoke", "write")
        h.add(t + 1, 1, outcome, "write")  # type: ignore[arg-type]
        t += 2
    r = check(h.ops)
    assert r.valid is True
    assert r.details["warnings"] == ["'read' succeeded in 2 of 6 invocations (33%): most failed "
                                     "(3 fail, 1 info, 0 never completed)"]
    assert check(h.ops, mostly_failed=0.7).details["warnings"][1].startswith("'write' succeeded in 2 of 3")


def test_malformed() -> None:
    with pytest.raises(HistoryError):
        check([Op(index=0, time=0, process=0, type="ok", f="read")])


def test_100k_ops_quickly() -> None:
    ops: list[Op] = []
    procs = 10
    for i in range(50_000):
        p = i % procs
        t = i * MS
        ops.append(Op(index=2 * i, time=t, process=p, type="invoke", f="read" if i % 3 else "write"))
        ops.append(Op(index=2 * i + 1, time=t + 7 * MS, process=p,
                      type="ok" if i % 11 else "fail", f="read" if i % 3 else "write"))
    ops.sort(key=lambda o: (o.time, o.type != "ok"))  # not needed for indexes; interleave by time
    t0 = time.perf_counter()
    r = check(ops)
    assert time.perf_counter() - t0 < 5.0
    assert r.valid is True and r.counts["invocations"] == 50_000
