"""Sibling correctness of a multi-value register (DESIGN.md, "Checkers", P1-P6),
checked against the configuration the cluster ran with.

Workload: `write` operations (invocation value = the written value, unique
across the history; `obs` in the invocation's or the completion's `extra` = the
sibling values returned by the read that supplied the write's context; absent
or empty = a blind write) and `read` operations (completion value = the list of
sibling values). `op.key` splits the history: every property is checked per
key. Final reads carry `extra={"final": True}` (after healing and quiescence,
one per node; `op.node` names the node).

Causal order: `w1 -> w2` when w1's value is in w2's `obs`, transitively.
Because a value in `obs` was read before the write was invoked, `a -> b`
implies that a's write was invoked before b's: ancestor searches walk the
`obs` edges backwards from `b` and never below a's invocation, and remember,
per queried ancestor `a`, the writes already known not to descend from it. A
value that stays a sibling for the whole history therefore costs one walk in
total, not one per read: near-linear for realistic histories.

Choices (documented so that callers can rely on them):

- P1: a value read that no write wrote, or only a write that `fail`ed, or a
  write invoked after the read completed, is a `phantom`.
- P3 under `lww`: a lost `ok` write is `lost-causal` when some final value
  causally precedes it (an older value won, e.g. a skewed clock) and
  `lost-concurrent` otherwise (LWW discarding a concurrent write: by design).
  `lost-concurrent` is reported but does NOT make the result invalid: it is
  what LWW promises; the cart/set checker is the one that rejects it for
  workloads where every write must survive. Under `dvv` any loss is
  `lost-write`. A missing write that ended in `info` is only counted.
- P5/P6 compare a read with the writes (reads) that completed before it was
  invoked; final reads are not checked as the later read (P3/P4 cover them).
  Only the causally maximal earlier writes (values) are kept, so each read is
  compared with a small frontier. Under `lww` a read may return a value
  concurrent with the expected one (the timestamp order is invisible to the
  client): it is stale only if every value it returned causally precedes, or
  completed in real time before the invocation of, the expected write.
- Valid is False when any anomaly other than `lost-concurrent` is found.

Cost: about 25 us per operation on a long causal chain with a sibling that
lives for the whole history (400,000 operations in about 10 s). The P5/P6
frontier holds only causally maximal values; under `lww` with many blind
(mutually concurrent) writes it can grow with the number of such writes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from checkers.history import Op, Operation, pair
from checkers.result import Anomaly, Result

CHECKER = "siblings"
ALL_PROPERTIES = ("P1", "P2", "P3", "P4", "P5", "P6")


def _h(value: Any) -> Hashable:
    """A hashable form of a value (lists become tuples)."""
    if isinstance(value, list):
        return tuple(_h(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _h(v)) for k, v in value.items()))
    return value


def _values(value: Any) -> list[Hashable]:
    if value is None:
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return [_h(v) for v in value]
    return [_h(value)]


def _extra(o: Operation, name: str) -> Any:
    got = o.invoke.extra.get(name)
    if got is None and o.completion is not None:
        got = o.completion.extra.get(name)
    return got


def _secs(ns: int) -> str:
    return f"{ns / 1e9:.2f} s"


def _show(vals: Iterable[Hashable]) -> str:
    return repr(sorted(vals, key=repr))


class _Dag:
    """The causal order of the written values of one key."""

    def __init__(self, writes: dict[Hashable, Operation]) -> None:
        self.writes = writes
        self.obs: dict[Hashable, tuple[Hashable, ...]] = {}
        for v, o in writes.items():
            self.obs[v] = tuple(x for x in _values(_extra(o, "obs")) if x in writes and x != v)
        self._desc: dict[Hashable, set[Hashable]] = defaultdict(set)
        self._nondesc: dict[Hashable, set[Hashable]] = defaultdict(set)

    def before(self, a: Hashable, b: Hashable) -> bool:
        """a -> b (strictly)."""
        if a == b or a not in self.writes or b not in self.writes:
            return False
        desc, nondesc = self._desc[a], self._nondesc[a]
        if b in desc:
            return True
        if b in nondesc:
            return False
        floor = self.writes[a].invoke.index
        seen = {b}
        stack = [b]
        while stack:
            x = stack.pop()
            for p in self.obs[x]:
                if p == a or p in desc:
                    desc.add(b)
                    return True
                if p in seen or p in nondesc or self.writes[p].invoke.index < floor:
                    continue
                seen.add(p)
                stack.append(p)
        nondesc |= seen
        return False

    def covers(self, vals: Iterable[Hashable], v: Hashable) -> bool:
        """Some value in vals is v or a causal successor of v."""
        return any(s == v or self.before(v, s) for s in vals)

    def ancestors_of(self, vals: Iterable[Hashable]) -> set[Hashable]:
        """Every value that is, or causally precedes, one of vals."""
        out: set[Hashable] = set()
        stack = [v for v in vals if v in self.writes]
        out.update(stack)
        while stack:
            for p in self.obs[stack.pop()]:
                if p not in out:
                    out.add(p)
                    stack.append(p)
        return out


class _Frontier:
    """The causally maximal values among those added so far."""

    def __init__(self, dag: _Dag) -> None:
        self.dag = dag
        self.items: dict[Hashable, tuple[int, ...]] = {}  # value -> ops that put it there

    def add(self, v: Hashable, ops: tuple[int, ...]) -> None:
        if v not in self.dag.writes:
            return  # a phantom: P1 reports it
        if v in self.items or any(self.dag.before(v, f) for f in self.items):
            return
        for f in [f for f in self.items if self.dag.before(f, v)]:
            del self.items[f]
        self.items[v] = ops


def check(history: Sequence[Op], *, n: int, w: int, r: int, resolution: str = "dvv",
          quorum: str = "sloppy", read_repair: str = "async") -> Result:
    if resolution not in ("dvv", "lww"):
        raise ValueError(f"resolution must be 'dvv' or 'lww', not {resolution!r}")
    operations = [o for o in pair(history) if o.f in ("read", "write")]
    by_key: dict[Any, list[Operation]] = defaultdict(list)
    for o in operations:
        by_key[_h(o.key)].append(o)

    lww = resolution == "lww"
    check_p5 = quorum == "strict" and w + r > n
    check_p6 = read_repair == "sync"
    has_final = any(o.f == "read" and _extra(o, "final") for o in operations)

    not_checked: dict[str, str] = {}
    if not check_p5:
        not_checked["P5"] = ("sloppy quorums do not promise it" if quorum != "strict"
                             else f"W+R={w + r} does not exceed N={n}: quorums need not intersect")
    if not check_p6:
        not_checked["P6"] = f"read repair is {read_repair!r}, not 'sync': reads may go back in time"
    if not has_final:
        not_checked["P3"] = "the history has no final reads"
        not_checked["P4"] = "the history has no final reads"
    checked = [p for p in ALL_PROPERTIES if p not in not_checked]

    anomalies: list[Anomaly] = []
    counts: Counter[str] = Counter()
    keys_without_final: list[Any] = []
    for key, ops in by_key.items():
        _check_key(key, ops, lww=lww, check_p5=check_p5, check_p6=check_p6,
                   has_final=has_final, anomalies=anomalies, counts=counts,
                   keys_without_final=keys_without_final)

    for a in anomalies:
        counts[a.type] += 1
    valid = not any(a.type != "lost-concurrent" for a in anomalies)
    details: dict[str, Any] = {
        "checked": checked,
        "not_checked": not_checked,
        "config": {"n": n, "w": w, "r": r, "resolution": resolution, "quorum": quorum,
                   "read_repair": read_repair},
    }
    if keys_without_final:
        details["keys_without_final_read"] = keys_without_final
    if counts["lost-concurrent"]:
        details["note"] = (f"{counts['lost-concurrent']} acknowledged write(s) lost to concurrent "
                           "writes: last-write-wins discards them by design (not counted as invalid)")
    for name in ("writes_ok", "writes_info", "writes_fail", "reads", "final_reads",
                 "info_writes_missing", "info_writes_landed"):
        counts.setdefault(name, 0)
    return Result(checker=CHECKER, valid=valid, anomalies=tuple(anomalies), counts=dict(counts),
                  details=details)


def _check_key(key: Any, ops: list[Operation], *, lww: bool, check_p5: bool, check_p6: bool,
               has_final: bool, anomalies: list[Anomaly], counts: Counter[str],
               keys_without_final: list[Any]) -> None:
    writes: dict[Hashable, Operation] = {}
    reads: list[Operation] = []
    finals: list[Operation] = []
    for o in ops:
        if o.f == "write":
            counts[f"writes_{o.outcome}"] += 1
            writes[_h(o.invoke.value)] = o
        else:
            counts["reads"] += 1
            if _extra(o, "final"):
                counts["final_reads"] += 1
                if o.outcome == "ok":
                    finals.append(o)
            elif o.outcome == "ok":
                reads.append(o)
    dag = _Dag(writes)
    kdesc = "" if key is None else f" of key {key!r}"

    def wdesc(v: Hashable) -> str:
        o = writes[v]
        at = (f"acknowledged at {_secs(o.completion.time)}" if o.completion is not None
              and o.outcome == "ok" else f"invoked at {_secs(o.invoke.time)}")
        node = o.completion.node if o.completion is not None and o.completion.node else o.invoke.node
        via = f" via {node}" if node else ""
        return f"write of {v!r} by process {o.process}, {at}{via}"

    def rdesc(o: Operation) -> str:
        assert o.completion is not None
        node = o.completion.node or o.invoke.node
        via = f" via {node}" if node else ""
        return (f"read{kdesc} by process {o.process}{via} "
                f"({_secs(o.invoke.time)}-{_secs(o.completion.time)})")

    def rops(o: Operation) -> tuple[int, ...]:
        assert o.completion is not None
        return (o.invoke.index, o.completion.index)

    def wops(v: Hashable) -> tuple[int, ...]:
        o = writes[v]
        return (o.invoke.index,) if o.completion is None else (o.invoke.index, o.completion.index)

    # P1 and P2, over every ok read (final ones included).
    for o in reads + finals:
        assert o.completion is not None
        vals = _values(o.completion.value)
        for v in vals:
            src = writes.get(v)
            why = None
            if src is None:
                why = "no write wrote it"
            elif src.outcome == "fail":
                why = f"its write (process {src.process}) failed"
            elif src.invoke.index > o.completion.index:
                why = "its write was invoked only after the read completed"
            if why is not None:
                extra = () if src is None else wops(v)
                anomalies.append(Anomaly(
                    type="phantom", ops=rops(o) + extra,
                    explanation=f"{rdesc(o)} returned {v!r}, but {why}: a phantom value",
                    details={"key": key, "value": v}))
        known = [v for v in vals if v in writes]
        for a in known:
            for b in known:
                if dag.before(a, b):
                    anomalies.append(Anomaly(
                        type="sibling-not-antichain", ops=rops(o) + wops(a) + wops(b),
                        explanation=(f"{rdesc(o)} returned {a!r} and {b!r} as siblings, but "
                                     f"{a!r} causally precedes {b!r} (it should have been "
                                     "superseded)"),
                        details={"key": key, "older": a, "newer": b}))

    # P3 and P4.
    if has_final and not finals:
        keys_without_final.append(key)
    if finals:
        per_node = [(o.completion.node or o.invoke.node or f"process {o.process}",
                     frozenset(_values(o.completion.value))) for o in finals
                    if o.completion is not None]
        distinct = {s for _, s in per_node}
        final_vals: set[Hashable] = set().union(*distinct)
        if len(distinct) == 1:
            shown = f"{', '.join(nd for nd, _ in per_node)} all return {_show(final_vals)}"
        else:
            shown = "; ".join(f"{nd} returns {_show(s)}" for nd, s in per_node)
        if len(distinct) > 1:
            anomalies.append(Anomaly(
                type="divergent", ops=tuple(i for o in finals for i in rops(o)),
                explanation=f"final reads{kdesc} disagree after healing: {shown}: replicas "
                            "did not converge",
                details={"key": key, "final": {nd: sorted(s, key=repr) for nd, s in per_node}}))
        survived = dag.ancestors_of(final_vals)
        for v, o in writes.items():
            if v in survived:
                if o.outcome == "info":
                    counts["info_writes_landed"] += 1
                continue
            if o.outcome == "info":
                counts["info_writes_missing"] += 1
                continue
            if o.outcome != "ok":
                continue
            if not lww:
                kind, tail = "lost-write", "lost"
            else:
                older = sorted((f for f in final_vals if dag.before(f, v)), key=repr)
                if older:
                    kind = "lost-causal"
                    tail = (f"lost to {_show(older)}, which causally precedes it: last-write-wins "
                            "kept an older value (a skewed clock?)")
                else:
                    kind = "lost-concurrent"
                    tail = "lost to a concurrent write, as last-write-wins does by design"
            anomalies.append(Anomaly(
                type=kind, ops=wops(v),
                explanation=f"{wdesc(v)}, is in no final read{kdesc} ({shown}) and no "
                            f"later write saw it: {tail}",
                details={"key": key, "value": v}))

    # P5 and P6: sweep the key's events in history order.
    if not (check_p5 or check_p6):
        return
    events: list[tuple[int, int, Operation]] = []  # (index, kind, op); 0 = completion, 1 = invoke
    for o in writes.values():
        if check_p5 and o.outcome == "ok" and o.completion is not None:
            events.append((o.completion.index, 0, o))
    for o in finals:
        assert o.completion is not None
        if check_p6:
            events.append((o.completion.index, 0, o))
    for o in reads:
        assert o.completion is not None
        events.append((o.completion.index, 0, o))
        events.append((o.invoke.index, 1, o))
    events.sort(key=lambda e: (e[0], e[1]))
    wfront, rfront = _Frontier(dag), _Frontier(dag)
    pending: dict[int, tuple[dict[Hashable, tuple[int, ...]], dict[Hashable, tuple[int, ...]]]] = {}
    for _, ev, o in events:
        if ev == 1:
            pending[o.invoke.index] = (dict(wfront.items), dict(rfront.items))
            continue
        if o.f == "write":
            wfront.add(_h(o.invoke.value), wops(_h(o.invoke.value)))
            continue
        assert o.completion is not None
        got = _values(o.completion.value)
        snap = pending.pop(o.invoke.index, None)
        if snap is not None:
            _stale(o, got, snap, dag, lww, check_p5, check_p6, rdesc, rops, wdesc, key, anomalies)
        if check_p6:
            for v in got:
                rfront.add(v, rops(o))


def _stale(o: Operation, got: list[Hashable],
           snap: tuple[dict[Hashable, tuple[int, ...]], dict[Hashable, tuple[int, ...]]],
           dag: _Dag, lww: bool, check_p5: bool, check_p6: bool, rdesc: Any, rops: Any,
           wdesc: Any, key: Any, anomalies: list[Anomaly]) -> None:
    def covered(v: Hashable) -> bool:
        if dag.covers(got, v):
            return True
        if not lww:
            return False
        wv = dag.writes[v]
        for s in got:
            ws = dag.writes.get(s)
            if ws is None or dag.before(s, v):
                continue
            if ws.completion is not None and ws.outcome == "ok" and ws.completion.index < wv.invoke.index:
                continue
            return True
        return False

    wsnap, rsnap = snap
    if check_p5:
        missed = [v for v in wsnap if not covered(v)]
        if missed:
            anomalies.append(Anomaly(
                type="stale-read", ops=rops(o) + tuple(i for v in missed for i in wsnap[v]),
                explanation=(f"{rdesc(o)} returned {_show(got)}, but "
                             + "; ".join(wdesc(v) for v in missed)
                             + ", before the read began, and the read has neither "
                             + ("it" if len(missed) == 1 else "them")
                             + " nor a causal successor: W+R>N quorum visibility broken"),
                details={"key": key, "missed": missed}))
    if check_p6:
        missed = [v for v in rsnap if not covered(v)]
        if missed:
            earlier = sorted({i for v in missed for i in rsnap[v]})
            anomalies.append(Anomaly(
                type="new-old-inversion", ops=rops(o) + tuple(earlier),
                explanation=(f"{rdesc(o)} returned {_show(got)}, but an earlier read "
                             f"(ops {earlier}) that completed before it began had already "
                             f"returned {_show(missed)}, and this read has neither them nor a "
                             "successor: a new-then-old inversion despite synchronous read repair"),
                details={"key": key, "missed": missed}))
