"""The cart/set check (Jepsen's `set` checker): do acknowledged adds survive,
and does nothing appear that nobody added?

The history holds `add` operations (the invocation's value is the element;
elements are unique) and `read` operations (an `ok` read's completion value is
the list of elements present). Operations carry an optional `key`: each key is
its own set (a cart per key) and is judged on its own.

Final reads. Reads marked `extra={"final": True}` (on the invocation or the
completion) are the final reads. If no read in the whole history is marked,
the last `ok` read of each key is its final read. If reads are marked, a key
with no `ok` marked read has no final read: its verdict is "unknown" (an
earlier, non-final read cannot stand in: adds after it would look lost).

Several final reads of a key (one per node, say): an element is present if it
is in any of them (the union). Elements that are in some final reads but not
in all are "divergent": reported in `details` (replicas that did not converge
are the siblings checker's P4 finding, not a set anomaly).

Per key, over its adds:

- attempted: adds invoked;
- acknowledged: adds that ended `ok`;
- present: acknowledged adds in the final reads;
- lost: acknowledged adds in no final read (anomaly "lost");
- recovered: adds that ended `info` or never completed, yet are present
  (not an anomaly: an indeterminate add may well have happened);
- unacknowledged_absent: adds that ended `info` / never completed and are
  absent (not an anomaly: counted only);
- unexpected: elements in a final read that no invoked, non-failed add added
  (anomaly "unexpected"; an element added only by a `fail` add is unexpected:
  `fail` means it certainly did not happen).

`valid` is False if any key has a lost or unexpected element; otherwise
"unknown" if some key (or the whole history) has no successful final read;
otherwise True. One pass over the history plus one over the final reads:
linear time.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from checkers import text
from checkers.history import Op, Operation, pair
from checkers.result import Anomaly, Result, Verdict, worst

CHECKER = "set"


def _freeze(v: Any) -> Hashable:
    """A hashable stand-in for an element (JSON gives lists and dicts)."""
    if type(v) is str or type(v) is int or v is None:
        return v
    if isinstance(v, list | tuple):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((str(k), _freeze(x)) for k, x in v.items()))
    if isinstance(v, set | frozenset):
        return frozenset(_freeze(x) for x in v)
    return v


def _secs(ns: int) -> str:
    return f"{ns / 1e9:.2f} s"


def _is_final(o: Operation) -> bool:
    if o.invoke.extra.get("final"):
        return True
    return o.completion is not None and bool(o.completion.extra.get("final"))


@dataclass
class _Key:
    adds: list[Operation] = field(default_factory=list)
    ok_reads: list[Operation] = field(default_factory=list)  # in completion order
    final_reads: list[Operation] = field(default_factory=list)  # ok and marked


def _key_label(key: Any) -> str:
    return "" if key is None else f" to key {key!r}"


def check(history: Sequence[Op], *, max_listed: int = 100) -> Result:
    """Judge a set/cart history. `max_listed` caps the element lists in
    `details` (the totals are always given)."""
    keys: dict[Hashable, _Key] = {}
    key_objs: dict[Hashable, Any] = {}
    marked = False
    for o in pair(history):
        if o.f not in ("add", "read"):
            continue
        k = _freeze(o.key)
        entry = keys.get(k)
        if entry is None:
            entry = keys[k] = _Key()
            key_objs[k] = o.key
        if o.f == "add":
            entry.adds.append(o)
            continue
        final = _is_final(o)
        marked = marked or final
        if o.outcome == "ok":
            entry.ok_reads.append(o)
            if final:
                entry.final_reads.append(o)

    counts = dict.fromkeys(
        ("attempted", "acknowledged", "present", "lost", "recovered", "unacknowledged_absent",
         "unexpected", "divergent", "final_reads", "keys", "unknown_keys"), 0)
    anomalies: list[Anomaly] = []
    lost_list: list[Any] = []
    unexpected_list: list[Any] = []
    recovered_list: list[Any] = []
    divergent_list: list[Any] = []
    per_key: list[dict[str, Any]] = []
    verdicts: list[Verdict] = []
    unknown_reasons: list[str] = []

    for k, entry in keys.items():
        key = key_objs[k]
        counts["keys"] += 1
        if marked:
            finals = entry.final_reads
        else:
            finals = [max(entry.ok_reads, key=lambda o: o.completion.index if o.completion else -1)
                      ] if entry.ok_reads else []
        kc = dict.fromkeys(("attempted", "acknowledged", "present", "lost", "recovered",
                            "unacknowledged_absent", "unexpected", "divergent"), 0)
        kc["attempted"] = len(entry.adds)
        kc["acknowledged"] = sum(1 for a in entry.adds if a.outcome == "ok")
        counts["attempted"] += kc["attempted"]
        counts["acknowledged"] += kc["acknowledged"]
        counts["final_reads"] += len(finals)
        if not finals:
            counts["unknown_keys"] += 1
            verdicts.append("unknown")
            what = "no final read" if marked else "no read"
            unknown_reasons.append(f"{what} of key {key!r} succeeded" if key is not None
                                   else f"{what} succeeded")
            per_key.append({"key": key, "valid": "unknown", **kc})
            continue

        # Present elements: union of the final reads; which final reads hold each.
        holders: dict[Hashable, list[Operation]] = {}
        for r in finals:
            assert r.completion is not None
            for e in r.completion.value or ():
                holders.setdefault(_freeze(e), []).append(r)
        if len(finals) > 1:
            for e, rs in holders.items():
                if len({r.start for r in rs}) < len(finals):
                    kc["divergent"] += 1
                    if len(divergent_list) < max_listed:
                        divergent_list.append(e)

        added: dict[Hashable, Operation] = {}  # non-failed adds
        failed: dict[Hashable, Operation] = {}
        via = f" ({text.final_reads(_per_node(finals))})"
        for a in entry.adds:
            e = _freeze(a.invoke.value)
            if a.outcome == "fail":
                failed.setdefault(e, a)
                continue
            added[e] = a
            present = e in holders
            if a.outcome == "ok":
                comp = a.completion
                assert comp is not None
                if present:
                    kc["present"] += 1
                    continue
                kc["lost"] += 1
                if len(lost_list) < max_listed:
                    lost_list.append(a.invoke.value)
                node = f" via {comp.node}" if comp.node is not None else ""
                anomalies.append(Anomaly(
                    type="lost",
                    ops=(a.invoke.index, comp.index),
                    explanation=(f"add of {a.invoke.value!r}{_key_label(key)} by process {a.process}, "
                                 f"acknowledged at {_secs(comp.time)}{node}, is in no final read"
                                 f"{via}: lost"),
                    details={"element": a.invoke.value, "key": key, "process": a.process,
                             "node": comp.node, "final_reads": [r.start for r in finals]},
                ))
            elif present:
                kc["recovered"] += 1
                if len(recovered_list) < max_listed:
                    recovered_list.append(a.invoke.value)
            else:
                kc["unacknowledged_absent"] += 1

        for e, rs in holders.items():
            if e in added:
                continue
            kc["unexpected"] += 1
            r0 = rs[0]
            assert r0.completion is not None
            value = next(x for x in r0.completion.value if _freeze(x) == e)
            if len(unexpected_list) < max_listed:
                unexpected_list.append(value)
            f_add = failed.get(e)
            ops = tuple(sorted({i for r in rs for i in (r.invoke.index, r.completion.index)  # type: ignore[union-attr]
                                } | ({f_add.invoke.index} if f_add else set())))
            where = f"final read{'s' if len(rs) > 1 else ''} " + ", ".join(
                f"{r.completion.index}" + (f" via {r.completion.node}" if r.completion and r.completion.node else "")
                for r in rs if r.completion is not None)
            if f_add is not None:
                why = (f"was added only by op {f_add.invoke.index} (process {f_add.process}), "
                       f"which failed")
            else:
                why = "was never added"
            anomalies.append(Anomaly(
                type="unexpected",
                ops=ops,
                explanation=f"element {value!r}{'' if key is None else f' of key {key!r}'} is in {where} "
                            f"but {why}: unexpected",
                details={"element": value, "key": key,
                         "failed_add": f_add.invoke.index if f_add else None},
            ))

        for name in kc:
            if name not in ("attempted", "acknowledged"):
                counts[name] += kc[name]
        kv: Verdict = not (kc["lost"] or kc["unexpected"])
        verdicts.append(kv)
        per_key.append({"key": key, "valid": kv, "final_reads": [r.start for r in finals], **kc})

    if not keys:
        verdicts.append("unknown")
        unknown_reasons.append("no final read succeeded (the history has no add or read)")
    valid = worst(verdicts)
    reason = "; ".join(unknown_reasons[:10]) if valid == "unknown" else None
    details: dict[str, Any] = {
        "lost": lost_list, "lost_total": counts["lost"],
        "unexpected": unexpected_list, "unexpected_total": counts["unexpected"],
        "recovered": recovered_list, "recovered_total": counts["recovered"],
        "divergent": divergent_list, "divergent_total": counts["divergent"],
        "final_reads_marked": marked,
    }
    if len(keys) > 1 or any(k is not None for k in keys):
        details["keys"] = per_key
    return Result(checker=CHECKER, valid=valid, anomalies=tuple(anomalies), counts=counts,
                  reason=reason, details=details)


def _per_node(finals: Sequence[Operation]) -> list[tuple[str, frozenset[Hashable]]]:
    out = []
    for r in finals:
        c = r.completion
        node = (c.node if c is not None else None) or r.invoke.node or f"process {r.process}"
        values = (c.value or ()) if c is not None else ()
        out.append((str(node), frozenset(_freeze(e) for e in values)))
    return out
