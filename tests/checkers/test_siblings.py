"""checkers/siblings.py: P1-P6 for multi-value registers.

A model of a correct Dynamo-style store (replicas holding causal antichains,
writes that replace what their context saw, merges, crashed writes that land
or not, final reads after a full merge) generates histories that must be
valid; then one anomaly at a time is injected and must be found, with the
right type, and nothing else. Hand-written histories cover LWW and every
"does not apply" branch.
"""

from __future__ import annotations

import dataclasses
import gc
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from checkers.history import Op
from checkers.siblings import check

NODES = ("n1", "n2", "n3")
KEYS = ("a", "b")
SEEDS = st.integers(0, 2**32 - 1)
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@dataclasses.dataclass
class Sim:
    history: list[Op]
    anc: dict[str, set[str]]  # value -> its strict causal ancestors
    outcome: dict[str, str]  # value -> "ok" / "info" / "fail"


def simulate(rnd: random.Random, *, atomic: bool, deletes: bool = False) -> Sim:
    """A correct multi-value register. With `atomic`, every write lands on all
    replicas or none at one instant (what strict quorums with synchronous read
    repair give a client): P5 and P6 then hold as well. With `deletes`, some
    writes are deletes (with the context of the process's last read, or
    blind): a tombstone that removes what the context saw on every replica it
    reaches, and keeps it removed through merges (as kvnode's dvv does)."""
    ops: list[Op] = []
    anc: dict[str, set[str]] = {}
    outcome: dict[str, str] = {}
    replicas = {k: [set[str]() for _ in NODES] for k in KEYS}
    dead = {k: [set[str]() for _ in NODES] for k in KEYS}  # values a tombstone there superseded
    nclients = 4
    procs = list(range(nclients))
    last_read: dict[tuple[int, str], list[str]] = {}
    inflight: dict[int, dict[str, Any]] = {}
    counter = 0

    def emit(process: int, type_: str, f: str, key: str, value: Any, node: str,
             extra: dict[str, Any] | None = None) -> int:
        ops.append(Op(index=len(ops), time=len(ops) * 1_000_000, process=process,
                      type=type_, f=f, key=key, value=value, node=node,  # type: ignore[arg-type]
                      extra=extra or {}))
        return len(ops) - 1

    def maximal(vals: set[str]) -> set[str]:
        return {x for x in vals if not any(x in anc[y] for y in vals)}

    def apply(c: int) -> None:
        op = inflight[c]
        k, i = op["key"], NODES.index(op["node"])
        if op["f"] == "read":
            op["result"] = sorted(replicas[k][i])
        else:
            v = op["value"]
            roll = rnd.random()
            op["outcome"] = "ok" if roll < 0.75 else "info" if roll < 0.9 else "fail"
            if op["outcome"] == "ok":
                land = set(range(len(NODES))) if atomic else {i} | {
                    j for j in range(len(NODES)) if rnd.random() < 0.5}
            elif op["outcome"] == "info":
                if atomic:
                    land = set(range(len(NODES))) if rnd.random() < 0.5 else set()
                else:
                    land = {j for j in range(len(NODES)) if rnd.random() < 0.4}
            else:
                land = set()
            for j in land:
                if op["f"] == "delete":
                    dead[k][j] |= op["gone"]
                    replicas[k][j] -= op["gone"]
                else:
                    replicas[k][j] = {x for x in replicas[k][j] if x not in anc[v]} | {v}
        op["applied"] = True

    def finish(c: int) -> None:
        op = inflight.pop(c)
        p = procs[c]
        if op["f"] == "read":
            emit(p, "ok", "read", op["key"], op["result"], op["node"])
            last_read[(c, op["key"])] = op["result"]
        else:
            if op["f"] == "write":
                outcome[op["value"]] = op["outcome"]
            emit(p, op["outcome"], op["f"], op["key"], op["value"], op["node"])
            if op["outcome"] == "info":
                procs[c] += nclients

    for _ in range(rnd.randint(5, 90)):
        if not atomic and rnd.random() < 0.15:
            k = rnd.choice(KEYS)
            i, j = rnd.sample(range(len(NODES)), 2)
            dead[k][i] = dead[k][j] = dead[k][i] | dead[k][j]
            replicas[k][i] = replicas[k][j] = maximal(replicas[k][i] | replicas[k][j]) - dead[k][i]
            continue
        c = rnd.randrange(nclients)
        if c not in inflight:
            k, node = rnd.choice(KEYS), rnd.choice(NODES)
            if deletes and rnd.random() < 0.15:
                obs = last_read.get((c, k), []) if rnd.random() < 0.6 else []
                gone = set(obs).union(*(anc[o] for o in obs))
                emit(procs[c], "invoke", "delete", k, None, node, {"obs": obs} if obs else None)
                inflight[c] = {"f": "delete", "key": k, "node": node, "value": None, "gone": gone,
                               "applied": False}
            elif rnd.random() < 0.5:
                counter += 1
                v = f"v{counter}"
                obs = last_read.get((c, k), []) if rnd.random() < 0.75 else []
                anc[v] = set(obs).union(*(anc[o] for o in obs))
                emit(procs[c], "invoke", "write", k, v, node, {"obs": obs} if obs else None)
                inflight[c] = {"f": "write", "key": k, "node": node, "value": v,
                               "applied": False}
            else:
                emit(procs[c], "invoke", "read", k, None, node)
                inflight[c] = {"f": "read", "key": k, "node": node, "applied": False}
        elif not inflight[c]["applied"]:
            apply(c)
        else:
            finish(c)
    for c in list(inflight):
        if not inflight[c]["applied"]:
            apply(c)
        finish(c)
    p = max(procs) + 1
    for k in KEYS:
        merged = maximal(set().union(*replicas[k])) - set().union(*dead[k])
        for node in NODES:
            emit(p, "invoke", "read", k, None, node, {"final": True})
            emit(p, "ok", "read", k, sorted(merged), node, {"final": True})
            p += 1
    return Sim(ops, anc, outcome)


DEFAULT: dict[str, Any] = {"n": 3, "w": 2, "r": 2}
STRICT: dict[str, Any] = {"n": 3, "w": 2, "r": 2, "quorum": "strict"}
SYNC: dict[str, Any] = {"n": 3, "w": 2, "r": 2, "read_repair": "sync"}


def set_value(h: list[Op], i: int, value: Any) -> list[Op]:
    h = list(h)
    h[i] = dataclasses.replace(h[i], value=value)
    return h


def ok_reads(h: list[Op], *, final: bool = False) -> list[Op]:
    return [o for o in h if o.f == "read" and o.type == "ok" and bool(o.extra.get("final")) == final]


def invoke_of(h: list[Op], completion: Op) -> Op:
    return next(o for o in reversed(h[:completion.index])
                if o.process == completion.process and o.type == "invoke")


def types(result: Any) -> list[str]:
    return [a.type for a in result.anomalies]


# ---- correct histories are valid -------------------------------------------------------------

@SETTINGS
@given(SEEDS, st.booleans())
def test_correct_histories_are_valid(seed: int, atomic: bool) -> None:
    rnd = random.Random(seed)
    sim = simulate(rnd, atomic=atomic)
    result = check(sim.history, **DEFAULT)
    assert result.valid is True, result.anomalies
    assert result.anomalies == ()
    assert result.details["checked"] == ["P1", "P2", "P3", "P4"]
    writes = [o for o in sim.history if o.f == "write" and o.type != "invoke"]
    assert result.counts["writes_ok"] == sum(o.type == "ok" for o in writes)
    assert result.counts["final_reads"] == len(NODES) * len(KEYS)


@SETTINGS
@given(SEEDS, st.booleans(), st.sampled_from(["dvv", "lww"]))
def test_correct_histories_with_deletes_are_valid(seed: int, atomic: bool, resolution: str) -> None:
    rnd = random.Random(seed)
    sim = simulate(rnd, atomic=atomic, deletes=True)
    options = dict(n=3, w=2, r=2, quorum="strict", read_repair="sync") if atomic else DEFAULT
    result = check(sim.history, **options, resolution=resolution)
    assert result.valid is True, result.anomalies
    deletes = [o for o in sim.history if o.f == "delete" and o.type != "invoke"]
    assert result.counts.get("deletes_ok", 0) == sum(o.type == "ok" for o in deletes)


@SETTINGS
@given(SEEDS)
def test_resurrected_value_is_found(seed: int) -> None:
    rnd = random.Random(seed)
    sim = simulate(rnd, atomic=False, deletes=True)
    h0 = sim.history
    # A value an ok delete superseded, put back into a final read of its key.
    done = [(c, invoke_of(h0, c)) for c in h0 if c.f == "delete" and c.type == "ok"]
    cands = [(c, v) for c, i in done for v in sorted(i.extra.get("obs", []))]
    assume(cands)
    c, v = rnd.choice(cands)
    final = rnd.choice([f for f in ok_reads(h0, final=True) if f.key == c.key])
    h = h0
    for f in ok_reads(h0, final=True):  # on every node, so that they agree
        if f.key == c.key:
            h = set_value(h, f.index, sorted({*f.value, v}))
    result = check(h, **DEFAULT)
    assert "resurrection" in types(result)
    assert set(types(result)) <= {"resurrection", "sibling-not-antichain"}
    found = next(a for a in result.anomalies if a.type == "resurrection" and final.index in a.ops)
    assert found.details["value"] == v
    assert found.explanation.startswith("final read of key ")
    # The delete named is the first to complete of those that superseded v.
    superseding = [(c2.index, i2) for c2, i2 in done
                   if any(v == o or v in sim.anc[o] for o in i2.extra.get("obs", []))]
    first = min(superseding, key=lambda x: x[0])[1]
    assert found.details["delete"] == first.index
    assert f"returned {v!r}, which the delete by process {first.process}, acknowledged at" in found.explanation
    assert result.valid is False


@SETTINGS
@given(SEEDS, st.sampled_from(["dvv", "lww"]))
def test_atomic_histories_satisfy_p5_and_p6(seed: int, resolution: str) -> None:
    rnd = random.Random(seed)
    sim = simulate(rnd, atomic=True)
    result = check(sim.history, n=3, w=2, r=2, quorum="strict", read_repair="sync",
                   resolution=resolution)
    assert result.details["checked"] == ["P1", "P2", "P3", "P4", "P5", "P6"]
    assert result.valid is True, result.anomalies


# ---- one anomaly at a time -------------------------------------------------------------------

@SETTINGS
@given(SEEDS)
def test_phantom(seed: int) -> None:
    rnd = random.Random(seed)
    sim = simulate(rnd, atomic=False)
    reads = ok_reads(sim.history)
    assume(reads)
    r = rnd.choice(reads)
    h = set_value(sim.history, r.index, [*r.value, "ghost"])
    result = check(h, **DEFAULT)
    assert types(result) == ["phantom"]
    assert r.index in result.anomalies[0].ops
    assert "'ghost'" in result.anomalies[0].explanation
    assert result.valid is False


def test_phantom_from_failed_write() -> None:
    h = hist(("w", 0, "a", None, "fail"), ("r", 1, ["a"], None, "ok"))
    result = check(h, **DEFAULT)
    assert types(result) == ["phantom"]
    assert "failed" in result.anomalies[0].explanation


@SETTINGS
@given(SEEDS)
def test_stale_sibling(seed: int) -> None:
    rnd = random.Random(seed)
    sim = simulate(rnd, atomic=False)
    cands = [(r, a) for r in ok_reads(sim.history) for s in r.value for a in sorted(sim.anc[s])
             if a not in r.value]
    assume(cands)
    r, a = rnd.choice(cands)
    h = set_value(sim.history, r.index, [*r.value, a])
    result = check(h, **DEFAULT)
    assert set(types(result)) == {"sibling-not-antichain"}
    assert all(r.index in x.ops and x.details["older"] == a for x in result.anomalies)


@SETTINGS
@given(SEEDS)
def test_dropped_acknowledged_write(seed: int) -> None:
    rnd = random.Random(seed)
    sim = simulate(rnd, atomic=False)
    finals = ok_reads(sim.history, final=True)
    cands = sorted({(f.key, v) for f in finals for v in f.value if sim.outcome.get(v) == "ok"})
    assume(cands)
    key, v = rnd.choice(cands)
    h = list(sim.history)
    for f in finals:
        if f.key == key:
            h = set_value(h, f.index, [x for x in f.value if x != v])
    remaining = {x for f in finals if f.key == key for x in f.value if x != v}
    covered = remaining.union(*(sim.anc[x] for x in remaining))
    expected = {u for u in sim.anc[v] | {v} if sim.outcome.get(u) == "ok" and u not in covered}
    result = check(h, **DEFAULT)
    assert set(types(result)) == {"lost-write"}
    assert {x.details["value"] for x in result.anomalies} == expected
    assert result.valid is False


@SETTINGS
@given(SEEDS)
def test_divergent_final_reads(seed: int) -> None:
    rnd = random.Random(seed)
    sim = simulate(rnd, atomic=False)
    finals = [f for f in ok_reads(sim.history, final=True) if f.value]
    assume(finals)
    f = rnd.choice(finals)
    h = set_value(sim.history, f.index, f.value[1:])
    result = check(h, **DEFAULT)
    assert types(result) == ["divergent"]
    assert f.index in result.anomalies[0].ops


@SETTINGS
@given(SEEDS)
def test_stale_read_under_strict_quorums(seed: int) -> None:
    rnd = random.Random(seed)
    sim = simulate(rnd, atomic=True)
    h0 = sim.history
    acked = [o for o in h0 if o.f == "write" and o.type == "ok"]
    cands = [r for r in ok_reads(h0)
             if any(w.key == r.key and w.index < invoke_of(h0, r).index for w in acked)]
    assume(cands)
    r = rnd.choice(cands)
    result = check(set_value(h0, r.index, []), **STRICT)
    assert types(result) == ["stale-read"]
    assert r.index in result.anomalies[0].ops
    assert "before the read began" in result.anomalies[0].explanation


@SETTINGS
@given(SEEDS)
def test_new_old_inversion_under_sync_read_repair(seed: int) -> None:
    rnd = random.Random(seed)
    sim = simulate(rnd, atomic=True)
    h0 = sim.history
    reads = ok_reads(h0)
    cands = [r2 for r2 in reads
             if any(r1.key == r2.key and r1.value and r1.index < invoke_of(h0, r2).index
                    for r1 in reads)]
    assume(cands)
    r2 = rnd.choice(cands)
    result = check(set_value(h0, r2.index, []), **SYNC)
    assert types(result) == ["new-old-inversion"]
    assert r2.index in result.anomalies[0].ops


# ---- hand-written histories ------------------------------------------------------------------

Step = tuple[str, int, Any, Any, str]  # kind ("w"/"d"/"r"/"f"), process, value, obs or node, outcome


def hist(*steps: Step, concurrent: tuple[int, ...] = ()) -> list[Op]:
    """Sequential operations (each invoke immediately followed by its completion),
    except the steps listed in `concurrent`, whose invocations are all emitted
    before their completions. Final reads ("f") take the node as 4th field."""
    out: list[Op] = []

    def add(process: int, type_: str, f: str, value: Any, node: str | None,
            extra: dict[str, Any]) -> None:
        out.append(Op(index=len(out), time=len(out) * 10_000_000, process=process,
                      type=type_, f=f, key="k", value=value, node=node,  # type: ignore[arg-type]
                      extra=extra))

    def inv(s: Step) -> None:
        kind, p, value, aux, _ = s
        if kind in ("w", "d"):
            add(p, "invoke", "write" if kind == "w" else "delete", value, "n1", {"obs": aux} if aux else {})
        else:
            add(p, "invoke", "read", None, aux if kind == "f" else "n1",
                {"final": True} if kind == "f" else {})

    def done(s: Step) -> None:
        kind, p, value, aux, outcome = s
        if kind in ("w", "d"):
            add(p, outcome, "write" if kind == "w" else "delete", value, "n2", {})
        else:
            add(p, outcome, "read", value, aux if kind == "f" else "n1",
                {"final": True} if kind == "f" else {})

    i = 0
    while i < len(steps):
        if i in concurrent:
            group = [j for j in range(i, len(steps)) if j in concurrent]
            group = group[:next((n for n, j in enumerate(group) if j != i + n), len(group))]
            for j in group:
                inv(steps[j])
            for j in group:
                done(steps[j])
            i += len(group)
        else:
            inv(steps[i])
            done(steps[i])
            i += 1
    return out


def finals(*vals: list[str]) -> tuple[Step, ...]:
    return tuple(("f", 100 + i, v, node, "ok") for i, (v, node) in enumerate(zip(vals, NODES, strict=True)))


def test_lww_concurrent_loss_is_counted_not_an_anomaly() -> None:
    h = hist(("w", 0, "a", None, "ok"), ("w", 1, "b", None, "ok"), *finals(["b"], ["b"], ["b"]),
             concurrent=(0, 1))
    result = check(h, **DEFAULT, resolution="lww")
    assert types(result) == []
    assert result.valid is True
    assert "by design" in result.details["lost_concurrent"][0]["explanation"]
    assert "note" in result.details
    assert result.counts["lost_concurrent"] == 1
    # The same history under DVV: the write should have survived as a sibling.
    dvv = check(h, **DEFAULT)
    assert types(dvv) == ["lost-write"] and dvv.valid is False
    expl = dvv.anomalies[0].explanation
    assert expl.startswith("write of 'a' by process 0, acknowledged at ")
    assert "via n2" in expl and "(3 final reads, identical: ['b'])" in expl and expl.endswith("lost")


def test_lww_causal_loss_is_invalid() -> None:
    h = hist(("w", 0, "a", None, "ok"), ("r", 0, ["a"], None, "ok"), ("w", 0, "b", ["a"], "ok"),
             *finals(["a"], ["a"], ["a"]))
    result = check(h, **DEFAULT, resolution="lww")
    assert types(result) == ["lost-causal"]
    assert result.anomalies[0].details["value"] == "b"
    assert result.valid is False


def test_lost_write_with_surviving_successor_is_fine_under_lww() -> None:
    h = hist(("w", 0, "a", None, "ok"), ("r", 0, ["a"], None, "ok"), ("w", 0, "b", ["a"], "ok"),
             *finals(["b"], ["b"], ["b"]))
    for resolution in ("dvv", "lww"):
        result = check(h, **DEFAULT, resolution=resolution)
        assert result.valid is True and result.anomalies == ()


def test_missing_info_write_is_counted_not_reported() -> None:
    h = hist(("w", 0, "a", None, "info"), ("w", 4, "b", None, "info"), ("w", 8, "c", None, "ok"),
             *finals(["b", "c"], ["b", "c"], ["b", "c"]))
    result = check(h, **DEFAULT)
    assert result.valid is True and result.anomalies == ()
    assert result.counts["info_writes_missing"] == 1
    assert result.counts["info_writes_landed"] == 1
    assert result.counts["writes_info"] == 2


def test_not_checked_branches() -> None:
    h = hist(("w", 0, "a", None, "ok"), ("r", 1, ["a"], None, "ok"))
    sloppy = check(h, **DEFAULT)
    assert sloppy.details["checked"] == ["P1", "P2"]
    nc = sloppy.details["not_checked"]
    assert nc["P5"] == "sloppy quorums do not promise it"
    assert "'async'" in nc["P6"]
    assert nc["P3"] == nc["P4"] == "the history has no final reads"
    weak = check(h, n=3, w=1, r=2, quorum="strict")
    assert "W+R=3 does not exceed N=3" in weak.details["not_checked"]["P5"]
    full = check(h, n=3, w=2, r=2, quorum="strict", read_repair="sync")
    assert full.details["checked"] == ["P1", "P2", "P5", "P6"]
    off = check(h, n=3, w=2, r=2, read_repair="off")
    assert "P6" in off.details["not_checked"]


def test_stale_read_ignored_where_not_promised() -> None:
    h = hist(("w", 0, "a", None, "ok"), ("r", 1, [], None, "ok"))
    assert check(h, **DEFAULT).valid is True
    assert check(h, n=3, w=1, r=1, quorum="strict").valid is True
    assert types(check(h, **STRICT)) == ["stale-read"]


def test_new_old_inversion_ignored_without_sync_repair() -> None:
    # The write is concurrent with the first read; the second read forgets it.
    h = hist(("w", 2, "a", None, "ok"), ("r", 0, ["a"], None, "ok"), ("r", 1, [], None, "ok"),
             concurrent=(0, 1))
    assert check(h, **DEFAULT).valid is True
    assert types(check(h, **SYNC)) == ["new-old-inversion"]


def test_lww_p5_tolerates_concurrent_winner_but_not_an_older_one() -> None:
    # b is invoked before a completes: concurrent, LWW may prefer it.
    h = hist(("w", 0, "a", None, "ok"), ("w", 1, "b", None, "ok"), ("r", 2, ["b"], None, "ok"),
             concurrent=(0, 1))
    assert check(h, **STRICT, resolution="lww").valid is True
    assert types(check(h, **STRICT)) == ["stale-read"]
    # b is invoked after a completed: a read returning a has gone back in time.
    h = hist(("w", 0, "a", None, "ok"), ("w", 1, "b", None, "ok"), ("r", 2, ["a"], None, "ok"))
    assert types(check(h, **STRICT, resolution="lww")) == ["stale-read"]


def test_keys_are_checked_separately() -> None:
    h = hist(("w", 0, "a", None, "ok"))
    h.append(Op(index=2, time=1, process=5, type="invoke", f="read", key="other"))
    h.append(Op(index=3, time=2, process=5, type="ok", f="read", key="other", value=["a"]))
    assert types(check(h, **DEFAULT)) == ["phantom"]


def test_bad_resolution_is_rejected() -> None:
    with pytest.raises(ValueError):
        check([], n=3, w=2, r=2, resolution="crdt")


def test_empty_history() -> None:
    result = check([], **DEFAULT)
    assert result.valid is True and result.counts["reads"] == 0


@pytest.mark.timeout(120)
def test_long_history_is_near_linear() -> None:
    """A chain of 40,000 context writes, each read back together with one
    long-lived blind sibling, under every property. Near-linear, this takes
    a few seconds; a quadratic walk would take hours, and the timeout (a
    guard, not a measurement: bench/ measures) stops it."""
    ops: list[Op] = []

    def add(**kw: Any) -> None:
        ops.append(Op(index=len(ops), time=len(ops), **kw))

    add(process=1, type="invoke", f="write", value="old")
    add(process=1, type="ok", f="write", value="old")
    prev: list[str] = ["old"]
    for i in range(40_000):
        v = f"v{i}"
        add(process=0, type="invoke", f="write", value=v, extra={"obs": [prev[-1]]} if i else {})
        add(process=0, type="ok", f="write", value=v)
        add(process=0, type="invoke", f="read")
        add(process=0, type="ok", f="read", value=["old", v])
        prev = [v]
    for p, node in enumerate(NODES):
        add(process=10 + p, type="invoke", f="read", node=node, extra={"final": True})
        add(process=10 + p, type="ok", f="read", value=["old", prev[-1]], node=node,
            extra={"final": True})
    result = check(ops, n=3, w=2, r=2, quorum="strict", read_repair="sync")
    assert result.valid is True, result.anomalies[:3]


def test_obs_may_sit_on_the_completion() -> None:
    h = hist(("w", 0, "a", None, "ok"), ("r", 0, ["a"], None, "ok"), ("w", 0, "b", None, "ok"),
             ("r", 1, ["a", "b"], None, "ok"))
    assert check(h, **DEFAULT).valid is True  # b looks blind: a and b are true siblings
    h[5] = dataclasses.replace(h[5], extra={"obs": ["a"]})  # the completion of the write of b
    assert types(check(h, **DEFAULT)) == ["sibling-not-antichain"]


def test_key_without_final_read_is_listed() -> None:
    h = hist(("w", 0, "a", None, "ok"), *finals(["a"], ["a"], ["a"]))
    h.append(Op(index=len(h), time=10**9, process=7, type="invoke", f="write", key="other",
                value="z"))
    h.append(Op(index=len(h), time=10**9 + 1, process=7, type="ok", f="write", key="other",
                value="z"))
    result = check(h, **DEFAULT)
    assert result.valid is True
    assert result.details["keys_without_final_read"] == ["other"]
    assert "P3" in result.details["checked"]


# ---- paths the fast checker takes only for unusual histories ---------------------------------

def ops_of(*steps: tuple[Any, ...]) -> list[Op]:
    """(process, f, value, extra) per operation, each invoked then completed `ok`
    right away; a read's value is what it returned, a write's what it wrote."""
    out: list[Op] = []
    for p, f, value, extra in steps:
        out.append(Op(index=len(out), time=len(out), process=p, type="invoke", f=f, key="k",
                      value=value if f == "write" else None, extra=extra))
        out.append(Op(index=len(out), time=len(out), process=p, type="ok", f=f, key="k",
                      value=value))
    return out


def test_obs_naming_a_later_write_is_still_followed() -> None:
    """Clients cannot see the future, so a -> b normally means a was invoked
    first and the checker skips the search when it was not; but when an obs
    names a write invoked later (the history is wrong somewhere), the edge
    still counts."""
    h = ops_of((0, "write", "a", {"obs": ["b"]}), (1, "write", "b", {}), (2, "read", ["a", "b"], {}))
    result = check(h, **DEFAULT)
    assert types(result) == ["sibling-not-antichain"]
    assert result.anomalies[0].details == {"key": "k", "older": "b", "newer": "a"}


def test_obs_that_is_not_a_list_of_strings() -> None:
    h = ops_of((0, "write", ["x", 1], {}), (0, "write", "b", {"obs": [["x", 1]]}),
               (0, "write", "c", {"obs": "b"}), (1, "read", [["x", 1], "c"], {}))
    result = check(h, **DEFAULT)
    assert types(result) == ["sibling-not-antichain"]
    assert result.anomalies[0].details == {"key": "k", "older": ("x", 1), "newer": "c"}


def test_history_listed_out_of_index_order() -> None:
    """pair() keeps the list's order; P5 and P6 follow the indexes."""
    h = ops_of((0, "write", "a", {}), (1, "read", ["a"], {}), (2, "read", [], {}),
               (3, "read", ["a"], {}))
    shuffled = h[6:] + h[:6]  # the last read listed first
    config = {"n": 3, "w": 2, "r": 2, "quorum": "strict", "read_repair": "sync"}
    result = check(shuffled, **config)
    assert types(result) == ["stale-read", "new-old-inversion"]
    assert result == check(h, **config)


def test_collector_is_restored() -> None:
    assert gc.isenabled()
    check(ops_of((0, "write", "a", {})), **DEFAULT)
    assert gc.isenabled()
    with pytest.raises(ValueError):
        check([Op(index=0, time=0, process=0, type="ok", f="read")], **DEFAULT)
    assert gc.isenabled()


# ---- deletes: tombstones and resurrection ----------------------------------------------------

def test_deleted_write_is_not_lost_and_final_reads_may_be_empty() -> None:
    h = hist(("w", 0, "a", None, "ok"), ("r", 0, ["a"], None, "ok"), ("d", 0, None, ["a"], "ok"),
             *finals([], [], []))
    for resolution in ("dvv", "lww"):
        result = check(h, **DEFAULT, resolution=resolution)
        assert result.valid is True and result.anomalies == (), resolution
        assert result.counts["deletes_ok"] == 1 and result.counts["writes_ok"] == 1
    # A later write replaces the tombstone; the deleted value stays deleted.
    h = hist(("w", 0, "a", None, "ok"), ("r", 0, ["a"], None, "ok"), ("d", 0, None, ["a"], "ok"),
             ("r", 1, [], None, "ok"), ("w", 1, "b", None, "ok"), *finals(["b"], ["b"], ["b"]))
    assert check(h, **STRICT).valid is True
    assert check(h, **STRICT, read_repair="sync").valid is True


def test_blind_delete_supersedes_nothing_under_dvv() -> None:
    # A blind delete is a sibling of what is there: the write should survive it.
    h = hist(("w", 0, "a", None, "ok"), ("d", 1, None, None, "ok"), *finals([], [], []))
    assert types(check(h, **DEFAULT)) == ["lost-write"]
    # Under last-write-wins its timestamp may beat the write: a loss to a concurrent
    # delete, counted, not an anomaly.
    lww = check(h, **DEFAULT, resolution="lww")
    assert lww.valid is True and lww.counts["lost_concurrent"] == 1
    assert "(or delete)" in lww.details["lost_concurrent"][0]["explanation"]


def test_resurrection_in_the_final_reads() -> None:
    h = hist(("w", 0, "a", None, "ok"), ("r", 0, ["a"], None, "ok"), ("d", 0, None, ["a"], "ok"),
             *finals(["a"], ["a"], ["a"]))
    result = check(h, **DEFAULT)
    assert types(result) == ["resurrection"] * 3 and result.valid is False
    a = result.anomalies[0]
    assert a.explanation == ("final read of key 'k' by process 100 via n1 (0.06 s-0.07 s) returned 'a', "
                             "which the delete by process 0, acknowledged at 0.05 s via n2, had deleted "
                             "before the read began: a deleted value came back")
    assert a.ops == (6, 7, 4, 5, 0, 1) and a.details == {"key": "k", "value": "a", "delete": 4}
    # The delete superseded a's successor b, and with it a.
    h = hist(("w", 0, "a", None, "ok"), ("r", 0, ["a"], None, "ok"), ("w", 0, "b", ["a"], "ok"),
             ("r", 1, ["b"], None, "ok"), ("d", 1, None, ["b"], "ok"), *finals(["a"], ["a"], ["a"]))
    assert set(types(check(h, **DEFAULT))) == {"resurrection"}
    # Under last-write-wins too: the delete read a, so its timestamp is later (on agreeing clocks).
    assert set(types(check(h, **DEFAULT, resolution="lww"))) == {"resurrection"}


def test_resurrection_needs_an_ok_delete_that_completed_before_the_read() -> None:
    base = (("w", 0, "a", None, "ok"), ("r", 0, ["a"], None, "ok"))
    # An info delete may not have happened; a failed one did not.
    for outcome in ("info", "fail"):
        h = hist(*base, ("d", 0, None, ["a"], outcome), *finals(["a"], ["a"], ["a"]))
        assert check(h, **DEFAULT).valid is True, outcome
    # A read concurrent with the delete may come before it.
    h = hist(*base, ("d", 0, None, ["a"], "ok"), ("r", 1, ["a"], None, "ok"), concurrent=(2, 3))
    assert check(h, **STRICT).valid is True


def test_midrun_resurrection_only_where_quorums_intersect() -> None:
    h = hist(("w", 0, "a", None, "ok"), ("r", 0, ["a"], None, "ok"), ("d", 0, None, ["a"], "ok"),
             ("r", 1, ["a"], None, "ok"))
    # Sloppy quorums: a replica that missed the delete may still answer.
    assert check(h, **DEFAULT).valid is True
    result = check(h, **STRICT)
    assert types(result) == ["resurrection"]
    assert result.anomalies[0].explanation.startswith("read of key 'k' by process 1 via n1")


def test_p5_and_p6_with_deletes() -> None:
    # The read after the delete returns nothing: neither stale nor inverted.
    h = hist(("w", 0, "a", None, "ok"), ("r", 0, ["a"], None, "ok"), ("d", 0, None, ["a"], "ok"),
             ("r", 1, [], None, "ok"))
    for resolution in ("dvv", "lww"):
        assert check(h, n=3, w=2, r=2, quorum="strict", read_repair="sync", resolution=resolution).valid
    # A delete still in flight when the read completes may have removed a.
    h = hist(("w", 0, "a", None, "ok"), ("r", 0, ["a"], None, "ok"), ("d", 0, None, ["a"], "info"),
             ("r", 1, [], None, "ok"), concurrent=(2, 3))
    assert check(h, n=3, w=2, r=2, quorum="strict", read_repair="sync").valid is True
    # A blind delete does not remove a under dvv (a stale read), may under lww.
    h = hist(("w", 0, "a", None, "ok"), ("d", 1, None, None, "ok"), ("r", 2, [], None, "ok"))
    assert types(check(h, **STRICT)) == ["stale-read"]
    assert check(h, **STRICT, resolution="lww").valid is True
