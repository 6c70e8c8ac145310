"""The cart/set checker: generated histories of a correct store are valid;
one injected anomaly (a dropped acknowledged add, a phantom element) is found
with the right type and operations and nothing else is reported; the
indeterminate and the no-final-read cases."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from checkers.history import Op
from checkers.sets import check

NODES = ("n1", "n2", "n3")


@dataclass
class Gen:
    history: list[Op] = field(default_factory=list)
    state: dict[Any, set[str]] = field(default_factory=dict)  # the true set per key
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)  # element -> (invoke, ok) indexes
    recovered: set[str] = field(default_factory=set)  # unacknowledged but applied
    absent: set[str] = field(default_factory=set)  # unacknowledged and not applied
    keyed: bool = False

    def emit(self, **kw: Any) -> Op:
        op = Op(index=len(self.history), time=len(self.history) * 10_000_000, **kw)
        self.history.append(op)
        return op


@st.composite
def store_histories(draw: st.DrawFn) -> Gen:
    """A correct store: an add takes effect (atomically, on every replica) at
    its `ok`, or at its `info` / end of history if the coin says so; a `fail`
    add never does; a read returns the true set. Processes that end in `info`
    continue under a new id."""
    g = Gen(keyed=draw(st.booleans()))
    keys: list[Any] = ["a", "b"] if g.keyed else [None]
    conc = draw(st.integers(1, 4))
    procs = list(range(conc))
    inflight: dict[int, Op] = {}
    n_el = 0
    for _ in range(draw(st.integers(0, 40))):
        slot = draw(st.integers(0, conc - 1))
        p = procs[slot]
        node = draw(st.sampled_from(NODES))
        if p not in inflight:
            key = draw(st.sampled_from(keys))
            if draw(st.booleans()):
                n_el += 1
                inflight[p] = g.emit(process=p, type="invoke", f="add", key=key, value=f"e{n_el}", node=node)
            else:
                inflight[p] = g.emit(process=p, type="invoke", f="read", key=key, node=node)
            continue
        inv = inflight.pop(p)
        outcome = draw(st.sampled_from(["ok", "ok", "fail", "info"]))
        st_ = g.state.setdefault(inv.key, set())
        if inv.f == "add":
            if outcome == "ok":
                st_.add(inv.value)
                c = g.emit(process=p, type="ok", f="add", key=inv.key, value=inv.value, node=node)
                g.acked[inv.value] = (inv.index, c.index)
            elif outcome == "fail":
                g.emit(process=p, type="fail", f="add", key=inv.key, value=inv.value, node=node, error="refused")
            else:
                if draw(st.booleans()):
                    st_.add(inv.value)
                    g.recovered.add(inv.value)
                else:
                    g.absent.add(inv.value)
                g.emit(process=p, type="info", f="add", key=inv.key, value=inv.value, node=node, error="timeout")
        elif outcome == "ok":
            g.emit(process=p, type="ok", f="read", key=inv.key, value=sorted(st_), node=node)
        else:
            g.emit(process=p, type=outcome, f="read", key=inv.key, node=node, error="timeout")
        if outcome == "info":
            procs[slot] = p + conc * (1 + p // conc)  # a fresh id
    for p, inv in inflight.items():  # never completed
        if inv.f == "add":
            if draw(st.booleans()):
                g.state.setdefault(inv.key, set()).add(inv.value)
                g.recovered.add(inv.value)
            else:
                g.absent.add(inv.value)
        del p
    # Final reads, one per node and key, by fresh processes.
    fp = 1000
    for key in keys:
        for node in NODES:
            fp += 1
            g.emit(process=fp, type="invoke", f="read", key=key, node=node, extra={"final": True})
            g.emit(process=fp, type="ok", f="read", key=key, node=node,
                   value=sorted(g.state.get(key, set())), extra={"final": True})
    return g


def replace_finals(history: list[Op], fn: Any) -> list[Op]:
    out = []
    for op in history:
        if op.type == "ok" and op.f == "read" and op.extra.get("final"):
            op = Op(index=op.index, time=op.time, process=op.process, type="ok", f="read",
                    key=op.key, value=fn(op), node=op.node, extra=op.extra)
        out.append(op)
    return out


@settings(max_examples=200, deadline=None)
@given(store_histories())
def test_correct_store_is_valid(g: Gen) -> None:
    r = check(g.history)
    assert r.valid is True, r.anomalies
    assert r.anomalies == ()
    assert r.counts["lost"] == 0 and r.counts["unexpected"] == 0
    assert r.counts["acknowledged"] == len(g.acked)
    assert r.counts["recovered"] == len(g.recovered)
    assert r.counts["unacknowledged_absent"] == len(g.absent)
    assert r.counts["divergent"] == 0
    assert r.counts["present"] == len(g.acked)


@settings(max_examples=200, deadline=None)
@given(store_histories(), st.data())
def test_dropped_acknowledged_add_is_lost(g: Gen, data: st.DataObject) -> None:
    if not g.acked:
        return
    victim = data.draw(st.sampled_from(sorted(g.acked)))
    # Drop it from every final read, or only from some (then it is divergent, not lost).
    everywhere = data.draw(st.booleans())
    h = replace_finals(g.history, lambda op: [e for e in op.value if e != victim or
                                              (not everywhere and op.node == "n1")])
    r = check(h)
    if everywhere:
        assert r.valid is False
        assert [a.type for a in r.anomalies] == ["lost"]
        assert r.anomalies[0].ops == g.acked[victim]
        assert repr(victim) in r.anomalies[0].explanation
        assert r.counts["lost"] == 1 and r.details["lost"] == [victim]
    else:
        assert r.valid is True and r.anomalies == ()
        assert r.counts["divergent"] == 1 and r.details["divergent"] == [victim]


@settings(max_examples=100, deadline=None)
@given(store_histories())
def test_phantom_is_unexpected(g: Gen) -> None:
    h = replace_finals(g.history, lambda op: [*op.value, "ghost"] if op.node == "n2" else op.value)
    r = check(h)
    assert r.valid is False
    kinds = [a.type for a in r.anomalies]
    assert set(kinds) == {"unexpected"}
    assert len(kinds) == (2 if g.keyed else 1)  # one per key
    for a in r.anomalies:
        assert "'ghost'" in a.explanation and "never added" in a.explanation
        assert all(h[i].node == "n2" for i in a.ops)
    assert r.counts["unexpected"] == len(kinds) and r.counts["lost"] == 0


def ops(*rows: tuple[Any, ...]) -> list[Op]:
    """(process, type, f, value[, extra]) rows; time = index * 0.5 s."""
    out = []
    for i, row in enumerate(rows):
        p, t, f, v, *rest = row
        out.append(Op(index=i, time=i * 500_000_000, process=p, type=t, f=f, value=v,
                      node="n2", extra=rest[0] if rest else {}))
    return out


def test_info_add_present_is_recovered_not_anomaly() -> None:
    h = ops((0, "invoke", "add", "x"), (0, "info", "add", "x"),
            (1, "invoke", "add", "y"), (1, "ok", "add", "y"),
            (2, "invoke", "add", "z"),  # never completes, present
            (3, "invoke", "read", None), (3, "ok", "read", ["x", "y", "z"]))
    r = check(h)
    assert r.valid is True and r.anomalies == ()
    assert r.counts["recovered"] == 2 and r.details["recovered"] == ["x", "z"]
    assert r.counts["attempted"] == 3 and r.counts["acknowledged"] == 1


def test_failed_add_present_is_unexpected() -> None:
    h = ops((0, "invoke", "add", "x"), (0, "fail", "add", "x"),
            (1, "invoke", "read", None, {"final": True}), (1, "ok", "read", ["x"], {"final": True}))
    r = check(h)
    assert r.valid is False
    (a,) = r.anomalies
    assert a.type == "unexpected" and a.ops == (0, 2, 3) and "failed" in a.explanation


def test_lost_sentence() -> None:
    h = ops((3, "invoke", "add", "item-17"), (3, "ok", "add", "item-17"),
            (1, "invoke", "read", None), (1, "ok", "read", []))
    (a,) = check(h).anomalies
    assert a.explanation == ("add of 'item-17' by process 3, acknowledged at 0.50 s via n2, "
                             "is in no final read (1 final read, via n2: []): lost")


def test_no_final_read_is_unknown() -> None:
    h = ops((0, "invoke", "add", "x"), (0, "ok", "add", "x"),
            (1, "invoke", "read", None, {"final": True}), (1, "info", "read", None),
            (2, "invoke", "read", None), (2, "ok", "read", ["x"]))
    r = check(h)
    assert r.valid == "unknown" and r.reason and "no final read" in r.reason
    assert check([]).valid == "unknown"
    # Unmarked: the last ok read is the final read.
    assert check(h[:2] + h[4:]).valid is True


def test_per_key_lost_beats_unknown() -> None:
    h = [Op(index=0, time=0, process=0, type="invoke", f="add", key="a", value=1),
         Op(index=1, time=1, process=0, type="ok", f="add", key="a", value=1),
         Op(index=2, time=2, process=0, type="invoke", f="read", key="a", extra={"final": True}),
         Op(index=3, time=3, process=0, type="ok", f="read", key="a", value=[], extra={"final": True}),
         Op(index=4, time=4, process=0, type="invoke", f="add", key="b", value=2),
         Op(index=5, time=5, process=0, type="ok", f="add", key="b", value=2)]
    r = check(h)
    assert r.valid is False and r.counts["unknown_keys"] == 1 and r.counts["lost"] == 1
    assert {k["key"]: k["valid"] for k in r.details["keys"]} == {"a": False, "b": "unknown"}
