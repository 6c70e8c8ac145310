"""Per-replica convergence: after the faults heal, does every replica of a
key come to hold the same versions by itself (hints delivered, anti-entropy
run, as the system's settings configure them), before any quorum read
repairs it?

The history holds `replica-read` operations (`checkers.history.REPLICA_READ`),
recorded by the runner after healing for each key used and each of its
replicas (`harness.systems.base.ReplicaReads`): the invocation's `node` is
the replica, an `ok` completion's value the list of values it holds (as
text). A non-`ok` completion is a replica that could not be read; a
replica-read with no `node` says the key's replicas could not be found.
Only the last replica read of each key and replica counts: the runner polls
until the replicas agree, and records the last poll.

Per key, the reference is the value set most of its replicas hold (ties: the
larger set, then the first in order). Each replica whose set differs is one
anomaly `replica-divergence`, naming the replica, the key, what it lacks
that other replicas hold and what it holds that they do not, and how long
after the faults healed it was read. A key whose replicas could not all be
read is `unknown`, unless the ones read already disagree.

`valid`: False if some key diverged; else "unknown" if some key had a
replica that could not be read (or the history holds no replica read);
else True. `details["converged_in_s"]`: how long after the faults healed
the slowest key's replicas were seen to agree (for a history whose replica
reads all agree).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

from checkers import text
from checkers.history import REPLICA_READ, Op, Operation, pair
from checkers.result import Anomaly, Result, Verdict, worst

CHECKER = "replicas"


def check(history: Sequence[Op]) -> Result:
    """Judge the replica reads of `history` (see the module docstring)."""
    last: dict[Hashable, dict[str | None, Operation]] = {}  # key -> replica -> its last read
    keys: dict[Hashable, Any] = {}
    first: int | None = None
    for o in pair(history):
        if o.f != REPLICA_READ:
            continue
        k = _hashable(o.key)
        keys.setdefault(k, o.key)
        last.setdefault(k, {})[o.invoke.node] = o
        first = o.start if first is None else min(first, o.start)
    if first is None:
        return Result(checker=CHECKER, valid="unknown", reason="the history holds no replica read")
    healed, since_what = _healed(history, first)

    anomalies: list[Anomaly] = []
    verdicts: list[Verdict] = []
    unknown: list[str] = []
    counts = Counter({"keys": len(last), "replicas": 0, "divergent_keys": 0, "divergent_replicas": 0,
                      "unreadable": 0})
    slowest = 0
    per_key: list[dict[str, Any]] = []
    for k, reads in last.items():
        key = keys[k]
        held: dict[str, frozenset[str]] = {}
        unreadable: list[str] = []
        for node, o in reads.items():
            c = o.completion
            if node is None:
                unreadable.append("its replicas could not be found")
            elif c is None or c.type != "ok" or not isinstance(c.value, list):
                unreadable.append(f"{node} could not be read")
            else:
                held[node] = frozenset(str(v) for v in c.value)
                slowest = max(slowest, c.time - healed)
        counts["replicas"] += len(held)
        counts["unreadable"] += len(unreadable)
        found = _divergence(key, held, reads, healed, since_what)
        if found:
            counts["divergent_keys"] += 1
            counts["divergent_replicas"] += len(found)
            anomalies += found
            verdicts.append(False)
        elif unreadable:
            verdicts.append("unknown")
            unknown.append(f"key {key!r}: " + ", ".join(unreadable))
        else:
            verdicts.append(True)
        per_key.append({"key": key, "valid": verdicts[-1],
                        "replicas": {n: sorted(v) for n, v in sorted(held.items())}})
    valid = worst(verdicts)
    details: dict[str, Any] = {"keys": per_key[:100]}
    if valid is True:
        details["converged_in_s"] = round(slowest / 1e9, 3)
    return Result(checker=CHECKER, valid=valid, anomalies=tuple(anomalies), counts=dict(counts),
                  reason="; ".join(unknown[:10]) if valid == "unknown" else None, details=details)


def _divergence(key: Any, held: dict[str, frozenset[str]], reads: dict[str | None, Operation], healed: int,
                since_what: str) -> list[Anomaly]:
    """One anomaly per replica whose values differ from the reference set."""
    if len(set(held.values())) <= 1:
        return []
    groups = Counter(held.values())
    order = list(dict.fromkeys(held.values()))
    reference = min(groups, key=lambda s: (-groups[s], -len(s), order.index(s)))
    out = []
    for node, values in held.items():
        if values == reference:
            continue
        o = reads[node]
        c = o.completion
        assert c is not None
        lacks = sorted(reference - values)
        extra = sorted(values - reference)
        others = [n for n, v in held.items() if n != node]
        holders = sorted({n for n in others for v in lacks if v in held[n]})
        since = f"{(c.time - healed) / 1e9:.1f} s after {since_what}"
        if lacks:
            said = (f"{node}, a replica of {key!r}, still lacks {_these(lacks)} (held by {_and(holders)}) "
                    f"{since}; it holds {text.values(values)}")
        else:
            lacking = sorted(n for n in others if not set(extra) <= held[n])
            said = (f"{node}, a replica of {key!r}, holds {_these(extra)}, which {_and(lacking)} "
                    f"lack{'s' if len(lacking) == 1 else ''}, {since}")
        ops = {o.invoke.index, c.index} | {reads[n].completion.index for n in holders  # type: ignore[union-attr]
                                            if reads[n].completion is not None}
        out.append(Anomaly(type="replica-divergence", ops=tuple(sorted(ops)), explanation=said,
                           details={"key": key, "replica": node, "lacks": lacks, "extra": extra,
                                    "held_by": holders, "holds": sorted(values)}))
    return out


def _healed(history: Sequence[Op], first: int) -> tuple[int, str]:
    """When the faults healed (the last nemesis op before the first replica
    read), else when the last client operation before it ended."""
    nemesis = client = None
    for op in history:
        if op.index >= first:
            break
        if op.process == "nemesis":
            nemesis = op.time
        elif op.type != "invoke" and op.f != REPLICA_READ:
            client = op.time
    if nemesis is not None:
        return nemesis, "the faults healed"
    return (client if client is not None else 0), "the workload ended"


def _these(vals: Sequence[str]) -> str:
    return text.short(vals[0]) if len(vals) == 1 else text.values(vals)


def _and(nodes: Sequence[str]) -> str:
    if len(nodes) <= 1:
        return "".join(nodes) or "no other replica"
    return ", ".join(nodes[:-1]) + " and " + nodes[-1]


def _hashable(key: Any) -> Hashable:
    try:
        hash(key)
    except TypeError:
        return repr(key)
    return key
