"""Sibling correctness of a multi-value register (DESIGN.md, "Checkers", P1-P6),
checked against the configuration the cluster ran with.

Workload: `write` operations (invocation value = the written value, unique
across the history; `obs` in the invocation's or the completion's `extra` = the
sibling values returned by the read that supplied the write's context; absent
or empty = a blind write) and `read` operations (completion value = the list of
sibling values). `op.key` splits the history: every property is checked per
key. Final reads carry `extra={"final": True}` (after healing and quiescence,
one per node; `op.node` names the node).

Deletes: a `delete` operation (no value; `obs` as a write's) is a write of a
tombstone: a value nobody ever reads (a read after the tombstone wins returns
none of what it superseded, `[]` if nothing else is there), superseding its
`obs` as a write does. A blind delete (no `obs`) supersedes nothing under
siblings semantics (kvnode's dvv: its tombstone is a sibling of what is
there, which a read leaves out) and, under last-write-wins, whatever its
timestamp beats, which the checker cannot see.

Causal order: `w1 -> w2` when w1's value is in w2's `obs`, transitively.
Because a value in `obs` was read before the write was invoked, `a -> b`
implies that a's write was invoked before b's: ancestor searches walk the
`obs` edges backwards from `b` and never below a's invocation, and remember,
per queried ancestor `a`, the writes already known (not) to descend from it. A
value that stays a sibling for the whole history therefore costs one walk in
total, not one per read: near-linear for realistic histories. When every
`obs` of a key names only writes invoked earlier (as it does unless a read
returned a value from the future), `a -> b` with `a` invoked after `b` is
answered False without a walk; a key where some `obs` names a later write is
searched as written.

Choices (documented so that callers can rely on them):

- P1: a value read that no write wrote, or only a write that `fail`ed, or a
  write invoked after the read completed, is a `phantom`.
- P3 under `lww`: a lost `ok` write is `lost-causal` when some final value
  causally precedes it (an older value won, e.g. a skewed clock) and
  lost to a concurrent write (or delete) otherwise (LWW discarding a
  concurrent write: by design). Those are not anomalies: they are counted
  (`counts["lost_concurrent"]`) and the first few described in
  `details["lost_concurrent"]`; the cart/set checker is the one that rejects
  them for workloads where every write must survive. Under `dvv` any loss is
  `lost-write`. A missing write that ended in `info` is only counted.
- P5/P6 compare a read with the writes (reads) that completed before it was
  invoked; final reads are not checked as the later read (P3/P4 cover them).
  Only the causally maximal earlier writes (values) are kept, so each read is
  compared with a small frontier. Under `lww` a read may return a value
  concurrent with the expected one (the timestamp order is invisible to the
  client): it is stale only if every value it returned causally precedes, or
  completed in real time before the invocation of, the expected write.
- P5 needs the replica counts: without `n`, `w` and `r` (a store that
  promises siblings but no quorums) it is not checked, and says so.
- Deletes. P3: a write that causally precedes a delete that did not `fail`
  is not lost (it was deleted; tombstones are never read, so an `ok`
  delete counts as surviving unless a final read shows otherwise); final
  reads may be `[]`. P5/P6: a tombstone is never missing from a read (it is
  invisible); a value the read lacks is not stale if a delete that causally
  follows it (under `lww`: any delete that did not complete before the value's
  write began) was invoked before the read completed.
- `resurrection` (deletes only): a value that an `ok` delete superseded (it
  is in the delete's `obs`, or causally precedes one that is) is read by a
  read invoked after the delete completed. Values are unique, so a
  superseded value never legitimately comes back once the tombstone is
  everywhere: checked on the final reads always, and on every read where P5
  applies (strict quorums with W+R>N: a read after the delete meets its
  tombstone). Elsewhere a replica that missed the delete may still serve the
  old value mid-run: a stale read, which those settings allow. Under `lww`
  only causal supersession counts, as for `lost-causal`: on agreeing clocks a
  delete that read a value is stamped after it; a write that merely
  completed before a blind delete began may still beat it by a skewed
  clock's timestamp, which the checker cannot see, so that is not checked
  (`details["deletes"]` says what was).
- Valid is False when any anomaly is found.

Cost, on the project's 2-core machine, every property checked: about 20 us
per operation, `pair()` included (`python -m bench.history_checks`:
1,000,000 operations over 1,000 keys in about 19 s, against 3 s for the
`pair()` pass alone); about 13 us per operation on a long causal chain with
a sibling that lives for the whole history (160,000 operations in 2 s). The
P5/P6 frontier holds only causally maximal values; under `lww` with many
blind (mutually concurrent) writes it can grow with the number of such
writes. The check runs with the cyclic garbage collector paused
(`checkers.history.gc_paused`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from operator import itemgetter
from typing import Any

from checkers import text
from checkers.history import Op, Operation, gc_paused, pair
from checkers.result import Anomaly, Result

CHECKER = "siblings"
ALL_PROPERTIES = ("P1", "P2", "P3", "P4", "P5", "P6")
BY_DESIGN_LISTED = 20  # writes lost to concurrent ones (lww) described in details
_WRITE_COUNTS = {"ok": "writes_ok", "info": "writes_info", "fail": "writes_fail"}
_DELETE_COUNTS = {"ok": "deletes_ok", "info": "deletes_info", "fail": "deletes_fail"}


class _Tomb:
    """The tombstone a delete wrote: a value of its own (one per delete, by
    its invocation's index), equal to no value a read can return."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __eq__(self, other: object) -> bool:
        return type(other) is _Tomb and other.index == self.index

    def __hash__(self) -> int:
        return hash((_Tomb, self.index))

    def __repr__(self) -> str:
        return f"<tombstone of op {self.index}>"

# An ok read, its completion and the values it returned, as `_values` gives them.
_Read = tuple[Operation, Op, list[Hashable]]
# A completion in the P5/P6 sweep: (its history index, the operation, the
# read's values or None for a write, the written value or None for a read).
_Event = tuple[int, Operation, list[Hashable] | None, Hashable]
_Front = dict[Hashable, tuple[int, ...]]  # causally maximal value -> ops that put it there


def _h(value: Any) -> Hashable:
    """A hashable form of a value (lists become tuples)."""
    if isinstance(value, list):
        return tuple(_h(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _h(v)) for k, v in value.items()))
    return value


def _values(value: Any) -> list[Hashable]:
    if type(value) is list:  # the usual case first
        return [v if type(v) is str else _h(v) for v in value]
    if value is None:
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return [v if type(v) is str else _h(v) for v in value]  # strings: the usual case
    return [_h(value)]


def _outcome(o: Operation) -> str:
    c = o.completion
    return "info" if c is None else c.type


def _secs(ns: int) -> str:
    return f"{ns / 1e9:.2f} s"


def _show(vals: Iterable[Hashable]) -> str:
    return text.values(vals)


class _Dag:
    """The causal order of the written values of one key."""

    def __init__(self, writes: dict[Hashable, Operation]) -> None:
        self.writes = writes
        self.start: dict[Hashable, int] = {v: o.invoke.index for v, o in writes.items()}
        self.obs: dict[Hashable, tuple[Hashable, ...]] = {}
        # Ordered: every value in a write's obs was written by a write invoked
        # before it, as it is when clients only put in obs what a read
        # returned, and that read returned no phantom from the future. Then
        # a -> b needs a invoked before b.
        ordered = True
        start, edges = self.start, self.obs
        for v, o in writes.items():
            obs = o.invoke.extra.get("obs")
            if obs is None and o.completion is not None:
                obs = o.completion.extra.get("obs")
            if obs is None:
                edges[v] = ()
                continue
            try:  # the usual case first: a list of hashable values that need no _h
                if type(obs) is not list:
                    raise TypeError
                parents = tuple([x for x in obs if x in writes and x != v])
            except TypeError:
                parents = tuple([x for x in _values(obs) if x in writes and x != v])
            edges[v] = parents
            if ordered and parents:
                at = start[v]
                for x in parents:
                    if start[x] >= at:
                        ordered = False
                        break
        self.ordered = ordered
        # Per queried ancestor a: write -> whether it descends from a, where known.
        self._known: dict[Hashable, dict[Hashable, bool]] = {}

    def before(self, a: Hashable, b: Hashable) -> bool:
        """a -> b (strictly)."""
        if a == b:
            return False
        start = self.start
        floor = start.get(a)
        if floor is None:
            return False
        at = start.get(b)
        if at is None or (at <= floor and self.ordered):
            return False
        known = self._known.get(a)
        if known is None:
            known = self._known[a] = {}
        else:
            got = known.get(b)
            if got is not None:
                return got
        obs = self.obs
        for p in obs[b]:  # the usual case first: a is in b's obs (as the walk would find)
            if p == a:
                known[b] = True
                return True
        # Walk the obs edges back from b, never below a's invocation.
        seen = {b}
        stack = [b]
        while stack:
            for p in obs[stack.pop()]:
                if p == a:
                    known[b] = True
                    return True
                got = known.get(p)
                if got:
                    known[b] = True
                    return True
                if got is False or p in seen or start[p] < floor:
                    continue
                seen.add(p)
                stack.append(p)
        known.update(dict.fromkeys(seen, False))
        return False

    def covers(self, vals: Iterable[Hashable], v: Hashable) -> bool:
        """Some value in vals is v or a causal successor of v."""
        before = self.before
        for s in vals:  # noqa: SIM110 (a loop: cheaper than any() over a generator)
            if s == v or before(v, s):
                return True
        return False

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

    def add(self, front: _Front, v: Hashable, ops: Callable[[Any], tuple[int, ...]],
            arg: Any) -> bool:
        """Add v (put there by the operations `ops(arg)`) to the frontier `front` of causally
        maximal values unless v is there or precedes a value that is; drop the
        values v succeeds. True if the frontier changed."""
        start = self.start
        at = start.get(v)
        if at is None:
            return False  # a phantom: P1 reports it
        if v in front:
            return False
        before = self.before
        if self.ordered:  # skip the calls that before() would answer from the order alone
            for f in front:
                if start[f] > at and before(v, f):
                    return False
            for f in [f for f in front if start[f] < at and before(f, v)]:
                del front[f]
        else:
            for f in front:
                if before(v, f):
                    return False
            for f in [f for f in front if before(f, v)]:
                del front[f]
        front[v] = ops(arg)
        return True


def check(history: Sequence[Op], *, n: int | None = None, w: int | None = None, r: int | None = None,
          resolution: str = "dvv", quorum: str = "sloppy", read_repair: str = "async") -> Result:
    if resolution not in ("dvv", "lww"):
        raise ValueError(f"resolution must be 'dvv' or 'lww', not {resolution!r}")
    with gc_paused():
        return _check(history, n=n, w=w, r=r, resolution=resolution, quorum=quorum,
                      read_repair=read_repair)


def _check(history: Sequence[Op], *, n: int | None, w: int | None, r: int | None, resolution: str,
           quorum: str, read_repair: str) -> Result:
    # One pass over the paired history sorts every read and write into its key.
    by_key: dict[Any, _Key] = {}
    for o in pair(history):
        inv = o.invoke
        f = inv.f
        if f == "write":
            is_write = True
        elif f == "read":
            is_write = False
        elif f == "delete":
            is_write = True
        else:
            continue
        key = inv.key
        if isinstance(key, (list, dict)):  # a tuple: faster than list | dict
            key = _h(key)
        k = by_key.get(key)
        if k is None:
            k = by_key[key] = _Key()
        comp = o.completion
        if is_write:
            outcome: str = "info" if comp is None else comp.type
            if f == "delete":
                k.counts[_DELETE_COUNTS.get(outcome) or f"deletes_{outcome}"] += 1
                tomb = _Tomb(inv.index)
                k.writes[tomb] = o
                k.deletes.append(tomb)
                continue
            k.counts[_WRITE_COUNTS.get(outcome) or f"writes_{outcome}"] += 1
            value = inv.value
            k.writes[value if type(value) is str else _h(value)] = o
            continue
        k.counts["reads"] += 1
        final = inv.extra.get("final")
        if final is None and comp is not None:
            final = comp.extra.get("final")
        if final:
            k.counts["final_reads"] += 1
            if comp is not None and comp.type == "ok":
                k.finals.append((o, comp, _values(comp.value)))
        elif comp is not None and comp.type == "ok":
            got = comp.value
            k.reads.append((o, comp, [v if type(v) is str else _h(v) for v in got]
                            if type(got) is list else _values(got)))

    lww = resolution == "lww"
    counted = n is not None and w is not None and r is not None
    check_p5 = counted and quorum == "strict" and w + r > n  # type: ignore[operator]
    check_p6 = read_repair == "sync"
    anomalies: list[Anomaly] = []
    counts: Counter[str] = Counter()
    keys_without_final: list[Any] = []  # keys without an ok final read
    by_design: list[dict[str, Any]] = []  # writes lost to concurrent ones under lww: a sample
    for key, k in by_key.items():
        counts.update(k.counts)  # in the order they were first seen: the key's ops' order
        _check_key(key, k, lww=lww, check_p5=check_p5, check_p6=check_p6,
                   anomalies=anomalies, counts=counts, keys_without_final=keys_without_final,
                   by_design=by_design)
    has_final = counts["final_reads"] > 0  # some read, of any key and outcome, is final

    not_checked: dict[str, str] = {}
    if not check_p5:
        not_checked["P5"] = ("no replica counts (n, w, r) were given" if not counted
                             else "sloppy quorums do not promise it" if quorum != "strict"
                             else f"W+R={w + r} does not exceed N={n}: quorums need not intersect")  # type: ignore[operator]
    if not check_p6:
        not_checked["P6"] = f"read repair is {read_repair!r}, not 'sync': reads may go back in time"
    if not has_final:
        not_checked["P3"] = "the history has no final reads"
        not_checked["P4"] = "the history has no final reads"
    checked = [p for p in ALL_PROPERTIES if p not in not_checked]

    for a in anomalies:
        counts[a.type] += 1
    valid = not anomalies
    details: dict[str, Any] = {
        "checked": checked,
        "not_checked": not_checked,
        "config": {"n": n, "w": w, "r": r, "resolution": resolution, "quorum": quorum,
                   "read_repair": read_repair},
    }
    if has_final and keys_without_final:
        details["keys_without_final_read"] = keys_without_final
    if counts["lost_concurrent"]:
        details["note"] = (f"{counts['lost_concurrent']} acknowledged write(s) lost to concurrent "
                           "writes (or deletes): last-write-wins discards them by design (not an anomaly)")
        details["lost_concurrent"] = by_design
    for name in ("writes_ok", "writes_info", "writes_fail", "reads", "final_reads",
                 "info_writes_missing", "info_writes_landed"):
        counts.setdefault(name, 0)
    return Result(checker=CHECKER, valid=valid, anomalies=tuple(anomalies), counts=dict(counts),
                  details=details)


class _Key:
    """The reads and writes of one key, sorted by kind, in invocation order."""

    __slots__ = ("counts", "deletes", "finals", "reads", "writes")

    def __init__(self) -> None:
        self.writes: dict[Hashable, Operation] = {}  # value -> the (last) write of it; a delete's _Tomb -> it
        self.deletes: list[_Tomb] = []  # the deletes' tombstones (keys of `writes`)
        self.reads: list[_Read] = []  # ok reads that are not final
        self.finals: list[_Read] = []  # ok final reads
        self.counts: Counter[str] = Counter()  # writes_*, reads, final_reads


def _check_key(key: Any, k: _Key, *, lww: bool, check_p5: bool, check_p6: bool,
               anomalies: list[Anomaly], counts: Counter[str],
               keys_without_final: list[Any], by_design: list[dict[str, Any]]) -> None:
    """Check one key; append it to `keys_without_final` when it has no ok final read."""
    writes, reads, finals, deletes = k.writes, k.reads, k.finals, k.deletes
    dag = _Dag(writes)
    before = dag.before
    kdesc = "" if key is None else f" of key {key!r}"

    def wdesc(v: Hashable) -> str:
        o = writes[v]
        at = (f"acknowledged at {_secs(o.completion.time)}" if o.completion is not None
              and o.outcome == "ok" else f"invoked at {_secs(o.invoke.time)}")
        node = o.completion.node if o.completion is not None and o.completion.node else o.invoke.node
        via = f" via {node}" if node else ""
        what = "delete" if type(v) is _Tomb else f"write of {text.short(v)}"
        return f"{what} by process {o.process}, {at}{via}"

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
    for o, comp, vals in reads + finals:
        read_end = comp.index
        for v in vals:
            src = writes.get(v)
            if src is None:
                why = "no write wrote it"
            elif src.completion is not None and src.completion.type == "fail":
                why = f"its write (process {src.process}) failed"
            elif src.invoke.index > read_end:
                why = "its write was invoked only after the read completed"
            else:
                continue
            extra = () if src is None else wops(v)
            anomalies.append(Anomaly(
                type="phantom", ops=rops(o) + extra,
                explanation=f"{rdesc(o)} returned {text.short(v)}, but {why}: a phantom value",
                details={"key": key, "value": v}))
        if len(vals) < 2:
            continue  # before(a, a) is False, whatever a is
        known = [v for v in vals if v in writes]
        for a in known:
            for b in known:
                if a == b or not before(a, b):
                    continue
                anomalies.append(Anomaly(
                    type="sibling-not-antichain", ops=rops(o) + wops(a) + wops(b),
                    explanation=(f"{rdesc(o)} returned {text.short(a)} and {text.short(b)} as siblings, but "
                                 f"{text.short(a)} causally precedes {text.short(b)} (it should have been "
                                 "superseded)"),
                    details={"key": key, "older": a, "newer": b}))

    # P3 and P4.
    if not finals:
        keys_without_final.append(key)
    else:
        per_node = [(comp.node or o.invoke.node or f"process {o.process}", frozenset(vals))
                    for o, comp, vals in finals]
        distinct = {s for _, s in per_node}
        final_vals: set[Hashable] = set().union(*distinct)
        shown = text.final_reads(per_node)
        if len(distinct) > 1:
            anomalies.append(Anomaly(
                type="divergent", ops=tuple(i for o, _, _ in finals for i in rops(o)),
                explanation=f"final reads{kdesc} disagree after healing: {shown}: replicas "
                            "did not converge",
                details={"key": key, "final": {nd: sorted(s, key=repr) for nd, s in per_node}}))
        # A delete's tombstone is never read: one that did not fail may be
        # there, and what it superseded was deleted, not lost.
        survived = dag.ancestors_of(final_vals.union([t for t in deletes if _outcome(writes[t]) != "fail"]))
        for v, o in writes.items():
            if type(v) is _Tomb:
                continue
            outcome = _outcome(o)
            if v in survived:
                if outcome == "info":
                    counts["info_writes_landed"] += 1
                continue
            if outcome == "info":
                counts["info_writes_missing"] += 1
                continue
            if outcome != "ok":
                continue
            if not lww:
                kind, tail = "lost-write", "lost"
            else:
                older = sorted((f for f in final_vals if before(f, v)), key=repr)
                if older:
                    kind = "lost-causal"
                    tail = (f"lost to {_show(older)}, which causally precedes it: last-write-wins "
                            "kept an older value (a skewed clock?)")
                else:
                    counts["lost_concurrent"] += 1
                    if len(by_design) < BY_DESIGN_LISTED:
                        by_design.append({"key": key, "value": v, "ops": list(wops(v)),
                                          "explanation": f"{wdesc(v)}, is in no final read{kdesc}: lost to "
                                                         "a concurrent write (or delete), as last-write-wins "
                                                         "does by design"})
                    continue
            anomalies.append(Anomaly(
                type=kind, ops=wops(v),
                explanation=f"{wdesc(v)}, is in no final read{kdesc} ({shown}) and no "
                            f"later write saw it: {tail}",
                details={"key": key, "value": v}))

    if deletes:
        _resurrections(key, k, dag, check_p5, rdesc, rops, wdesc, anomalies)

    # P5 and P6: sweep the key's events in history order.
    if not (check_p5 or check_p6):
        return
    # Completions in history order, merged with the reads' invocations (in
    # invocation order already): the order of (history index, 0 for a
    # completion or 1 for an invocation), ties as listed.
    events: list[_Event] = []
    if check_p5:
        for w, o in writes.items():
            wc = o.completion
            if wc is not None and wc.type == "ok":
                # the op's own value, not the dict's key: 0 and False are one key
                value = w if type(w) is _Tomb else o.invoke.value
                events.append((wc.index, o, None, value if type(value) is str else _h(value)))
    if check_p6:
        for o, comp, vals in finals:
            events.append((comp.index, o, vals, None))
    for o, comp, vals in reads:
        events.append((comp.index, o, vals, None))
    events.sort(key=itemgetter(0))  # stable
    invoked = [o.invoke.index for o, _, _ in reads]
    if invoked != sorted(invoked):  # pair() gives invocation order, not always index order
        reads = sorted(reads, key=lambda r: r[0].invoke.index)
        invoked.sort()
    invoked.append(events[-1][0] if events else 0)  # a sentinel: no completion after it
    add = dag.add
    wfront: _Front = {}
    rfront: _Front = {}
    # Each read compares itself with the frontiers as they were at its
    # invocation; reads invoked while the frontiers stay the same share one copy.
    snap: tuple[_Front, _Front] | None = None
    pending: dict[int, tuple[_Front, _Front]] = {}
    nxt = 0  # the next read to be invoked
    for at, o, got, wv in events:
        while invoked[nxt] < at:
            if snap is None:
                snap = (dict(wfront), dict(rfront))
            pending[invoked[nxt]] = snap
            nxt += 1
        if got is None:  # the completion of an ok write
            if add(wfront, wv, wops, wv):
                snap = None
            continue
        seen = pending.pop(o.invoke.index, None)
        if seen is not None:
            # The usual case inline: the read has every value of both
            # snapshots or a successor. The same before() calls in the same
            # order as _stale makes, which, on a miss, starts over (a repeated
            # before() returns what it returned the first time).
            fine = True
            if check_p5:
                for v in seen[0]:
                    if type(v) is _Tomb:
                        continue  # never read: never missing
                    for x in got:
                        if x == v or before(v, x):
                            break
                    else:
                        fine = False
                        break
            if fine and check_p6:
                for v in seen[1]:
                    for x in got:
                        if x == v or before(v, x):
                            break
                    else:
                        fine = False
                        break
            if not fine:
                _stale(o, got, seen, dag, lww, check_p5, check_p6, rdesc, rops, wdesc, key,
                       anomalies, deletes)
        if check_p6:
            for v in got:
                if v not in rfront and add(rfront, v, rops, o):
                    snap = None


def _stale(o: Operation, got: list[Hashable], snap: tuple[_Front, _Front],
           dag: _Dag, lww: bool, check_p5: bool, check_p6: bool, rdesc: Any, rops: Any,
           wdesc: Any, key: Any, anomalies: list[Anomaly], deletes: Sequence[_Tomb] = ()) -> None:
    covers, before, writes = dag.covers, dag.before, dag.writes
    assert o.completion is not None
    read_end = o.completion.index

    def deleted(v: Hashable) -> bool:
        """A delete invoked before the read completed, that did not fail, may
        have removed v: it causally follows v (lww: or may carry a later
        timestamp)."""
        for t in deletes:
            d = writes[t]
            if d.invoke.index > read_end or _outcome(d) == "fail":
                continue
            if before(v, t) or (lww and _lww_deleted(v, writes[v], (t,), writes)):
                return True
        return False

    def covered(v: Hashable) -> bool:
        if type(v) is _Tomb or covers(got, v):
            return True
        if deletes and deleted(v):
            return True
        if not lww:
            return False
        wv = writes[v]
        for s in got:
            ws = writes.get(s)
            if ws is None or before(s, v):
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


def _lww_deleted(v: Hashable, w: Operation, deletes: Iterable[_Tomb], writes: dict[Hashable, Operation]) -> bool:
    """Under last-write-wins, may one of `deletes` have beaten the write `w`
    (of v) by its timestamp: a delete that did not fail and did not complete
    before w was invoked (or one that causally follows v)?"""
    for t in deletes:
        d = writes[t]
        outcome = _outcome(d)
        if outcome == "fail":
            continue
        if outcome == "ok" and d.completion is not None and d.completion.index < w.invoke.index:
            continue
        return True
    return False


def _resurrections(key: Any, k: _Key, dag: _Dag, midrun: bool, rdesc: Any, rops: Any, wdesc: Any,
                   anomalies: list[Anomaly]) -> None:
    """`resurrection`: a read invoked after an `ok` delete completed returns a
    value that delete superseded. Final reads always; the others when
    `midrun` (where P5 promises that a read meets the tombstone)."""
    writes, obs = k.writes, dag.obs
    done = sorted(((o.completion.index, t) for t in k.deletes
                   if (o := writes[t]).completion is not None and o.completion.type == "ok"),
                  key=itemgetter(0))
    # value -> the tombstone of the first delete to complete that superseded it.
    # Deletes in completion order: a walk stops at a value an earlier one
    # reached (its ancestors were reached then too): linear in the edges.
    gone: dict[Hashable, _Tomb] = {}
    for _, t in done:
        stack = list(obs[t])
        while stack:
            v = stack.pop()
            if v in gone:
                continue
            gone[v] = t
            stack.extend(obs[v])
    if not gone:
        return
    for o, comp, vals in (k.finals + k.reads) if midrun else k.finals:
        start = o.invoke.index
        for v in vals:
            tomb = gone.get(v)
            if tomb is None:
                continue
            d = writes[tomb]
            assert d.completion is not None
            if start < d.completion.index:
                continue
            final = "final " if comp.extra.get("final") or o.invoke.extra.get("final") else ""
            w = writes[v]
            wrote = (w.invoke.index,) if w.completion is None else (w.invoke.index, w.completion.index)
            anomalies.append(Anomaly(
                type="resurrection", ops=(*rops(o), d.invoke.index, d.completion.index, *wrote),
                explanation=(f"{final}{rdesc(o)} returned {text.short(v)}, which the {wdesc(tomb)}, had "
                             "deleted before the read began: a deleted value came back"),
                details={"key": key, "value": v, "delete": d.invoke.index}))
