"""checkers.replicas on crafted histories, and every other checker leaving
replica reads out."""

from __future__ import annotations

from typing import Any

from checkers import linearizable, replicas, sets, siblings, stats
from checkers.history import REPLICA_READ, Op
from contract.promise import Claim, Promise
from workloads.base import WorkloadOptions, judge, plan
from workloads.cart import CartWorkload
from workloads.register import RegisterWorkload, single_values

S = 1_000_000_000


class History:
    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.process = 1000

    def op(self, process: Any, type: str, f: str, t: float, **kw: Any) -> None:
        self.ops.append(Op(index=len(self.ops), time=int(t * S), process=process, type=type, f=f,  # type: ignore[arg-type]
                           **kw))

    def client(self, f: str, key: str, value: Any, result: Any = None, *, t: float, process: int = 0,
               obs: list[str] | None = None) -> None:
        self.op(process, "invoke", f, t, key=key, value=value, node="n1",
                extra={"obs": obs} if obs is not None else {})
        self.op(process, "ok", f, t + 0.01, key=key, value=value if result is None else result, node="n1")

    def heal(self, t: float) -> None:
        self.op("nemesis", "invoke", "stop-partition", t)
        self.op("nemesis", "info", "stop-partition", t, value="healed")

    def replica(self, key: str, node: str, values: list[str] | None, *, t: float) -> None:
        self.op(self.process, "invoke", REPLICA_READ, t, key=key, node=node)
        if values is None:
            self.op(self.process, "info", REPLICA_READ, t + 0.01, key=key, node=node, error="could not be read")
            self.process += 1
        else:
            self.op(self.process, "ok", REPLICA_READ, t + 0.01, key=key, node=node, value=values)


def register_history(n3: list[str] | None = None, *, n3_unreadable: bool = False) -> History:
    """Two writes to k7, the second read-modify-written over the first; a
    partition healed at 10 s; replica reads at 70 s."""
    h = History()
    h.client("write", "k7", "0.1", t=1)
    h.client("read", "k7", None, ["0.1"], t=2)
    h.client("write", "k7", "3.14", t=3, obs=["0.1"])
    h.heal(10)
    h.client("read", "k7", None, ["3.14"], t=11, process=1)
    h.op(5, "invoke", "read", 12, key="k7", node="n1", extra={"final": True})
    h.op(5, "ok", "read", 12.01, key="k7", node="n1", value=["3.14"], extra={"final": True})
    for node, held in (("n1", ["3.14"]), ("n2", ["3.14"]), ("n3", None if n3_unreadable else n3 or ["3.14"])):
        h.replica("k7", node, held, t=70)
    return h


def test_replicas_that_agree_are_valid_and_say_how_long_they_took() -> None:
    r = replicas.check(register_history().ops)
    assert r.valid is True
    assert r.counts["keys"] == 1 and r.counts["replicas"] == 3
    assert r.details["converged_in_s"] == 60.01


def test_a_replica_that_never_received_a_value_is_named_with_what_it_lacks() -> None:
    h = register_history(n3=["0.1"])
    r = replicas.check(h.ops)
    assert r.valid is False
    (a,) = r.anomalies
    assert a.type == "replica-divergence"
    assert a.explanation == ("n3, a replica of 'k7', still lacks '3.14' (held by n1 and n2) 60.0 s after the "
                             "faults healed; it holds ['0.1']")
    assert a.details["replica"] == "n3" and a.details["lacks"] == ["3.14"] and a.details["held_by"] == ["n1", "n2"]
    n3 = [o.index for o in h.ops if o.f == REPLICA_READ and o.node == "n3"]
    assert set(n3) <= set(a.ops)


def test_a_replica_that_holds_nothing_of_a_key_is_named() -> None:
    h = History()
    h.client("write", "k1", "1.1", t=1)
    h.replica("k1", "n1", ["1.1"], t=5)
    h.replica("k1", "n4", [], t=5)
    h.replica("k1", "n5", ["1.1"], t=5)
    r = replicas.check(h.ops)
    assert r.valid is False
    assert [a.details["replica"] for a in r.anomalies] == ["n4"]
    assert "after the workload ended" in r.anomalies[0].explanation
    assert "it holds []" in r.anomalies[0].explanation


def test_a_replica_holding_an_extra_sibling_is_named_with_it() -> None:
    h = History()
    for node, held in (("n1", ["a"]), ("n2", ["a", "b"]), ("n3", ["a"])):
        h.replica("k", node, held, t=1)
    (a,) = replicas.check(h.ops).anomalies
    assert a.details["replica"] == "n2" and a.details["extra"] == ["b"]
    assert "n2, a replica of 'k', holds 'b', which n1 and n3 lack" in a.explanation


def test_only_the_last_read_of_each_replica_counts() -> None:
    h = History()
    h.replica("k", "n1", ["a"], t=1)
    h.replica("k", "n2", [], t=1)
    h.replica("k", "n2", ["a"], t=2)
    assert replicas.check(h.ops).valid is True


def test_an_unreadable_replica_makes_its_key_unknown_not_valid() -> None:
    h = register_history(n3_unreadable=True)
    r = replicas.check(h.ops)
    assert r.valid == "unknown"
    assert r.reason == "key 'k7': n3 could not be read"
    assert r.counts["unreadable"] == 1


def test_divergence_beats_an_unreadable_replica_and_no_replica_read_is_unknown() -> None:
    h = History()
    h.replica("k", "n1", ["a"], t=1)
    h.replica("k", "n2", ["b", "c"], t=1)
    h.replica("k", "n3", None, t=1)
    assert replicas.check(h.ops).valid is False
    assert replicas.check(register_history().ops[:8]).valid == "unknown"


# ---------------------------------------------------------------- the others


def test_every_other_checker_ignores_replica_reads() -> None:
    diverged = register_history(n3=["0.1", "9.9"]).ops  # 9.9 was never written: a phantom, were it a read
    plain = [o for o in diverged if o.f != REPLICA_READ]
    for check in (lambda h: siblings.check(h), lambda h: siblings.check(h, resolution="lww"),
                  lambda h: linearizable.check(single_values(h), "register"), lambda h: stats.check(h)):
        a, b = check(diverged), check(plain)
        assert a.valid is True and (a.valid, a.anomalies, a.counts) == (b.valid, b.anomalies, b.counts)
    cart = History()
    cart.op(0, "invoke", "add", 1, key="c", value="x")
    cart.op(0, "ok", "add", 1.1, key="c", value="x")
    cart.op(1, "invoke", "read", 2, key="c", extra={"final": True})
    cart.op(1, "ok", "read", 2.1, key="c", value=["x"], extra={"final": True})
    cart.replica("c", "n1", ["x"], t=3)
    cart.replica("c", "n2", ["x\ny"], t=3)
    for check in (sets.check, lambda h: linearizable.check(h, "set"), stats.check):
        r = check(cart.ops)
        assert r.valid is True, r
    assert "replica-read.ok" not in stats.check(cart.ops).counts


def test_plan_adds_the_replica_check_for_a_convergence_claim_only_with_replica_reads() -> None:
    siblings_promise = Promise(claims=(Claim(name="siblings", params={"n": 3, "w": 2, "r": 2}),))
    register = RegisterWorkload(WorkloadOptions())
    assert "replicas" not in [c.name for c in plan(register, siblings_promise).checks]
    p = plan(register, siblings_promise, replicas=True)
    names = [c.name for c in p.checks]
    assert names == ["siblings", "replicas", "stats"]
    assert next(c for c in p.checks if c.name == "replicas").claim == "siblings"
    results = {r.checker: r for r in judge(register_history(n3=["0.1"]).ops, p.checks)}
    assert results["replicas"].valid is False and results["replicas"].details["claim"] == "siblings"
    assert results["siblings"].valid is True
    lin = Promise(claims=(Claim(name="linearizable"), Claim(name="last-write-wins")))
    assert next(c for c in plan(register, lin, replicas=True).checks if c.name == "replicas").claim \
        == "last-write-wins"
    cart = plan(CartWorkload(WorkloadOptions()), Promise(claims=(Claim(name="no-lost-adds"),)), replicas=True)
    assert [c.claim for c in cart.checks if c.name == "replicas"] == ["no-lost-adds"]
