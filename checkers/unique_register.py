"""Linearizability of a read/write register whose written values are unique,
decided in O(n log n) time without any search.

`check_unique_register` is the polynomial-time path of `checkers.linearizable`
(Gibbons & Korach, "Testing shared memories", SIAM J. Comput. 26(4), 1997,
section 4: the "read-mapping" case, where every read names the one write it
read from). It returns None when the history is outside that case, and the
caller falls back to the general search.

Applies when every operation is a "read" or a "write" (no "cas", nothing
else), all on one key, every written value is hashable and distinct, and none
equals the initial value. A write's value is its invocation's value; a read's
value is its completion's value.

Preparation (Knossos's semantics for crashed operations):

- `fail` operations certainly did not happen: dropped (the caller already
  removes them; they are dropped here too).
- A read whose outcome is unknown (`info` or never completed) carries no
  information: dropped.
- A write whose outcome is unknown may take effect at any time after its
  invocation, or never. If nobody read its value it is dropped (leaving it
  out is always a valid choice, and never a necessary one to avoid: a write
  nobody reads can only make things harder). If its value was read, it did
  take effect: its completion is taken as +infinity.
- Reads of the initial value read from a virtual write that completed before
  the history began (time -infinity).

Time is the history index (`Operation.start`, `Operation.end`): every event
has its own index, so no two endpoints below are ever equal.

A *cluster* is a write and every read of its value. Its zone is given by
f = the earliest completion in the cluster and s = the latest invocation in
the cluster. If f < s the zone is *forward*, the interval [f, s]; otherwise it
is *backward*, the interval [s, f].

The history is linearizable if and only if

  (a) every read reads a value that was written (or is the initial value),
      and no read completed before its write was invoked;
  (b) no two forward zones intersect; and
  (c) no backward zone lies inside a forward zone.

Proof sketch. In any linearization a cluster is a contiguous block (a write of
another value in between would hide this value from the later reads, which
cannot be written again; a read of another value cannot see this one), with
the write first. The op that completes at f is linearized before f, the op
invoked at s after s, so the block's span contains a point <= f and a point
>= s; for a forward zone it covers all of [f, s]. Two forward blocks are
disjoint, hence (b); a backward cluster's block has a point <= f' and a point
>= s', which forces it to meet a forward zone [f, s] that strictly contains
[s', f'], hence (c); (a) is plain. Conversely, if (a)-(c) hold, linearize each
forward cluster inside [f - e, s + e] (the write just before f, each read at
max(its invocation, f) plus a small shift), and each backward cluster, all at
one instant t in [s, f] that lies outside every forward zone (one exists:
forward zones are disjoint closed intervals and none contains [s, f]); every
op is linearized inside its own interval, clusters do not interleave, and
each read follows its own write: a legal sequential history.

The check is one pass to build the zones, a sort of the forward zones by f
(b: consecutive zones must not overlap), and a binary search per backward
zone for the one forward zone that could contain it (c).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from checkers.history import Operation
from checkers.result import Anomaly, Result

_BEFORE = -1  # the virtual initial write's completion: before every index
_AFTER = 1 << 62  # the completion of a write whose outcome is unknown
_CONCURRENT_LIMIT = 100

__all__ = ["check_unique_register"]


@dataclass(slots=True)
class _Cluster:
    value: Any
    write: Operation | None  # None for the initial value's virtual write
    f: int  # earliest completion
    f_op: Operation | None  # the op completing at f (None: the virtual write)
    s: int  # latest invocation
    s_op: Operation | None


@dataclass(frozen=True, kw_only=True, slots=True)
class _Violation:
    read: Operation  # the read that cannot be linearized
    witnesses: tuple[Operation, ...]
    explanation: str


def _end(o: Operation) -> int:
    e = o.end
    return _AFTER if e is None else e


def _name(f: Any) -> str:
    """"read" for "read", ":read" and an EDN keyword :read."""
    return f if f in ("read", "write") else str(f).lstrip(":")


def _written(o: Operation) -> Any:
    """A write's value: its invocation's, or its `ok` completion's when the
    invocation left it out (as checkers.models reads it)."""
    v = o.invoke.value
    if v is None and o.completion is not None and o.completion.type == "ok":
        return o.completion.value
    return v


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def check_unique_register(operations: list[Operation], initial: Any = None) -> Result | None:
    """Decide linearizability of a read/write register with unique written
    values in O(n log n); None when the history is not of that kind.

    `operations` are paired invocations (checkers.history.pair), of one key,
    in invocation order; `fail` operations are ignored."""
    if not _hashable(initial):
        return None
    writes: dict[Any, Operation] = {}
    reads: list[Operation] = []
    key = operations[0].key if operations else None
    for o in operations:
        f = _name(o.f)
        if f not in ("read", "write") or o.key != key:
            return None
        outcome = o.outcome
        if f == "write":
            v = _written(o)
            if not _hashable(v) or v in writes or v == initial:
                return None
            if outcome != "fail":
                writes[v] = o
        elif outcome == "ok":
            assert o.completion is not None
            if not _hashable(o.completion.value):
                return None
            reads.append(o)
    violation = _violations(writes, reads, initial)
    counts = {"operations": len(operations), "partitions": 1, "steps": 0}
    if violation is None:
        return Result(checker="linearizable", valid=True, counts=counts)
    return Result(checker="linearizable", valid=False, anomalies=(_anomaly(violation, operations),), counts=counts)


def _violations(writes: dict[Any, Operation], reads: list[Operation], initial: Any) -> _Violation | None:
    clusters: dict[Any, _Cluster] = {}
    for r in sorted(reads, key=lambda o: o.start):
        assert r.completion is not None
        v = r.completion.value
        c = clusters.get(v)
        if c is None:
            w = writes.get(v)
            if w is None:
                if v != initial:
                    return _Violation(read=r, witnesses=(), explanation=(
                        f"{_what(r)}: no write of {v!r} took place (none was invoked, or it failed) "
                        f"and it is not the initial value {initial!r}"))
                c = _Cluster(value=v, write=None, f=_BEFORE, f_op=None, s=-1, s_op=None)
            else:
                c = _Cluster(value=v, write=w, f=_end(w), f_op=w, s=w.start, s_op=w)
            clusters[v] = c
        end = _end(r)
        if c.write is not None and end < c.write.start:
            return _Violation(read=r, witnesses=(c.write,), explanation=(
                f"{_what(r)}: it completed before the write of {v!r} by process "
                f"{c.write.process} (op {c.write.invoke.index}) was invoked"))
        if end < c.f:
            c.f, c.f_op = end, r
        if r.start > c.s:
            c.s, c.s_op = r.start, r
    for v, w in writes.items():
        if v not in clusters and w.end is not None:  # an unread write that may not have happened is dropped
            clusters[v] = _Cluster(value=v, write=w, f=w.end, f_op=w, s=w.start, s_op=w)

    forward = sorted((c for c in clusters.values() if c.f < c.s), key=lambda c: c.f)
    found: list[_Violation] = []
    for x, y in pairwise(forward):
        if y.f < x.s:  # (b): two forward zones intersect
            later, earlier = (x, y) if x.s > y.s else (y, x)
            # Each of the two is an initial-value cluster only if its f is _BEFORE,
            # and then it is `x` (the first in f order).
            if earlier.write is None:
                found.append(_replaced(earlier, later))
            elif later.write is None:
                found.append(_replaced(later, earlier))
            else:
                found.append(_between(later, earlier))
    lefts = [c.f for c in forward]
    for d in clusters.values():
        if d.f < d.s:
            continue
        i = bisect_right(lefts, d.s) - 1
        if i >= 0 and forward[i].s > d.f:  # (c): a backward zone inside a forward zone
            x = forward[i]
            found.append(_replaced(x, d) if x.write is None else _between(x, d))
    if not found:
        return None
    return min(found, key=lambda v: v.read.start)


def _between(x: _Cluster, y: _Cluster) -> _Violation:
    """x's zone is forward and y's was in place strictly inside it: an op on
    y began after an op on x completed, and an op on y completed before the
    read x.s_op of x was invoked."""
    assert x.s_op is not None and x.f_op is not None and y.s_op is not None and y.f_op is not None
    return _Violation(read=x.s_op, witnesses=(x.f_op, y.s_op, y.f_op), explanation=(
        f"{_what(x.s_op)}: the register held {y.value!r} in between "
        f"({_ref(y.s_op)} began after {_ref(x.f_op)} completed, and {_ref(y.f_op)} "
        f"completed before this read began), and {x.value!r} is never written again"))


def _replaced(x: _Cluster, y: _Cluster) -> _Violation:
    """x is the initial value, read by x.s_op after an op on y completed."""
    assert x.s_op is not None and y.f_op is not None
    return _Violation(read=x.s_op, witnesses=(y.f_op,), explanation=(
        f"{_what(x.s_op)}: the register already held {y.value!r} ({_ref(y.f_op)} "
        f"completed before this read began), and the initial value {x.value!r} is never written again"))


def _value(o: Operation) -> Any:
    if _name(o.f) == "read":
        return None if o.completion is None else o.completion.value
    return _written(o)


def _what(o: Operation) -> str:
    return (f"{_name(o.f)} of {_value(o)!r} by process {o.process} at {o.invoke.time / 1e9:.2f} s "
            f"(op {o.invoke.index})")


def _ref(o: Operation) -> str:
    return f"op {o.invoke.index} ({_name(o.f)} of {_value(o)!r} by process {o.process})"


def _op_dict(o: Operation) -> dict[str, Any]:
    c = o.completion
    return {
        "index": o.invoke.index,
        "process": o.process,
        "f": o.f,
        "value": o.invoke.value,
        "result": None if c is None else c.value,
        "outcome": o.outcome,
        "start": o.invoke.time,
        "end": None if o.end is None or c is None else c.time,
    }


def _anomaly(v: _Violation, operations: list[Operation]) -> Anomaly:
    r = v.read
    lo, hi = r.start, _end(r)
    concurrent = [o.invoke.index for o in operations
                  if o is not r and o.outcome != "fail" and o.start < hi and _end(o) > lo]
    ops = tuple(sorted({r.invoke.index, *(w.invoke.index for w in v.witnesses)}))
    return Anomaly(type="nonlinearizable", ops=ops, explanation=v.explanation, details={
        "key": r.key,
        "op": r.invoke.index,
        "prefix": [],
        "states": [],
        "concurrent": concurrent[:_CONCURRENT_LIMIT],
        "operations": [_op_dict(o) for o in operations],
    })
