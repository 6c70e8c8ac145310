"""Views of a linearizability checker's result: one self-contained HTML page
(`render_counterexample`) and a short plain-text summary (`render_text`).

The page needs no network and does not assume it is the top-level document
(it may be embedded through `<iframe srcdoc>`): CSS, the SVG timelines and a
little JavaScript (zoom, scroll to the failing operation) are inline. For
each `nonlinearizable` anomaly (one per partition key) it draws Porcupine's
picture: one lane per process, each operation a bar from its invocation to its
completion (`info` and never-completed operations open-ended to the right
edge, hatched), the longest linearizable prefix numbered in linearization
order with a line through the linearization points, the operation that cannot
be linearized in red, the operations concurrent with it outlined in orange
and the others the anomaly names outlined in black.

Lanes run from the top in order of relevance: the failing operation's
process, then those of the operations the anomaly names or that completed
concurrently with it, then the rest by how near their operations are to it
(so that lanes of processes that crashed long before sink to the bottom).

The horizontal axis is event order, not wall-clock time: every invocation and
completion gets its own slot, so that the real-time order of operations is
exact and a 50 µs operation is as readable as a 5 s one. Slot widths are
free, so each bar is made as wide as its label (up to `_MAX_LABEL`
characters; longer labels are cut in the bar and listed in full under the
picture). Tick labels and tooltips give the times in seconds since the first
operation; when the history has no real times (Porcupine and EDN logs, whose
readers set each op's time to its index, or all times equal), ticks name
operations instead ("op 120").

Past `max_ops` operations in a partition the picture is windowed: the
`max_ops` invoked nearest the failing operation, plus every operation the
anomaly names (its `ops`, which are history indexes of invocations or
completions, its `op`, the last of its `prefix`, any "op N" of its
explanation) and those `concurrent` with it; a dashed band marks where
operations were left out.

The contract read from `Anomaly.details`: `key`, `op` (invoke index of the
failing operation), `prefix` (invoke indexes in linearization order),
`states` (strings), `concurrent` (invoke indexes) and `operations` (dicts with
`index`, `process`, `f`, `value`, `result`, `outcome` "ok"|"info", `start` and
`end` in ns, `end` None if it never completed). If `operations` is missing and
the history is given, the operations are rebuilt from the history.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

from checkers.history import Op, pair
from checkers.result import Anomaly, Result

__all__ = ["render_counterexample", "render_text"]

_KIND = "nonlinearizable"
_MAX_SECTIONS = 20  # timelines drawn; further keys are listed by explanation only
_READS = frozenset({"read", "get", "r"})
_CAS = frozenset({"cas", "compare-and-set"})

# Geometry of a timeline, in SVG user units (pixels at zoom 1).
_LABELS = 92  # the fixed column of lane labels, left of the scrolling timeline
_LEFT = 40  # room left of the first event, for its tick label
_TOP = 34  # time axis
_LANE = 38
_BAR = 20
_TAIL = 48  # room right of the last event, where open-ended bars end
_CHAR = 6.7  # width of one character of the 11px monospace labels
_PAD = 5  # room between a bar's edges and its label, each side
_MAX_LABEL = 40  # characters of a label drawn in its bar; longer ones are also listed in full
_GAP = 64  # width of the band that marks operations the window leaves out
_TICK_GAP = 96  # least distance between tick labels


def render_counterexample(
    result: Result,
    history: Sequence[Op] | None = None,
    *,
    title: str = "Linearizability",
    max_ops: int = 1000,
) -> str:
    """Return one self-contained HTML page showing `result`.

    Invalid: a timeline per nonlinearizable anomaly. Valid: a short page
    with the counts. Unknown: the reason. `history`, if given, sets the time
    origin (its first op) and fills in counts; past `max_ops` operations in
    one partition, only the `max_ops` invoked nearest the failing operation
    (plus those concurrent with it) are drawn, and the page says so.
    """
    t0 = _origin(result, history)
    anomalies = [a for a in result.anomalies if a.type == _KIND]
    others = [a for a in result.anomalies if a.type != _KIND]
    try:
        sections = [
            _section(n, a, history, t0, max_ops) for n, a in enumerate(anomalies[:_MAX_SECTIONS])
        ]
    finally:
        _last_paired[:] = [None, {}]
    return _template().render(
        title=title,
        result=result,
        verdict=_verdict(result.valid),
        counts=_counts(result, history),
        sections=sections,
        first=sections[0] if sections else None,
        label_width=_LABELS,
        gap_width=_GAP,
        undrawn=[_fmt(a.details.get("key")) + ": " + a.explanation for a in anomalies[_MAX_SECTIONS:]],
        others=others,
    )


def render_text(result: Result) -> str:
    """Return a few lines for a terminal: the verdict, then per
    nonlinearizable key the explanation, the failing operation, the length of
    the linearizable prefix and the states possible before the failing op."""
    words = "valid" if result.valid is True else "INVALID: not linearizable" if result.valid is False else "unknown"
    lines = [f"{result.checker}: {words}"]
    if result.valid == "unknown":
        lines.append(f"  reason: {result.reason or 'not given'}")
    if result.counts:
        lines.append("  " + ", ".join(f"{k}: {v:,}" for k, v in result.counts.items()))
    for a in result.anomalies:
        d = a.details
        if a.type != _KIND:
            lines.append(f"  {a.type}: {a.explanation}")
            continue
        key = "" if d.get("key") is None else f"key {_fmt(d['key'])}: "
        lines.append(f"  {key}{a.explanation}")
        op = next((o for o in d.get("operations", ()) if o.get("index") == d.get("op")), None)
        if op is not None:
            lines.append(f"    cannot linearize op {op['index']} (process {op['process']}, {_label(op)})")
        lines.append(f"    longest linearizable prefix: {len(d.get('prefix', ())):,} operations")
        states = d.get("states") or []
        lines.append("    states before it: " + (", ".join(map(str, states)) if states else "none"))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# What the template draws.


@dataclass(frozen=True, kw_only=True, slots=True)
class _Bar:
    index: int  # the operation's invoke index
    x: float
    y: float
    w: float
    cls: str  # "lin", "other" or "fail", plus " conc" when concurrent
    open: bool  # info / never completed: hatched, to the right edge
    label: str  # fits in the bar (`_label` cut to `_MAX_LABEL` characters)
    tip: str


@dataclass(frozen=True, kw_only=True, slots=True)
class _Point:
    x: float
    y: float
    n: int  # position in the linearization, from 1
    tip: str


@dataclass(frozen=True, kw_only=True, slots=True)
class _Section:
    n: int
    key: str | None
    explanation: str
    states: list[str]
    prefix_len: int
    concurrent: int
    fail_label: str | None
    named: list[tuple[str, float]]  # the other operations the anomaly names: words, x of the bar
    note: str | None  # windowing, missing operations, missing times
    axis_note: str
    width: float
    height: float
    lanes: list[tuple[float, str]]  # (y of the lane's centre, label)
    ticks: list[tuple[float, str]]
    gaps: list[tuple[float, int]]  # (x, operations left out there)
    bars: list[_Bar]
    points: list[_Point]
    path: str  # the polyline through the linearization points
    fail_link: tuple[float, float, float, float] | None  # last point -> failing op
    fail_x: float
    long_labels: list[str]  # labels cut short in their bars, in full


def _section(n: int, a: Anomaly, history: Sequence[Op] | None, t0: int, max_ops: int) -> _Section:
    d = a.details
    key = d.get("key")
    fail = d.get("op")
    prefix: list[int] = list(d.get("prefix") or [])
    concurrent = set(d.get("concurrent") or [])
    ops = [o for o in (d.get("operations") or _from_history(history, key)) if o.get("outcome") != "fail"]
    ops, clock = _clocked(ops, history)
    by_index = {o["index"]: o for o in ops}
    named = _named(a, by_index, history, clock)
    named_set = set(named)
    must = named_set | ({fail} if fail in by_index else set()) | ({prefix[-1]} if prefix else set())
    notes: list[str] = []
    if not ops:
        notes.append("The counterexample carries no operations to draw.")
    elif clock == "order":
        notes.append("The history records no times: operations are drawn in invocation order, each as "
                     "if it completed before the next one began.")
    gap_before: dict[Any, int] = {}
    gap_after = 0
    if len(ops) > max_ops:
        kept, left_out, (lo, hi) = _window(ops, fail, concurrent, must, max_ops)
        kept_idx = {o["index"] for o in kept}
        skipped = 0
        for o in sorted(ops, key=_invoked):
            if o["index"] in kept_idx:
                if skipped:
                    gap_before[o["index"]] = skipped
                skipped = 0
            else:
                skipped += 1
        gap_after = skipped
        span_words = (f"{_sec(lo, t0, 3)} s to {_sec(hi, t0, 3)} s" if clock == "s"
                      else f"history indexes {lo} to {hi}" if clock == "index"
                      else f"times {lo} to {hi}" if clock == "logical" else f"ops {lo} to {hi}")
        notes.append(
            f"Showing {len(kept):,} of {len(ops):,} operations: those invoked nearest the "
            f"failing operation ({span_words}), plus every operation the explanation names and those "
            "concurrent with the failing one"
            + (f"; {left_out:,} more concurrent operations (crashed, invoked long before) are not drawn"
               if left_out else "")
            + ". A dashed band marks where operations are left out. "
            "Linearization numbers are positions in the whole prefix."
        )
        ops = kept
    position = {idx: i + 1 for i, idx in enumerate(prefix)}

    # One slot per event; at equal times completions come before invocations.
    events: list[tuple[int, int, int, int]] = []  # (time, order, op index, is-start)
    for o in ops:
        events.append((o["start"], 1, o["index"], 1))
        if o["end"] is not None and o.get("outcome") != "info":
            events.append((o["end"], 2 if o["end"] == o["start"] else 0, o["index"], 0))
    events.sort()

    # Slots are at least `step` apart, and an operation's completion at
    # least as far from its invocation as its label needs: the x axis is
    # event order, so its widths are free; one pass left to right gives each
    # slot the least x that satisfies both.
    labels = {o["index"]: _label(o) for o in ops}
    shown = {i: _clip(text, _MAX_LABEL) for i, text in labels.items()}
    need = {i: len(text) * _CHAR + 2 * _PAD for i, text in shown.items()}
    step = max(10.0, min(64.0, 1240.0 / max(len(events), 1)))
    slot: dict[tuple[int, int], float] = {}
    gaps: list[tuple[float, int]] = []
    x = _LEFT - step / 2
    for _, _, idx, is_start in events:
        if is_start and idx in gap_before:
            gaps.append((x + step / 2, gap_before[idx]))
            x += _GAP
        x += step
        if not is_start:
            x = max(x, slot[(idx, 1)] + need[idx])
        slot[(idx, is_start)] = x
    right = x + step / 2
    if gap_after:
        gaps.append((right, gap_after))
        right += _GAP
    right += _TAIL
    for o in ops:
        if (o["index"], 0) not in slot:
            right = max(right, slot[(o["index"], 1)] + need[o["index"]])

    lane_y, lanes = _lanes(ops, events, fail, must, concurrent)

    bars: list[_Bar] = []
    span: dict[int, tuple[float, float]] = {}
    for o in ops:
        idx = o["index"]
        x0 = slot[(idx, 1)]
        is_open = (idx, 0) not in slot
        x1 = right if is_open else slot[(idx, 0)]
        span[idx] = (x0, x1)
        cls = "fail" if idx == fail else "lin" if idx in position else "other"
        if idx in concurrent and idx != fail:
            cls += " conc"
        if idx in named_set and idx != fail:
            cls += " named"
        bars.append(
            _Bar(index=idx, x=x0, y=lane_y[o["process"]] - _BAR / 2, w=x1 - x0, cls=cls, open=is_open,
                 label=shown[idx], tip=_tip(o, t0, clock, position.get(idx), idx == fail, idx in concurrent))
        )

    # Linearization points: any points in order within each op's interval
    # will do; take for each the middle of what the ops before and after it
    # leave free (capped, so that open-ended ops keep theirs near the start).
    seq = [i for i in prefix if i in span]
    late: list[float] = [0.0] * len(seq)
    bound = math.inf
    for j in range(len(seq) - 1, -1, -1):
        bound = min(bound, span[seq[j]][1] - 4)
        late[j] = bound
    points: list[_Point] = []
    prev = -math.inf
    for j, idx in enumerate(seq):
        lo_x = max(span[idx][0] + 10, prev)
        hi_x = max(late[j], lo_x)
        x = lo_x + min((hi_x - lo_x) / 2, 2 * max(step, 20.0))
        prev = x
        o = by_index[idx]
        points.append(_Point(x=x, y=lane_y[o["process"]] - _BAR / 2, n=position[idx],
                             tip=f"#{position[idx]} in the linearization: op {idx}, {labels[idx]}"))
    path = " ".join(f"{p.x:.1f},{p.y:.1f}" for p in points)
    fail_link = None
    fail_x = float(_LEFT)
    if fail in span:
        fy = lane_y[by_index[fail]["process"]]
        fail_x = span[fail][0]
        if points:
            fail_link = (points[-1].x, points[-1].y, fail_x, fy - _BAR / 2)

    fail_op = by_index.get(fail)
    drawn = {b.index for b in bars}
    return _Section(
        n=n,
        key=None if key is None else _fmt(key),
        explanation=a.explanation,
        states=[str(s) for s in d.get("states") or []],
        prefix_len=len(prefix),
        concurrent=len(concurrent),
        fail_label=None if fail_op is None else f"op {fail}, process {fail_op['process']}: {_label(fail_op)}",
        named=[(f"op {i}, process {by_index[i]['process']}: {labels[i]}", span[i][0])
               for i in named if i != fail and i in drawn],
        note=" ".join(notes) or None,
        axis_note=_AXIS_NOTE[clock],
        width=right + 8,
        height=_TOP + len(lanes) * _LANE + 10,
        lanes=lanes,
        ticks=_ticks(events, slot, clock, t0),
        gaps=gaps,
        bars=bars,
        points=points,
        path=path,
        fail_link=fail_link,
        fail_x=fail_x,
        long_labels=[f"op {i}, process {by_index[i]['process']}: {labels[i]}"
                     for i in sorted(drawn) if shown[i] != labels[i]],
    )


_AXIS_NOTE = {
    "s": "Left to right: the order of invocations and completions (not to scale); ticks and tooltips "
         "give seconds since the first operation.",
    "index": "Left to right: the order of invocations and completions (not to scale); the history "
             "records no times, so ticks name operations by their invocation's index in the history.",
    "logical": "Left to right: the order of invocations and completions (not to scale); the history's "
               "times are counters, not seconds, so ticks name operations by their invocation's index "
               "in the history.",
    "order": "Left to right: the order of invocations (not to scale); the history records no times, "
             "so ticks name operations by their invocation's index in the history.",
}


def _invoked(o: Mapping[str, Any]) -> tuple[Any, Any]:
    return o["start"], o["index"]


def _clocked(ops: list[dict[str, Any]], history: Sequence[Op] | None) -> tuple[list[dict[str, Any]], str]:
    """The operations with times to order them by, and what those times are:
    "s" (nanoseconds), "index" (history indexes: Porcupine and EDN logs carry
    no times, and their readers number the ops instead), "logical" (a counter
    too fine to be nanoseconds, e.g. Jepsen test histories with :time 10, 20)
    or "order" (no times and no history: invocation order, each op as if
    completed at once)."""
    if history:
        if all(o.time == o.index for o in history):
            return ops, "index"
    elif ops and all(o["start"] == o["index"] for o in ops) \
            and all(o["end"] is None or o["end"] > o["start"] for o in ops):
        return ops, "index"
    times = {o["start"] for o in ops} | {o["end"] for o in ops if o["end"] is not None}
    if len(ops) < 2:
        return ops, "s"
    if len(times) > 1:
        # Under a microsecond per event on average: a counter, not nanoseconds.
        return ops, "s" if max(times) - min(times) >= 1000 * len(times) else "logical"
    # Every op at the same time: order by history index instead.
    if history:
        ends = _completions(history)
        return [dict(o, start=o["index"], end=None if o["end"] is None else ends.get(o["index"], o["index"]))
                for o in ops], "index"
    return [dict(o, start=o["index"], end=None if o["end"] is None else o["index"]) for o in ops], "order"


_last_paired: list[Any] = [None, {}]  # [the history, its completions]: one pairing per page, not per section


def _completions(history: Sequence[Op]) -> dict[int, int]:
    """Invoke index -> completion index, for every completed operation."""
    if _last_paired[0] is history:
        return _last_paired[1]
    try:
        found = {p.invoke.index: p.completion.index for p in pair(history) if p.completion is not None}
    except Exception:  # a malformed history: the checker said so already
        found = {}
    _last_paired[:] = [history, found]
    return found


def _named(a: Anomaly, by_index: Mapping[Any, Mapping[str, Any]], history: Sequence[Op] | None,
           clock: str) -> list[Any]:
    """Invoke indexes of the operations the anomaly names: its `ops` (history
    indexes, completions too), `op`, and any "op N" of its explanation."""
    wanted: list[Any] = [*a.ops, a.details.get("op")]
    wanted += [int(m) for m in re.findall(r"\bop (\d+)\b", a.explanation)]
    out: list[Any] = []
    invoke_of: dict[Any, Any] | None = None
    for i in wanted:
        if i not in by_index:
            if invoke_of is None:  # a completion's index: find its invocation
                if history:
                    invoke_of = {c: inv for inv, c in _completions(history).items()}
                elif clock == "index":  # the times are the history indexes
                    invoke_of = {o["end"]: o["index"] for o in by_index.values() if o["end"] is not None}
                else:
                    invoke_of = {}
            i = invoke_of.get(i)
        if i in by_index and i not in out:
            out.append(i)
    return out


def _window(ops: list[dict[str, Any]], fail: Any, concurrent: set[Any], must: set[Any],
            max_ops: int) -> tuple[list[dict[str, Any]], int, tuple[int, int]]:
    """The `max_ops` operations invoked nearest the failing one, plus every
    one in `must` and up to `max_ops` more concurrent with the failing one
    (completed ones first, then crashed ones invoked latest: there may be
    thousands), in invocation order; how many concurrent ones are left out;
    and the first invocation and last event of the `max_ops` nearest."""
    ordered = sorted(ops, key=_invoked)
    at = next((i for i, o in enumerate(ordered) if o["index"] == fail), len(ordered) // 2)
    lo = max(0, min(at - max_ops // 2, len(ordered) - max_ops))
    keep = ordered[lo : lo + max_ops]
    first = keep[0]["start"] if keep else 0
    last = max((o["end"] if o["end"] is not None else o["start"] for o in keep), default=first)
    seen = {o["index"] for o in keep}
    keep += [o for o in ordered if o["index"] in must and o["index"] not in seen]
    near = [o for o in ordered if o["index"] in concurrent and o["index"] not in seen and o["index"] not in must]
    near.sort(key=lambda o: (o["end"] is None or o.get("outcome") != "ok", -o["start"]))
    keep += near[:max_ops]
    return sorted(keep, key=_invoked), max(0, len(near) - max_ops), (first, last)


def _lanes(ops: list[dict[str, Any]], events: list[tuple[int, int, int, int]], fail: Any, must: set[Any],
           concurrent: set[Any]) -> tuple[dict[Any, float], list[tuple[float, str]]]:
    """One lane per process, from the top: the failing operation's, then
    those of the operations the anomaly names or that completed concurrently
    with it, then the rest; each group by how near (in events) its nearest
    operation is to the failing one, crashed operations by their invocation."""
    rank = {(idx, is_start): r for r, (_, _, idx, is_start) in enumerate(events)}
    fail_op = next((o for o in ops if o["index"] == fail), None)
    at = rank.get((fail, 1), 0)

    def distance(o: Mapping[str, Any]) -> int:
        s, e = rank[(o["index"], 1)], rank.get((o["index"], 0))
        if e is None:
            return abs(s - at)
        return 0 if s <= at <= e else min(abs(s - at), abs(e - at))

    near: dict[Any, int] = {}
    first: set[Any] = set()
    for o in ops:
        p = o["process"]
        near[p] = min(near.get(p, len(events)), distance(o))
        if o["index"] in must or (o["index"] in concurrent and (o["index"], 0) in rank):
            first.add(p)

    def order(p: Any) -> tuple[int, int, bool, Any]:
        group = 0 if fail_op is not None and p == fail_op["process"] else 1 if p in first else 2
        return group, near[p], isinstance(p, str), str(p) if isinstance(p, str) else p

    procs = sorted(near, key=order)
    lane_y = {p: _TOP + (i + 0.5) * _LANE for i, p in enumerate(procs)}
    return lane_y, [(lane_y[p], f"process {p}" if isinstance(p, int) else _clip(str(p), 12)) for p in procs]


def _ticks(events: list[tuple[int, int, int, int]], slot: Mapping[tuple[int, int], float], clock: str,
           t0: int) -> list[tuple[float, str]]:
    """Tick labels at least `_TICK_GAP` apart: seconds with as many digits
    as it takes to tell neighbours apart, or (without times) "op N" at
    invocations."""
    at: list[tuple[float, int, int]] = []  # (x, time, op index)
    last = -math.inf
    for t, _, idx, is_start in events:
        x = slot[(idx, is_start)]
        if (clock != "s" and not is_start) or x - last < _TICK_GAP:
            continue
        at.append((x, t, idx))
        last = x
    if clock != "s":
        return [(x, f"op {idx}") for x, _, idx in at]
    digits = 3
    while digits < 9 and any(
        a[1] != b[1] and _sec(a[1], t0, digits) == _sec(b[1], t0, digits) for a, b in itertools.pairwise(at)
    ):
        digits += 1
    return [(x, f"{_sec(t, t0, digits)} s") for x, t, _ in at]


def _from_history(history: Sequence[Op] | None, key: Any) -> list[dict[str, Any]]:
    """The contract's operation dicts, rebuilt from a history for one key."""
    if history is None:
        return []
    out = []
    for p in pair(history):
        if (key is not None and p.key != key) or p.outcome == "fail":
            continue
        c = p.completion
        out.append({
            "index": p.invoke.index, "process": p.process, "f": p.f, "value": p.invoke.value,
            "result": None if c is None or c.type != "ok" else c.value,
            "outcome": "ok" if p.outcome == "ok" else "info",
            "start": p.invoke.time, "end": None if c is None else c.time,
        })
    return out


# ---------------------------------------------------------------------------
# Words.


def _verdict(valid: Any) -> tuple[str, str]:
    """(CSS class, words) for a verdict."""
    if valid is True:
        return "valid", "linearizable"
    if valid is False:
        return "invalid", "NOT linearizable"
    return "unknown", "unknown"


def _counts(result: Result, history: Sequence[Op] | None) -> list[tuple[str, str]]:
    out = [(k, f"{v:,}" if isinstance(v, int) else str(v)) for k, v in result.counts.items()]
    if history is not None:
        invokes = [o for o in history if o.type == "invoke" and o.process != "nemesis"]
        out.append(("operations in the history", f"{len(invokes):,}"))
        out.append(("processes", f"{len({o.process for o in invokes}):,}"))
    return out


def _origin(result: Result, history: Sequence[Op] | None) -> int:
    """The time of the first operation, which the page counts seconds from."""
    if history:
        return min(o.time for o in history)
    starts = [
        o["start"] for a in result.anomalies if a.type == _KIND
        for o in a.details.get("operations") or () if o.get("start") is not None
    ]
    return min(starts, default=0)


def _sec(ns: int, t0: int, digits: int) -> str:
    return f"{(ns - t0) / 1e9:.{digits}f}"


def _fmt(v: Any) -> str:
    """A value the way Jepsen prints it: nil, [1 2], "" for the empty string."""
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v if v and v.strip() == v else json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + " ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_fmt(k)} {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


def _clip(text: str, room: int) -> str:
    """`text` cut to `room` characters with an ellipsis; nothing if under 3."""
    if len(text) <= room:
        return text
    return text[: room - 1] + "…" if room >= 3 else ""


def _label(o: Mapping[str, Any]) -> str:
    """`write 3`, `read → 2`, `cas 1→4 ✓`; `?` where an info op's result is unknown."""
    f, value, res, ok = str(o.get("f")), o.get("value"), o.get("result"), o.get("outcome") == "ok"
    if f in _CAS and isinstance(value, list | tuple) and len(value) == 2:
        return f"{f} {_fmt(value[0])}→{_fmt(value[1])} {'✓' if ok else '?'}"
    text = f if value is None else f"{f} {_fmt(value)}"
    if f in _READS:
        return f"{text} → {_fmt(res) if ok else '?'}"
    if ok and res is not None and res != value:
        return f"{text} → {_fmt(res)}"
    return text


def _tip(o: Mapping[str, Any], t0: int, clock: str, position: int | None, failing: bool,
         concurrent: bool) -> str:
    start, end = o["start"], o.get("end")
    if clock == "s":
        when = f"invoked {_sec(start, t0, 6)} s · " + (
            "never completed" if end is None else f"completed {_sec(end, t0, 6)} s")
    elif clock == "index":
        when = f"invoked at history index {start} · " + (
            "never completed" if end is None else f"completed at history index {end}")
    elif clock == "logical":
        when = f"invoked at time {start} · " + ("never completed" if end is None else f"completed at time {end}")
    else:
        when = "no times recorded"
    lines = [
        f"op {o['index']} · process {o['process']} · {_label(o)}",
        f"{when} · outcome {o.get('outcome')}",
        f"value {_fmt(o.get('value'))} · result {_fmt(o.get('result'))}",
    ]
    if position is not None:
        lines.append(f"#{position} in the longest linearizable prefix")
    if failing:
        lines.append("cannot be linearized")
    elif concurrent:
        lines.append("concurrent with the failing operation")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The page.


def _template() -> jinja2.Template:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    return env.from_string(_PAGE)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}: {{ verdict[1] }}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; background: #fafafa; }
header { padding: 14px 24px; border-bottom: 1px solid #ddd; background: #fff; }
header h1 { font-size: 20px; margin: 0 0 4px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 4px; color: #fff; font-weight: 600; margin-left: 8px; }
.badge.valid { background: #2e7d32; } .badge.invalid { background: #c62828; } .badge.unknown { background: #8d6e00; }
.explanation { font-size: 16px; margin: 6px 0; }
.meta { color: #555; font-size: 13px; } .meta span { margin-right: 18px; }
code, .state { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
.meta .state, .state { display: inline-block; background: #eef3fb; border: 1px solid #c5d5ee; border-radius: 3px; padding: 0 6px; margin: 0 4px 2px 0; }
main { padding: 10px 24px 30px; }
section { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px 14px; margin: 12px 0; }
section h2 { font-size: 16px; margin: 0 0 4px; }
.note { background: #fff8e1; border: 1px solid #f0d78c; padding: 4px 8px; border-radius: 4px; font-size: 13px; }
.legend { font-size: 12px; color: #444; margin: 6px 0; display: flex; gap: 16px; flex-wrap: wrap; align-items: center; }
.legend svg { vertical-align: middle; margin-right: 4px; }
.controls button { font: inherit; font-size: 12px; padding: 1px 8px; margin-right: 4px; }
.axis-note { font-size: 12px; color: #777; margin: 2px 0; }
.timeline-wrap { display: flex; align-items: flex-start; border: 1px solid #eee; margin-top: 6px; }
.scroll { overflow-x: auto; flex: 1; }
svg.lanes { flex: none; border-right: 1px solid #e4e4e4; background: #fcfcfc; }
svg.timeline { display: block; }
svg text { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 11px; }
.lane-label { fill: #333; font-size: 12px; } .lane-line { stroke: #eee; }
.tick line { stroke: #ddd; } .tick text { fill: #777; font-size: 10px; }
rect.lin { fill: #d6e6fb; stroke: #4a7fc1; } rect.other { fill: #ececec; stroke: #9e9e9e; }
rect.fail { fill: #f9c7c7; stroke: #d32f2f; stroke-width: 2.5; }
rect.conc { stroke: #e08a00; stroke-width: 2.5; }
rect.open { stroke-dasharray: 5 3; }
rect.named { stroke: #111; stroke-width: 2.5; }
button.jump { font-size: 12px; cursor: pointer; color: inherit; }
g.op:hover rect { filter: brightness(0.92); } g.op:hover text { font-weight: 700; }
text.label { fill: #222; pointer-events: none; } text.label.fail { fill: #b71c1c; font-weight: 700; }
.lin-path { fill: none; stroke: #1e5bb0; stroke-width: 1.5; stroke-opacity: 0.75; }
.lin-point circle { fill: #1e5bb0; stroke: #fff; stroke-width: 1; } .lin-point text { fill: #fff; font-size: 8px; font-weight: 700; }
.fail-link { stroke: #d32f2f; stroke-width: 1.5; stroke-dasharray: 4 3; }
.gap rect { fill: #f1f1f1; stroke: #aaa; stroke-dasharray: 3 3; } .gap text { fill: #555; font-size: 10px; }
.long-labels { font-size: 12px; max-height: 14em; overflow: auto; margin: 6px 0 0; padding-left: 20px; }
</style>
</head>
<body>
<header>
<h1>{{ title }}<span class="badge {{ verdict[0] }}">{{ verdict[1] }}</span></h1>
{% if result.valid is sameas true %}
<p class="explanation">Every operation fits one order consistent with real time and the model.</p>
{% elif result.valid is sameas false %}
  {% if first %}
<p class="explanation">{{ first.explanation }}</p>
<p class="meta">States possible just before it:
    {% for s in first.states -%}<span class="state">{{ s }}</span>{%- else %}none{% endfor %}
    {% if sections|length > 1 %} · {{ sections|length }} keys cannot be linearized (below){% endif %}</p>
  {% elif others %}
<p class="explanation">{{ others[0].explanation }}</p>
  {% endif %}
{% else %}
<p class="explanation">The checker could not decide: {{ result.reason or "no reason given" }}</p>
{% endif %}
<p class="meta"><span>checker <code>{{ result.checker }}</code></span>
{% for k, v in counts %}<span>{{ k }}: {{ v }}</span>{% endfor %}</p>
</header>
<main>
{% for s in sections %}
<section id="key-{{ s.n }}">
<h2>{% if s.key is not none %}Key <code>{{ s.key }}</code>{% else %}Counterexample{% endif %}</h2>
{% if sections|length > 1 %}<p class="explanation">{{ s.explanation }}</p>{% endif %}
<p class="meta">
  {% if s.fail_label %}<span>cannot linearize <code>{{ s.fail_label }}</code></span>{% endif %}
  <span>longest linearizable prefix: {{ s.prefix_len }} operations</span>
  <span>concurrent with it: {{ s.concurrent }}</span>
  {% if s.named %}<span>also named: {% for t, x in s.named %}<button type="button" class="state jump" data-x="{{ x|round(1) }}" title="show it in the timeline">{{ t }}</button>{% endfor %}</span>{% endif %}
  {% if sections|length > 1 %}<span>states before it: {% for st in s.states %}<span class="state">{{ st }}</span>{% else %}none{% endfor %}</span>{% endif %}
</p>
{% if s.note %}<p class="note">{{ s.note }}</p>{% endif %}
{% if s.bars %}
<div class="legend">
  <span><svg width="26" height="12"><rect class="lin" x="1" y="1" width="24" height="10"/></svg>linearized (numbered in order)</span>
  <span><svg width="26" height="12"><rect class="fail" x="1" y="1" width="24" height="10"/></svg>cannot be linearized</span>
  <span><svg width="26" height="12"><rect class="other conc" x="1" y="1" width="24" height="10"/></svg>concurrent with it</span>
  {% if s.named %}<span><svg width="26" height="12"><rect class="lin named" x="1" y="1" width="24" height="10"/></svg>named in the explanation</span>{% endif %}
  <span><svg width="26" height="12"><rect class="other" x="1" y="1" width="24" height="10"/></svg>not reached</span>
  <span><svg width="26" height="12"><rect class="other open" x="1" y="1" width="24" height="10" fill="url(#hatch-{{ s.n }})"/></svg>info / never completed (may take effect any time after)</span>
  <span class="controls">zoom <button data-zoom="1.5">+</button><button data-zoom="0.6667">&minus;</button><button data-zoom="fit">fit</button><button data-zoom="1">1:1</button></span>
</div>
<p class="axis-note">{{ s.axis_note }} Hover an operation for its details.</p>
<div class="timeline-wrap">
<svg class="lanes" width="{{ label_width }}" height="{{ s.height }}" viewBox="0 0 {{ label_width }} {{ s.height }}" data-width="{{ label_width }}">
{% for y, label in s.lanes %}<line class="lane-line" x1="0" y1="{{ y + 19 }}" x2="{{ label_width }}" y2="{{ y + 19 }}"/><text class="lane-label" x="6" y="{{ y + 4 }}">{{ label }}</text>
{% endfor %}
</svg>
<div class="scroll">
<svg class="timeline" width="{{ s.width|round(1) }}" height="{{ s.height }}" viewBox="0 0 {{ s.width|round(1) }} {{ s.height }}" data-width="{{ s.width|round(1) }}" data-fail-x="{{ s.fail_x|round(1) }}">
<defs><pattern id="hatch-{{ s.n }}" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#888" stroke-width="1.2" stroke-opacity="0.5"/></pattern></defs>
{% for x, label in s.ticks %}<g class="tick"><line x1="{{ x|round(1) }}" y1="{{ 22 }}" x2="{{ x|round(1) }}" y2="{{ s.height - 8 }}"/><text x="{{ x|round(1) }}" y="16" text-anchor="middle">{{ label }}</text></g>
{% endfor %}
{% for y, label in s.lanes %}<line class="lane-line" x1="0" y1="{{ y + 19 }}" x2="{{ s.width|round(1) }}" y2="{{ y + 19 }}"/>
{% endfor %}
{% for x, count in s.gaps %}<g class="gap"><title>{{ "{:,}".format(count) }} operations invoked here are not drawn</title><rect x="{{ x|round(1) }}" y="22" width="{{ gap_width }}" height="{{ s.height - 30 }}"/><text x="{{ (x + gap_width / 2)|round(1) }}" y="33" text-anchor="middle">{{ "{:,}".format(count) }} ops</text></g>
{% endfor %}
{% for b in s.bars %}<g class="op" data-op="{{ b.index }}"><title>{{ b.tip }}</title><rect class="{{ b.cls }}{% if b.open %} open{% endif %}" x="{{ b.x|round(1) }}" y="{{ b.y }}" width="{{ b.w|round(1) }}" height="20" rx="3"/>{% if b.open %}<rect x="{{ b.x|round(1) }}" y="{{ b.y }}" width="{{ b.w|round(1) }}" height="20" rx="3" fill="url(#hatch-{{ s.n }})" stroke="none"/>{% endif %}{% if b.label %}<text class="label{% if 'fail' in b.cls %} fail{% endif %}" x="{{ (b.x + 5)|round(1) }}" y="{{ b.y + 15 }}">{{ b.label }}</text>{% endif %}</g>
{% endfor %}
{% if s.path %}<polyline class="lin-path" points="{{ s.path }}"/>{% endif %}
{% if s.fail_link %}<line class="fail-link" x1="{{ s.fail_link[0]|round(1) }}" y1="{{ s.fail_link[1]|round(1) }}" x2="{{ s.fail_link[2]|round(1) }}" y2="{{ s.fail_link[3]|round(1) }}"><title>the next operation cannot be linearized here</title></line>{% endif %}
{% for p in s.points %}<g class="lin-point"><title>{{ p.tip }}</title><circle cx="{{ p.x|round(1) }}" cy="{{ p.y }}" r="{{ 7 if p.n < 100 else 9 if p.n < 1000 else 11 }}"/><text x="{{ p.x|round(1) }}" y="{{ p.y + 3 }}" text-anchor="middle">{{ p.n }}</text></g>
{% endfor %}
</svg>
</div>
</div>
{% if s.long_labels %}
<p class="axis-note">Labels cut short above, in full:</p>
<ul class="long-labels">{% for t in s.long_labels %}<li><code>{{ t }}</code></li>{% endfor %}</ul>
{% endif %}
{% endif %}
</section>
{% endfor %}
{% if undrawn %}
<section><h2>More keys that cannot be linearized</h2><ul>
{% for line in undrawn %}<li>{{ line }}</li>{% endfor %}
</ul></section>
{% endif %}
{% if others %}
<section><h2>Other anomalies</h2><ul>
{% for a in others %}<li><code>{{ a.type }}</code>: {{ a.explanation }}</li>{% endfor %}
</ul></section>
{% endif %}
</main>
<script>
(function () {
  document.querySelectorAll("section").forEach(function (sec) {
    var svg = sec.querySelector("svg.timeline");
    if (!svg) { return; }
    var box = svg.parentNode, lanes = sec.querySelector("svg.lanes"), scale = 1;
    var base = parseFloat(svg.dataset.width), high = parseFloat(svg.getAttribute("height"));
    var label = parseFloat(lanes.dataset.width);
    function apply(s) {
      var centre = (box.scrollLeft + box.clientWidth / 2) / scale;
      scale = Math.max(0.02, Math.min(8, s));
      svg.setAttribute("width", base * scale);
      svg.setAttribute("height", high * scale);
      lanes.setAttribute("width", label * scale);
      lanes.setAttribute("height", high * scale);
      box.scrollLeft = centre * scale - box.clientWidth / 2;
    }
    sec.querySelectorAll("button[data-zoom]").forEach(function (b) {
      b.addEventListener("click", function () {
        var z = b.dataset.zoom;
        apply(z === "fit" ? Math.min(1, box.clientWidth / base) : z === "1" ? 1 : scale * parseFloat(z));
      });
    });
    sec.querySelectorAll("button.jump").forEach(function (b) {
      b.addEventListener("click", function () {
        box.scrollLeft = Math.max(0, parseFloat(b.dataset.x) * scale - box.clientWidth / 2);
      });
    });
    box.scrollLeft = Math.max(0, parseFloat(svg.dataset.failX) - box.clientWidth / 2);
  });
})();
</script>
</body>
</html>
"""
