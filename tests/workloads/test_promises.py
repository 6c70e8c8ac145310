"""What gets checked follows from what the system promises: each workload's
plan for each claim, kvnode's promises in each mode, `--check` asking for
more, the summary of what was not checked, and checkers that crash without
costing the others their verdicts."""

from __future__ import annotations

from typing import Any

import pytest

from checkers.compose import Check
from checkers.history import Op
from checkers.result import Result
from contract import Claim, Completion, Invocation, Promise
from harness.systems.kvnode import KvnodeSystem
from workloads.base import WorkloadOptions, judge, plan
from workloads.cart import CartWorkload
from workloads.register import RegisterWorkload

LINEARIZABLE = Promise(claims=(Claim(name="linearizable", why="raft"),))


def _names(checks: list[Check]) -> list[tuple[str, str | None]]:
    return [(c.name, c.claim) for c in checks]


def _op(index: int, process: Any, type: str, f: str, value: Any = None, **extra: Any) -> Op:
    return Op(index=index, time=index, process=process, type=type, f=f, key="k", value=value,  # type: ignore[arg-type]
              extra=extra)


def test_a_linearizable_register_gets_linearizability_and_stats_only() -> None:
    p = plan(RegisterWorkload(WorkloadOptions()), LINEARIZABLE)
    assert _names(p.checks) == [("linearizable", "linearizable"), ("stats", None)]
    assert set(p.not_checked) == {"siblings", "last-write-wins"}
    assert "not promised" in p.not_checked["siblings"] and "--check siblings" in p.not_checked["siblings"]


def test_a_linearizable_cart_gets_the_set_check_it_implies() -> None:
    p = plan(CartWorkload(WorkloadOptions()), LINEARIZABLE)
    assert _names(p.checks) == [("linearizable", "linearizable"), ("set", "no-lost-adds"), ("stats", None)]
    assert set(p.not_checked) == {"siblings", "last-write-wins"}


def test_a_claim_the_workload_cannot_check_is_said_so() -> None:
    p = plan(RegisterWorkload(WorkloadOptions()), Promise(claims=(Claim(name="no-lost-adds"),)))
    assert p.not_checked["no-lost-adds"] == "the register workload cannot check it"
    assert _names(p.checks) == [("stats", None)]


@pytest.mark.parametrize("settings, workload, claims", [
    (dict(), "register", ["siblings"]),
    (dict(), "cart", ["siblings", "no-lost-adds"]),
    (dict(resolution="lww"), "register", ["last-write-wins"]),
    (dict(resolution="lww"), "cart", ["last-write-wins"]),
    (dict(resolution="lww", quorum="strict", read_repair="sync"), "register", ["last-write-wins", "linearizable"]),
    # W+R must exceed N for quorums to intersect
    (dict(resolution="lww", quorum="strict", read_repair="sync", w=1, r=1), "register", ["last-write-wins"]),
    (dict(resolution="lww", quorum="sloppy", read_repair="sync"), "register", ["last-write-wins"]),
])
def test_kvnode_promises_what_its_settings_give(settings: dict[str, Any], workload: str,
                                                 claims: list[str]) -> None:
    promise = KvnodeSystem(**settings).promise(workload)
    assert list(promise.names()) == claims
    assert all(c.why for c in promise.claims)


def test_kvnode_sibling_settings_decide_p5_and_p6() -> None:
    strict = KvnodeSystem(quorum="strict", read_repair="sync").promise("register")
    results = {r.checker: r for r in judge([], plan(RegisterWorkload(WorkloadOptions()), strict).checks)}
    assert "P5" in results["siblings"].details["checked"] and "P6" in results["siblings"].details["checked"]
    sloppy = KvnodeSystem().promise("register")
    results = {r.checker: r for r in judge([], plan(RegisterWorkload(WorkloadOptions()), sloppy).checks)}
    assert results["siblings"].details["not_checked"]["P5"] == "sloppy quorums do not promise it"


def test_asking_for_a_stronger_claim_adds_it_marked_as_asked() -> None:
    promise = KvnodeSystem(resolution="lww", w=1, r=1).promise("register").asking(["linearizable"])
    assert promise.names() == ("last-write-wins", "linearizable")
    asked = promise.get("linearizable")
    assert asked is not None and asked.asked
    assert "asked for" in promise.describe()
    p = plan(RegisterWorkload(WorkloadOptions()), promise)
    assert ("linearizable", "linearizable") in _names(p.checks)
    # asking for what is promised already changes nothing
    assert KvnodeSystem().promise("register").asking(["siblings"]).claims == KvnodeSystem().promise("register").claims


def test_a_promise_survives_json() -> None:
    promise = KvnodeSystem(quorum="strict").promise("cart").asking(["linearizable"])
    assert Promise.from_json(promise.to_json()) == promise


def test_a_checker_that_crashes_is_unknown_and_the_others_still_run() -> None:
    def boom(history: Any) -> Result:
        raise RuntimeError("the checker blew up")

    history = [_op(0, 0, "invoke", "write", "a"), _op(1, 0, "ok", "write", "a")]
    results = judge(history, [Check(name="boom", claim="linearizable", run=boom),
                              Check(name="other", run=lambda h: Result(checker="x", valid=False))])
    assert results[0].checker == "boom" and results[0].valid == "unknown"
    assert "RuntimeError: the checker blew up" in str(results[0].reason)
    assert "Traceback" in results[0].details["traceback"]
    assert results[0].details["claim"] == "linearizable"
    assert results[1].checker == "other" and results[1].valid is False


@pytest.mark.parametrize("workload, op, completion, problem", [
    (RegisterWorkload, Invocation("read", "k"), Completion("ok", 5), "list of values"),
    (RegisterWorkload, Invocation("read", "k"), Completion("ok", [1]), "writes only text"),
    (RegisterWorkload, Invocation("write", "k", "0.1"), Completion("ok", "other"), "its own value"),
    (CartWorkload, Invocation("read", "k"), Completion("ok", "a\nb"), "list of values"),
    (CartWorkload, Invocation("add", "k", "0.1"), Completion("ok", 7), "its own value"),
])
def test_a_completion_that_does_not_fit_the_workload_is_named(workload: Any, op: Invocation,
                                                               completion: Completion, problem: str) -> None:
    said = workload(WorkloadOptions()).validate(op, completion)
    assert said is not None and problem in said


@pytest.mark.parametrize("workload, op, completion", [
    (RegisterWorkload, Invocation("read", "k"), Completion("ok", [])),
    (RegisterWorkload, Invocation("read", "k"), Completion("ok", ["0.1", "1.1"])),
    (RegisterWorkload, Invocation("write", "k", "0.1"), Completion("ok", None)),
    (RegisterWorkload, Invocation("read", "k"), Completion("info", error="timeout")),
    (CartWorkload, Invocation("add", "k", "0.1"), Completion("ok", "0.1", extra={"wrote": ["0.1"]})),
])
def test_completions_that_fit_pass(workload: Any, op: Invocation, completion: Completion) -> None:
    assert workload(WorkloadOptions()).validate(op, completion) is None
