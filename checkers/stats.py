"""Run statistics (Jepsen's `stats` checker, plus availability and latency).

`check(history)` returns, for client operations (nemesis ops and replica reads
are ignored):

- `counts`: invocations and outcomes per `f` ("read.ok", "read.fail",
  "read.info", "read.pending" for never completed, "read.invoke") and in
  total ("ok", "fail", "info", "pending", "invocations").
- `details["by_f"]`: the same per `f` as nested dicts.
- `details["unavailable"]`: unavailability windows, maximal spans with no
  `ok` completion while clients were trying (an operation in flight), longer
  than `threshold_s` (default 1 s). A window starts at the last `ok`
  completion if an operation was still in flight then, otherwise at the next
  invocation (idle time is not unavailability); it ends at the next `ok`
  completion, or at the last client event of the history (`"open": True`).
  Each lists start/end/duration in seconds, the invocations in it, and the
  `fail`/`info` completions in it (indexes capped at `max_listed`, with the
  total); an open window also counts operations that never completed.
- `details["latency_ms"]`: per `f`, quantiles 0.5, 0.95, 0.99 and the max
  (nearest-rank) of completion time - invocation time over `ok` operations,
  in milliseconds, with the count.

Verdict (as Jepsen's stats checker): False if some `f` was invoked but never
succeeded (one anomaly "never-succeeded" per such `f`) — so a history with
invocations but no `ok` at all is False; "unknown" if the history has no client
invocation at all; True otherwise. Unavailability windows are reported, never
judged: a partition is expected to cause them.

`details["warnings"]`: a sentence per `f` that succeeded in fewer than
`mostly_failed` (default half) of its invocations. Not judged either (kills
of a majority or whole-cluster power losses fail most reads of a correct
store), but said beside the verdict: a run whose cluster was mostly down
(someone else's `harness clean`, a node that never started) must not pass
for a test of the faults.

Times are taken in history order (the harness appends in time order). One
pass plus one sort of latencies per `f`: O(n log n).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from checkers.history import REPLICA_READ, HistoryError, Op, Process
from checkers.result import Anomaly, Result, Verdict

CHECKER = "stats"
QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
OUTCOMES = ("ok", "fail", "info", "pending")


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of a non-empty ascending sequence."""
    n = len(sorted_values)
    return sorted_values[min(n - 1, max(0, math.ceil(q * n) - 1))]


class _Window:
    __slots__ = ("bad", "bad_total", "fails", "infos", "invocations", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.invocations = 0
        self.fails = 0
        self.infos = 0
        self.bad: list[int] = []
        self.bad_total = 0


def check(history: Sequence[Op], *, threshold_s: float = 1.0, max_listed: int = 50,
          mostly_failed: float = 0.5) -> Result:
    """Counts, unavailability windows and latencies of a history."""
    threshold = int(threshold_s * 1e9)
    by_f: dict[str, dict[str, int]] = {}
    lat: dict[str, list[int]] = {}
    open_: dict[Process, Op] = {}
    windows: list[dict[str, Any]] = []

    win: _Window | None = None  # the span since the last ok completion, once clients try
    last_ok: int | None = None
    last_time: int | None = None

    def close(w: _Window, end: int, is_open: bool) -> None:
        if end - w.start > threshold:
            windows.append({
                "start_s": w.start / 1e9, "end_s": end / 1e9, "duration_s": (end - w.start) / 1e9,
                "invocations": w.invocations, "fail": w.fails, "info": w.infos,
                "ops": w.bad, "ops_total": w.bad_total, "open": is_open,
            })

    for op in history:
        if op.process == "nemesis" or op.f == REPLICA_READ:  # not client operations
            continue
        t = op.time
        last_time = t
        if op.type == "invoke":
            if op.process in open_:
                raise HistoryError(
                    f"op {op.index}: process {op.process} invokes while op {open_[op.process].index} is in flight")
            open_[op.process] = op
            c = by_f.get(op.f)
            if c is None:
                c = by_f[op.f] = {"invoke": 0, "ok": 0, "fail": 0, "info": 0, "pending": 0}
            c["invoke"] += 1
            if win is None:
                win = _Window(t)
            win.invocations += 1
            continue
        inv = open_.pop(op.process, None)
        if inv is None:
            raise HistoryError(f"op {op.index}: a {op.type} completion by process {op.process} without an invocation")
        c = by_f[inv.f]
        c[op.type] += 1
        if op.type == "ok":
            lat.setdefault(inv.f, []).append(t - inv.time)
            if win is not None:
                close(win, t, False)
            last_ok = t
            # Clients still in flight keep trying from this instant on.
            win = _Window(t) if open_ else None
        elif win is not None:
            if op.type == "fail":
                win.fails += 1
            else:
                win.infos += 1
            win.bad_total += 1
            if len(win.bad) < max_listed:
                win.bad.append(op.index)

    for inv in open_.values():
        by_f[inv.f]["pending"] += 1
    if win is not None and last_time is not None:
        win.bad_total += len(open_)
        for inv in sorted(open_.values(), key=lambda o: o.index):
            if len(win.bad) >= max_listed:
                break
            win.bad.append(inv.index)
        close(win, last_time, True)

    counts: dict[str, int] = {"invocations": 0, **dict.fromkeys(OUTCOMES, 0)}
    for f, c in by_f.items():
        for name, v in c.items():
            counts[f"{f}.{name}"] = v
            if name == "invoke":
                counts["invocations"] += v
            else:
                counts[name] += v
    counts["unavailability_windows"] = len(windows)

    latency: dict[str, dict[str, float]] = {}
    for f, ls in lat.items():
        ls.sort()
        row: dict[str, float] = {"count": len(ls)}
        for name, q in QUANTILES:
            row[name] = quantile(ls, q) / 1e6
        row["max"] = ls[-1] / 1e6
        latency[f] = row

    anomalies = tuple(
        Anomaly(type="never-succeeded", ops=(),
                explanation=(f"{f!r} was invoked {c['invoke']} times and never succeeded "
                             f"({c['fail']} fail, {c['info']} info, {c['pending']} never completed)"),
                details={"f": f, **c})
        for f, c in by_f.items() if c["invoke"] and not c["ok"])
    valid: Verdict
    reason = None
    if not by_f:
        valid, reason = "unknown", "the history has no client operation"
    else:
        valid = not anomalies
    warnings = [f"{f!r} succeeded in {c['ok']:,} of {c['invoke']:,} invocations ({c['ok'] / c['invoke']:.0%}): "
                f"most failed ({c['fail']:,} fail, {c['info']:,} info, {c['pending']:,} never completed)"
                for f, c in by_f.items() if c["ok"] and c["ok"] < mostly_failed * c["invoke"]]
    details: dict[str, Any] = {
        "by_f": by_f, "unavailable": windows, "latency_ms": latency, "warnings": warnings,
        "threshold_s": threshold_s, "last_ok_s": None if last_ok is None else last_ok / 1e9,
    }
    return Result(checker=CHECKER, valid=valid, anomalies=anomalies, counts=counts,
                  reason=reason, details=details)
