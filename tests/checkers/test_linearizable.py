"""The linearizability checker: generated histories cross-checked against a
brute-force checker, and the classic hand cases.

Generated histories: a random sequential execution of the model, each op
stretched into a random interval around its linearization point, spread over
processes (a process whose op crashes never returns), plus crashed ops that
never took effect and failed ops. Those are valid by construction; a mutated
copy (one output changed, or one op's kind swapped) is checked against the
brute-force checker, which tries every order consistent with real time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import checkers.linearizable as lin
from checkers.history import Op, complete, pair
from checkers.linearizable import check
from checkers.models import Model, model

Spec = tuple[str, Any, Any]  # (f, key, argument)


@contextmanager
def search_only() -> Iterator[None]:
    """Force the WGL search (no unique-register shortcut)."""
    with mock.patch.object(lin, "_unique_register", None):
        yield


# --- brute force ---------------------------------------------------------------

def brute(history: list[Op], m: Model) -> bool:
    """Every order consistent with real time; crashed ops optional. Memoized
    on (placed set, state) only to stay fast; no pruning otherwise."""
    ops = complete(pair(history))
    n = len(ops)
    s0 = m.init()
    ok = frozenset(i for i, o in enumerate(ops) if o.end is not None)

    @functools.cache
    def rec(placed: frozenset[int], state: Any) -> bool:
        if ok <= placed:
            return True
        for i in range(n):
            if i in placed:
                continue
            start = ops[i].invoke.index
            if any(j not in placed and ops[j].end is not None and ops[j].end < start  # type: ignore[operator]
                   for j in range(n)):
                continue
            for s in m.step(state, ops[i]):
                if rec(placed | {i}, s):
                    return True
        return False

    return rec(frozenset(), s0)


# --- sequential specs ------------------------------------------------------------
# gen(draw, state) -> (f, key, arg); run(state, f, key, arg) -> (type, output, state')

V = st.integers(0, 2)


def reg_gen(cas: bool, unique: bool) -> Callable[..., Spec]:
    counter = iter(range(100, 10**6))

    def gen(draw: Any, state: Any) -> Spec:
        kinds = ["read", "write", "cas"] if cas else ["read", "write"]
        if not unique:
            kinds.append("delete")  # writes the initial value again
        f = draw(st.sampled_from(kinds))
        if f == "delete":
            return f, None, None
        if f == "write":
            return f, None, next(counter) if unique else draw(V)
        if f == "cas":
            return f, None, [draw(V), draw(V)]
        return f, None, None
    return gen


def reg_run(state: Any, f: str, key: Any, arg: Any) -> tuple[str, Any, Any]:
    if f == "read":
        return "ok", state, state
    if f == "write":
        return "ok", arg, arg
    if f == "delete":
        return "ok", None, 0  # the specs' initial value
    if arg[0] == state:
        return "ok", arg, arg[1]
    return "fail", arg, state


def multi_gen(draw: Any, state: Any) -> Spec:
    txn = []
    for _ in range(draw(st.integers(1, 2))):
        k = draw(st.sampled_from(["x", "y"]))
        if draw(st.booleans()):
            txn.append([draw(st.sampled_from(["r", "read", ":read"])), k, None])
        else:
            txn.append([draw(st.sampled_from(["w", "write", ":write"])), k, draw(V)])
    return "txn", None, txn


def multi_run(state: Any, f: str, key: Any, arg: Any) -> tuple[str, Any, Any]:
    regs = dict(state)
    out = []
    for mf, k, v in arg:
        if "r" in mf and "w" not in mf:
            out.append([mf, k, regs.get(k)])
        else:
            regs[k] = v
            out.append([mf, k, v])
    return "ok", out, tuple(sorted(regs.items()))


def kv_gen(draw: Any, state: Any) -> Spec:
    f = draw(st.sampled_from(["get", "put", "append"]))
    return f, draw(st.sampled_from(["a", "b"])), None if f == "get" else draw(st.sampled_from("xy"))


def kv_run(state: Any, f: str, key: Any, arg: Any) -> tuple[str, Any, Any]:
    d = dict(state)
    if f == "get":
        return "ok", d.get(key, ""), state
    d[key] = arg if f == "put" else d.get(key, "") + arg
    return "ok", None, tuple(sorted(d.items()))


def set_gen(draw: Any, state: Any) -> Spec:
    if draw(st.booleans()):
        return "add", None, draw(st.integers(0, 3))
    return "read", None, None


def set_run(state: Any, f: str, key: Any, arg: Any) -> tuple[str, Any, Any]:
    if f == "read":
        return "ok", sorted(state), state
    return "ok", None, tuple(sorted(set(state) | {arg}))


def mutex_gen(draw: Any, state: Any) -> Spec:
    return ("release" if state else "acquire"), None, None


def mutex_run(state: Any, f: str, key: Any, arg: Any) -> tuple[str, Any, Any]:
    return "ok", None, f == "acquire"


def queue_gen(draw: Any, state: Any) -> Spec:
    if draw(st.booleans()):
        return "enqueue", None, draw(st.integers(0, 3))
    return "dequeue", None, None


def queue_run(state: Any, f: str, key: Any, arg: Any) -> tuple[str, Any, Any]:
    if f == "enqueue":
        return "ok", arg, (*state, arg)
    return ("ok", state[0], state[1:]) if state else ("ok", None, state)


SPECS: dict[str, tuple[Callable[..., Spec], Callable[..., tuple[str, Any, Any]], Any, Any]] = {
    # name: (gen, run, initial state in the spec, initial passed to the checker)
    "register": (reg_gen(False, False), reg_run, 0, 0),
    "cas-register": (reg_gen(True, False), reg_run, 0, 0),
    "multi-register": (multi_gen, multi_run, (), None),
    "kv": (kv_gen, kv_run, (), None),
    "set": (set_gen, set_run, (), None),
    "mutex": (mutex_gen, mutex_run, False, None),
    "queue": (queue_gen, queue_run, (), None),
}


def mutate_output(draw: Any, name: str, f: str, arg: Any, out: Any) -> tuple[str, Any, Any]:
    """One changed output (or, for the mutex, one op's kind swapped)."""
    if name in ("register", "cas-register"):
        return ("read", None, draw(V)) if f == "read" else ("write", draw(V), None)
    if name == "multi-register":
        return f, arg, [[m, k, draw(V) if "w" not in str(m) else v] for m, k, v in out]
    if name == "kv":
        return ("get", None, draw(st.sampled_from(["", "x", "y", "xy", "yx", "xx"]))) if f == "get" \
            else ("append" if f == "put" else "put", arg, None)
    if name == "set":
        return ("read", None, draw(st.lists(st.integers(0, 3), max_size=3, unique=True))) \
            if f == "read" else (f, draw(st.integers(0, 3)), out)
    if name == "queue":
        return ("dequeue", None, draw(st.sampled_from([None, 0, 1, 2, 3]))) if f == "dequeue" \
            else ("enqueue", draw(st.integers(0, 3)), None)
    return ("release" if f == "acquire" else "acquire"), None, None


@st.composite
def histories(draw: Any, name: str, unique: bool = False, mutate: bool = False) -> list[Op]:
    gen, run, state, _ = SPECS[name]
    if unique:
        gen = reg_gen(False, True)
    n = draw(st.integers(1, 6))
    recs: list[dict[str, Any]] = []
    for k in range(n):
        f, key, arg = gen(draw, state)
        typ, out, state = run(state, f, key, arg)
        point = 10 * k + 5
        outcome = typ if typ == "fail" else draw(st.sampled_from(["ok"] * 6 + ["info", "none"]))
        recs.append({"f": f, "key": key, "arg": arg, "out": out, "outcome": outcome,
                     "start": point - draw(st.integers(0, 25)), "end": point + draw(st.integers(0, 25))})
    for _ in range(draw(st.integers(0, min(2, 8 - n)))):  # crashed or failed, never took effect
        f, key, arg = gen(draw, state)
        start = draw(st.integers(-5, 10 * n + 5))
        recs.append({"f": f, "key": key, "arg": arg, "out": None,
                     "outcome": draw(st.sampled_from(["info", "none", "fail"])),
                     "start": start, "end": start + draw(st.integers(0, 30))})
    if mutate:
        victims = [r for r in recs if r["outcome"] == "ok"]
        if victims:
            r = draw(st.sampled_from(victims))
            r["f"], r["arg"], r["out"] = mutate_output(draw, name, r["f"], r["arg"], r["out"])
    # processes: one op in flight each; a crashed process never returns
    recs.sort(key=lambda r: (r["start"], r["end"]))
    free_at: dict[int, int] = {}
    for r in recs:
        p = next((p for p, t in free_at.items() if t < r["start"]), len(free_at) + 100)
        r["process"] = p
        free_at[p] = r["end"] if r["outcome"] in ("ok", "fail") else 10**9
    events = _events(recs)
    history = []
    for i, (t, _, j, typ) in enumerate(events):
        r = recs[j]
        if typ == "invoke":
            value = r["arg"]
        elif typ == "ok":
            value = r["out"] if r["f"] in ("read", "get", "txn", "dequeue") else r["arg"]
        else:
            value = None
        history.append(Op(index=i, time=t * 10**7, process=r["process"], type=typ,  # type: ignore[arg-type]
                          f=r["f"], key=r["key"], value=value))
    return history


def agree(name: str, history: list[Op]) -> bool:
    initial = SPECS[name][3]
    expected = brute(history, model(name, initial))
    with search_only():
        res = check(history, name, initial=initial)
    assert res.valid is expected, (res, history)
    if expected is False:
        (a,) = res.anomalies
        assert a.type == "nonlinearizable"
        indexes = {o["index"] for o in a.details["operations"]}
        assert a.details["op"] in indexes
        assert set(a.details["prefix"]) <= indexes
        assert a.details["states"]
    return expected


@pytest.mark.parametrize("name", sorted(SPECS))
@settings(max_examples=150)
@given(data=st.data())
def test_generated_valid_histories_are_valid(name: str, data: st.DataObject) -> None:
    h = data.draw(histories(name))
    assert agree(name, h) is True


@pytest.mark.parametrize("name", sorted(SPECS))
@settings(max_examples=300)
@given(data=st.data())
def test_mutated_histories_agree_with_brute_force(name: str, data: st.DataObject) -> None:
    agree(name, data.draw(histories(name, mutate=True)))


@settings(max_examples=150)
@given(data=st.data(), mutate=st.booleans())
def test_unique_register_path_agrees_with_search(data: st.DataObject, mutate: bool) -> None:
    h = data.draw(histories("register", unique=True, mutate=mutate))
    with search_only():
        searched = check(h, "register", initial=0)
    fast = check(h, "register", initial=0)
    assert fast.valid is searched.valid is brute(h, model("register", 0))


def test_generated_mutations_find_invalid_histories() -> None:
    """The mutation strategy has teeth: it does produce invalid histories."""
    found = {name: 0 for name in SPECS}

    @settings(max_examples=100, database=None)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        for name in SPECS:
            if not agree(name, data.draw(histories(name, mutate=True))):
                found[name] += 1

    run()
    assert all(v > 0 for v in found.values()), found


# --- hand cases --------------------------------------------------------------------

def H(*events: tuple[Any, ...]) -> list[Op]:
    """(process, type, f, value[, key]) tuples, 0.1 s apart."""
    return [Op(index=i, time=i * 10**8, process=e[0], type=e[1], f=e[2], value=e[3],
               key=e[4] if len(e) > 4 else None) for i, e in enumerate(events)]


def verdict(history: list[Op], name: str, initial: Any = None) -> Any:
    with search_only():
        res = check(history, name, initial=initial)
    assert res.valid is brute(history, model(name, initial))
    return res.valid


def test_herlihy_wing_register_new_old_inversion() -> None:
    # A writes 1 over a long time; B reads 1, then (after B returns) C reads 0.
    h = H((0, "invoke", "write", 1), (1, "invoke", "read", None), (1, "ok", "read", 1),
          (2, "invoke", "read", None), (2, "ok", "read", 0), (0, "ok", "write", 1))
    assert verdict(h, "register", 0) is False
    # the same reads overlapping each other: fine
    h = H((0, "invoke", "write", 1), (1, "invoke", "read", None), (2, "invoke", "read", None),
          (1, "ok", "read", 1), (2, "ok", "read", 0), (0, "ok", "write", 1))
    assert verdict(h, "register", 0) is True


def test_stale_read_after_completed_write() -> None:
    h = H((0, "invoke", "write", 1), (0, "ok", "write", 1), (1, "invoke", "read", None),
          (1, "ok", "read", 0))
    with search_only():
        res = check(h, "register", initial=0)
    assert res.valid is False
    (a,) = res.anomalies
    assert a.explanation == "read of 0 by process 1 at 0.20 s: the register can only hold 1 here"
    assert a.details["op"] == 2 and a.details["prefix"] == [0] and a.details["states"] == ["1"]
    assert a.details["key"] is None and a.details["concurrent"] == []
    assert a.details["operations"][1] == {
        "index": 2, "process": 1, "f": "read", "value": None, "result": 0, "outcome": "ok",
        "start": 2 * 10**8, "end": 3 * 10**8}
    assert res.counts["operations"] == 2 and res.counts["partitions"] == 1 and res.counts["steps"] > 0
    assert res.details["partitions"]["None"]["valid"] is False


def test_valid_only_if_info_write_took_effect() -> None:
    h = H((0, "invoke", "write", 1), (0, "info", "write", None), (1, "invoke", "read", None),
          (1, "ok", "read", 1), (2, "invoke", "read", None), (2, "ok", "read", 1))
    assert verdict(h, "register", 0) is True
    # but once read as 1, it cannot vanish again
    h = h + H((3, "invoke", "read", None), (3, "ok", "read", 0))[0:0] + [
        Op(index=6, time=6 * 10**8, process=3, type="invoke", f="read"),
        Op(index=7, time=7 * 10**8, process=3, type="ok", f="read", value=0)]
    assert verdict(h, "register", 0) is False
    # a write that never completed counts the same
    h = H((0, "invoke", "write", 1), (1, "invoke", "read", None), (1, "ok", "read", 1))
    assert verdict(h, "register", 0) is True


def test_info_write_cannot_take_effect_before_its_invocation() -> None:
    h = H((1, "invoke", "read", None), (1, "ok", "read", 1), (0, "invoke", "write", 1),
          (0, "info", "write", None))
    assert verdict(h, "register", 0) is False


def test_cas_with_unknown_outcome() -> None:
    base = ((0, "invoke", "cas", [0, 1]), (0, "info", "cas", None))
    assert verdict(H(*base, (1, "invoke", "read", None), (1, "ok", "read", 1)), "cas-register", 0) is True
    assert verdict(H(*base, (1, "invoke", "read", None), (1, "ok", "read", 0)), "cas-register", 0) is True
    assert verdict(H(*base, (1, "invoke", "read", None), (1, "ok", "read", 1),
                     (1, "invoke", "read", None), (1, "ok", "read", 0)), "cas-register", 0) is False
    # a failed cas did nothing
    h = H((0, "invoke", "cas", [0, 1]), (0, "fail", "cas", None), (1, "invoke", "read", None),
          (1, "ok", "read", 1))
    assert verdict(h, "cas-register", 0) is False


def test_partitions_by_key() -> None:
    h = H((0, "invoke", "write", 1, "x"), (0, "ok", "write", 1, "x"),
          (1, "invoke", "read", None, "y"), (1, "ok", "read", 1, "y"),
          (2, "invoke", "read", None, "x"), (2, "ok", "read", 1, "x"))
    res = check(h, "register", initial=0)
    assert res.valid is False and res.counts["partitions"] == 2
    (a,) = res.anomalies
    assert a.details["key"] == "y"
    assert res.details["partitions"] == {
        "'x'": {"valid": True, "steps": res.details["partitions"]["'x'"]["steps"], "operations": 2},
        "'y'": {"valid": False, "steps": res.details["partitions"]["'y'"]["steps"], "operations": 1}}


def test_other_models_hand_cases() -> None:
    kv = H((0, "invoke", "append", "x", "k"), (0, "ok", "append", None, "k"),
           (1, "invoke", "get", None, "k"), (1, "ok", "get", "", "k"))
    assert verdict(kv, "kv") is False
    assert verdict(H((0, "invoke", "get", None, "k"), (0, "ok", "get", None, "k")), "kv") is True
    s = H((0, "invoke", "add", 1), (1, "invoke", "add", 2), (0, "ok", "add", 1),
          (2, "invoke", "read", None), (2, "ok", "read", [2]), (1, "ok", "add", 2))
    assert verdict(s, "set") is False
    mu = H((0, "invoke", "acquire", None), (0, "ok", "acquire", None),
           (1, "invoke", "acquire", None), (1, "ok", "acquire", None))
    assert verdict(mu, "mutex") is False
    res = check(mu, "mutex")
    assert res.anomalies[0].explanation.endswith("the mutex can only be held here")
    mr = H((0, "invoke", "txn", [["w", "x", 1], ["w", "y", 1]]),
           (0, "ok", "txn", [["w", "x", 1], ["w", "y", 1]]),
           (1, "invoke", "txn", [["r", "x", None], ["r", "y", None]]),
           (1, "ok", "txn", [["r", "x", 1], ["r", "y", None]]))
    assert verdict(mr, "multi-register") is False


def test_identical_crashed_writes_are_interchangeable() -> None:
    events: list[tuple[Any, ...]] = []
    for p in range(20):
        events += [(p, "invoke", "write", 1), (p, "info", "write", None)]
    events += [(99, "invoke", "read", None), (99, "ok", "read", 2)]
    h = H(*events)
    with search_only():
        res = check(h, "register", initial=0)
    assert res.valid is False
    assert res.counts["steps"] < 100  # not 2^20


def hard_history(n: int = 14) -> list[Op]:
    """Many concurrent distinct writes, then an impossible read: the search
    must visit every (subset of writes, last write) configuration."""
    events: list[tuple[Any, ...]] = [(p, "invoke", "write", p) for p in range(n)]
    events += [(p, "ok", "write", p) for p in range(n)]
    events += [(99, "invoke", "read", None), (99, "ok", "read", 99)]
    events += [(99, "invoke", "write", 0), (99, "ok", "write", 0)]  # values not unique
    return H(*events)


def test_time_limit_gives_unknown() -> None:
    res = check(hard_history(), "register", initial=0, time_limit=0.05)
    assert res.valid == "unknown"
    assert res.reason is not None and "time limit" in res.reason and "model steps" in res.reason


def test_memory_limit_gives_unknown() -> None:
    res = check(hard_history(), "register", initial=0, memory_limit=10_000)
    assert res.valid == "unknown"
    assert res.reason is not None and "memory limit" in res.reason


def test_hard_history_without_limits_is_invalid() -> None:
    res = check(hard_history(8), "register", initial=0)
    assert res.valid is False
    assert res.anomalies[0].details["op"] == 16  # the read of 99
    assert len(res.anomalies[0].details["prefix"]) == 8
    assert len(res.anomalies[0].details["states"]) == 8  # whichever write came last


def test_errors_are_unknown_not_crashes() -> None:
    res = check(H((0, "invoke", "frobnicate", 1), (0, "ok", "frobnicate", 1)), "register")
    assert res.valid == "unknown" and res.reason is not None and "frobnicate" in res.reason
    res = check(H((0, "ok", "read", 1)), "register")  # a completion without invocation
    assert res.valid == "unknown"
    res = check([], "no-such-model")
    assert res.valid == "unknown" and "cas-register" in (res.reason or "")


def test_empty_and_crash_only_histories_are_valid() -> None:
    assert check([], "register").valid is True
    h = H((0, "invoke", "write", 1), (0, "info", "write", None))
    assert check(h, "cas-register").valid is True


def test_keyboard_interrupt_propagates() -> None:
    class Boom:
        name = "boom"

        def init(self) -> Any:
            raise KeyboardInterrupt

        def step(self, state: Any, op: Any) -> Any:
            return [state]

        def partition(self, op: Any) -> Any:
            return None

        def describe(self, state: Any) -> str:
            return ""

        def explain(self, op: Any) -> str:
            return ""

    with pytest.raises(KeyboardInterrupt):
        check(H((0, "invoke", "x", 1), (0, "ok", "x", 1)), Boom())


def test_unique_register_counterexamples_carry_the_search_prefix_and_states() -> None:
    # Unique writes take the O(n log n) path; the counterexample still shows
    # the longest linearizable prefix and the states before the failing read.
    from checkers.history import Op

    events = [
        (0, "invoke", "write", 1), (1, "invoke", "read", None), (0, "ok", "write", 1), (1, "ok", "read", 1),
        (2, "invoke", "write", 2), (2, "ok", "write", 2), (0, "invoke", "read", None), (0, "ok", "read", 2),
        (1, "invoke", "read", None), (1, "ok", "read", 1),
    ]
    ops = [Op(index=i, time=i, process=p, type=t, f=f, value=v) for i, (p, t, f, v) in enumerate(events)]
    result = check(ops, "register")
    assert result.valid is False
    details = result.anomalies[0].details
    assert details["op"] == 8
    assert len(details["prefix"]) == 4 and details["states"] == ["2"]


class _GenericCasRegister(model("cas-register").__class__):  # type: ignore[misc]
    """The same model seen through a subclass: the search then calls `step`
    instead of the precompiled register transitions."""


def _random_register_history(rng: Any, n: int) -> list[Op]:
    events: list[tuple[float, int, Op]] = []
    for i in range(n):
        f = rng.choice(["read", "write", "cas", "delete"])
        arg: Any = None if f in ("read", "delete") else rng.randrange(3) if f == "write" else [rng.randrange(3), rng.randrange(3)]
        start = rng.random() * 10
        outcome = rng.choice(["ok", "ok", "ok", "info", "fail"])
        result: Any = rng.choice([None, 0, 1, 2]) if f == "read" and outcome == "ok" else arg
        events.append((start, 0, Op(index=0, time=0, process=i, type="invoke", f=f, value=arg)))
        events.append((start + rng.random() * 4, 1, Op(index=0, time=0, process=i, type=outcome,  # type: ignore[arg-type]
                                                      f=f, value=result)))
    events.sort(key=lambda e: (e[0], e[1]))
    return [Op(index=k, time=k, process=o.process, type=o.type, f=o.f, value=o.value) for k, (_, _, o) in enumerate(events)]


def test_precompiled_register_transitions_agree_with_model_step() -> None:
    import random

    rng = random.Random(11)
    with search_only():
        for _ in range(400):
            h = _random_register_history(rng, rng.randrange(1, 10))
            for initial in (None, 0):
                fast = check(h, "cas-register", initial=initial)
                slow = check(h, _GenericCasRegister(initial))
                assert fast.valid == slow.valid
                assert fast.counts["steps"] == slow.counts["steps"]
                if fast.valid is False:
                    assert fast.anomalies[0].details == slow.anomalies[0].details


def _queue_ops(events: list[tuple[int, str, str, Any]]) -> list[Op]:
    return [Op(index=i, time=i, process=p, type=t, f=f, value=v) for i, (p, t, f, v) in enumerate(events)]  # type: ignore[arg-type]


def test_herlihy_wing_queue_examples() -> None:
    # H&W 1990, figure 1 (a): A enqueues x, B enqueues y concurrently with it,
    # then B dequeues x: linearizable (x before y).
    ok = _queue_ops([
        ("A", "invoke", "enqueue", "x"), ("B", "invoke", "enqueue", "y"),
        ("A", "ok", "enqueue", "x"), ("B", "ok", "enqueue", "y"),
        ("B", "invoke", "dequeue", None), ("B", "ok", "dequeue", "x"),
    ])
    assert check(ok, "queue").valid is True
    # Figure 1 (b): A enqueues x, then B enqueues y, strictly after; then A
    # dequeues y. Not linearizable: x was enqueued first and is still there.
    bad = _queue_ops([
        ("A", "invoke", "enqueue", "x"), ("A", "ok", "enqueue", "x"),
        ("B", "invoke", "enqueue", "y"), ("B", "ok", "enqueue", "y"),
        ("A", "invoke", "dequeue", None), ("A", "ok", "dequeue", "y"),
    ])
    result = check(bad, "queue")
    assert result.valid is False
    assert result.anomalies[0].details["states"] == ["['x', 'y']"]


# --- the pruned search against plain WGL and brute force, crash-heavy --------------

@contextmanager
def plain_wgl() -> Iterator[None]:
    """The search without its pruning: plain Wing & Gong + Lowe."""
    with mock.patch.object(lin, "_prune", False):
        yield


def _events(recs: list[dict[str, Any]]) -> list[tuple[int, int, int, str]]:
    """(time, 0 for an invocation and 1 for a completion, op, type) in time
    order: an invocation per drawn op, a completion unless its outcome is "none"."""
    events = []
    for j, r in enumerate(recs):
        events.append((r["start"], 0, j, "invoke"))
        if r["outcome"] != "none":
            events.append((r["end"], 1, j, r["outcome"]))
    return sorted(events)


def _history_of(recs: list[dict[str, Any]], *, read: str) -> list[Op]:
    """Drawn operations (f, key, arg, out, outcome, start, end) as a history
    in time order: an invocation each, and a completion unless the outcome
    is "none"; an ok `read` completes with what it read, other ok ops with
    their argument."""
    events = _events(recs)
    history = []
    for i, (t, _, j, typ) in enumerate(events):
        r = recs[j]
        value = r["arg"] if typ == "invoke" else r["out"] if r["f"] == read and typ == "ok" else \
            r["arg"] if typ == "ok" else None
        history.append(Op(index=i, time=t, process=j, type=typ, f=r["f"], key=r.get("key"),  # type: ignore[arg-type]
                          value=value))
    return history


@st.composite
def crashy_register_histories(draw: Any, max_ops: int = 11) -> tuple[list[Op], int]:
    """A cas-register run (values 0-2, initial 0) where many ops crash: a
    crashed op took effect at its point of the run, or never; its `info`
    (if any) may come at any time after its invocation. Optionally one ok
    read's value changed (often invalid then)."""
    n = draw(st.integers(1, max_ops))
    state = 0
    recs: list[dict[str, Any]] = []
    for k in range(n):
        f = draw(st.sampled_from(["read", "write", "cas"]))
        arg: Any = None if f == "read" else draw(V) if f == "write" else [draw(V), draw(V)]
        outcome = draw(st.sampled_from(["ok", "ok", "info", "info", "none", "lost"]))
        point = 10 * k + 5
        out: Any = None
        if outcome != "lost":  # took effect here
            if f == "read":
                out = state
            elif f == "write":
                state = arg
            elif arg[0] == state:
                state = arg[1]
            elif outcome == "ok":
                outcome = "fail"
        start = point - draw(st.integers(0, 40))
        end = point + draw(st.integers(0, 40))
        if outcome == "lost":  # never took effect: anywhere, crashed
            outcome = draw(st.sampled_from(["info", "none"]))
            start = draw(st.integers(-5, 10 * n + 5))
            end = start + draw(st.integers(0, 40))
        recs.append({"f": f, "arg": arg, "out": out, "outcome": outcome, "start": start, "end": end})
    if draw(st.booleans()):
        reads = [r for r in recs if r["f"] == "read" and r["outcome"] == "ok"]
        if reads:
            draw(st.sampled_from(reads))["out"] = draw(V)
    return _history_of(recs, read="read"), n


@settings(max_examples=400)
@given(data=st.data())
def test_pruned_search_agrees_with_plain_wgl_and_brute_force_on_crashed_ops(data: st.DataObject) -> None:
    h, _ = data.draw(crashy_register_histories())
    expected = brute(h, model("cas-register", 0))
    with search_only():
        pruned = check(h, "cas-register", initial=0)
    with plain_wgl():
        plain = check(h, "cas-register", initial=0)
    assert pruned.valid is plain.valid is expected, h
    if expected is False:
        assert pruned.anomalies[0].details["states"]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_pruned_search_agrees_with_plain_wgl_on_longer_histories(data: st.DataObject) -> None:
    h, _ = data.draw(crashy_register_histories(max_ops=30))
    with search_only():
        pruned = check(h, "cas-register", initial=0)
    with plain_wgl():
        plain = check(h, "cas-register", initial=0)
    assert pruned.valid is plain.valid, h


@pytest.mark.parametrize("name", sorted(SPECS))
@settings(max_examples=60)
@given(data=st.data())
def test_plain_wgl_agrees_with_brute_force(name: str, data: st.DataObject) -> None:
    h = data.draw(histories(name, mutate=True))
    initial = SPECS[name][3]
    with plain_wgl():
        res = check(h, name, initial=initial)
    assert res.valid is brute(h, model(name, initial))


def test_identical_crashed_cas_are_interchangeable() -> None:
    # 20 crashed cas [0, 1] and 20 crashed writes of 0, then reads that need
    # them to alternate: 0 -> 1 -> 0 -> 1 ...; only the counts matter.
    events: list[tuple[Any, ...]] = []
    for p in range(20):
        events += [(p, "invoke", "cas", [0, 1]), (p, "info", "cas", None)]
        events += [(100 + p, "invoke", "write", 0), (100 + p, "info", "write", None)]
    for k in range(6):
        events += [(200 + k, "invoke", "read", None), (200 + k, "ok", "read", k % 2)]
    h = H(*events)
    assert verdict(h, "cas-register", 0) is True
    with search_only():
        res = check(h, "cas-register", initial=0)
    assert res.counts["steps"] < 200
    bad = h + H((300, "invoke", "read", None), (300, "ok", "read", 2))
    bad = [Op(index=i, time=i, process=o.process, type=o.type, f=o.f, value=o.value) for i, o in enumerate(bad)]
    with search_only():
        res = check(bad, "cas-register", initial=0)
    assert res.valid is False and res.counts["steps"] < 500  # not 2^40 subsets


def test_valid_only_if_two_identical_info_writes_took_effect_around_a_cas() -> None:
    # write 1 (info) -> cas 1->2 (info) -> read 2 -> read 1: needs a second
    # write of 1 after the cas; with only one, invalid.
    one = [(0, "invoke", "write", 1), (0, "info", "write", None), (1, "invoke", "cas", [1, 2]),
           (1, "info", "cas", None), (2, "invoke", "read", None), (2, "ok", "read", 2),
           (2, "invoke", "read", None), (2, "ok", "read", 1)]
    assert verdict(H(*one), "cas-register", 0) is False
    two = [(9, "invoke", "write", 1), (9, "info", "write", None), *one]
    assert verdict(H(*two), "cas-register", 0) is True
    # the second write invoked only after the first read: still fine
    late = [*one[:6], (9, "invoke", "write", 1), (9, "info", "write", None), *one[6:]]
    assert verdict(H(*late), "cas-register", 0) is True
    # ... but not if it was invoked after the last read returned
    too_late = [*one, (9, "invoke", "write", 1), (9, "info", "write", None)]
    assert verdict(H(*too_late), "cas-register", 0) is False


def test_crashed_reads_and_cas_that_never_match_cost_nothing() -> None:
    # 40 crashed reads and 40 crashed cas whose expected value (7) is never
    # written: none can change the state, so none is ever linearized.
    events: list[tuple[Any, ...]] = []
    for p in range(40):
        events += [(p, "invoke", "read", None), (p, "info", "read", None)]
        events += [(100 + p, "invoke", "cas", [7, p % 3]), (100 + p, "info", "cas", None)]
    for k in range(10):
        events += [(200, "invoke", "write", k % 3), (200, "ok", "write", k % 3),
                   (201, "invoke", "read", None), (201, "ok", "read", k % 3)]
    h = H(*events)
    with search_only():
        res = check(h, "cas-register", initial=0)
    assert res.valid is True
    assert res.counts["steps"] < 100  # 20 completed ops, 4 classes of crashed ones
    with plain_wgl():
        assert check(h, "cas-register", initial=0).valid is True
    bad = h + H((300, "invoke", "read", None), (300, "ok", "read", 7))
    bad = [Op(index=i, time=i, process=o.process, type=o.type, f=o.f, value=o.value) for i, o in enumerate(bad)]
    with search_only():
        res = check(bad, "cas-register", initial=0)
    assert res.valid is False and res.counts["steps"] < 200


def test_covered_configurations_are_skipped() -> None:
    # Ten distinct crashed writes, then completed reads each of which one of
    # them explains. Plain WGL tries subsets of the writes; the pruned search
    # linearizes a crashed write only when a read needs it.
    events: list[tuple[Any, ...]] = []
    for p in range(10):
        events += [(p, "invoke", "write", p), (p, "info", "write", None)]
    for v in (3, 5, 9, 1, 4):
        events += [(50, "invoke", "read", None), (50, "ok", "read", v)]
    events += [(51, "invoke", "read", None), (51, "ok", "read", 42)]  # impossible
    h = H(*events)
    with search_only():
        pruned = check(h, "register", initial=0)
    with plain_wgl():
        plain = check(h, "register", initial=0)
    assert pruned.valid is plain.valid is False
    assert pruned.counts["steps"] * 20 < plain.counts["steps"]


def test_read_of_nil_means_the_initial_value_on_every_path() -> None:
    # A read of None reads the initial value (an absent key). The unique-
    # register path does not know that rule, so such parts go to the search.
    h = H((0, "invoke", "write", 1), (0, "ok", "write", 1), (1, "invoke", "read", None), (1, "ok", "read", None))
    assert check(h, "register", initial=1).valid is True  # None: the initial 1, which 1 overwrote
    assert check(h, "register", initial=0).valid is False
    h = H((1, "invoke", "read", None), (1, "ok", "read", None), (0, "invoke", "write", 1), (0, "ok", "write", 1))
    assert check(h, "register", initial=0).valid is True
    assert check(h, "register").valid is True


def test_a_register_subclass_named_register_is_searched_not_fast_pathed() -> None:
    """The unique-value fast path is chosen by the model's class, not its
    name: a subclass that steps differently must get the search."""

    class EveryReadGoes(model("register").__class__):  # type: ignore[misc]
        name = "register"

        def step(self, state: Any, op: Any) -> Any:
            return [state] if op.f == "read" else super().step(state, op)

    # a read of a value nobody wrote: not linearizable for a register,
    # fine for a model whose reads accept anything
    h = H((0, "invoke", "write", "a"), (0, "ok", "write", "a"), (1, "invoke", "read", None),
          (1, "ok", "read", "zzz"))
    assert check(h, "register").valid is False
    assert check(h, EveryReadGoes()).valid is True


def test_a_model_is_not_changed_by_a_check() -> None:
    m = model("register", 5)
    before = dict(vars(m))
    h = H((0, "invoke", "write", 1), (0, "ok", "write", 1), (1, "invoke", "read", None), (1, "ok", "read", 1))
    assert check(h, m).valid is True
    assert check(h, m).valid is True
    assert vars(m) == before


# --- deletes: a write of the initial value ---------------------------------------------------

def test_delete_writes_the_initial_value() -> None:
    # write 1, delete, then a read of None (the initial value: the key is absent) is fine ...
    h = H((0, "invoke", "write", 1, "k"), (0, "ok", "write", 1, "k"), (1, "invoke", "delete", None, "k"),
          (1, "ok", "delete", None, "k"), (2, "invoke", "read", None, "k"), (2, "ok", "read", None, "k"))
    assert verdict(h, "register") is True
    assert check(h, "register").valid is True
    # ... and a read of 1 after the delete completed is not
    stale = [*h[:4], Op(index=4, time=4 * 10**8, process=2, type="invoke", f="read", key="k"),
             Op(index=5, time=5 * 10**8, process=2, type="ok", f="read", value=1, key="k")]
    assert verdict(stale, "register") is False
    res = check(stale, "register")
    assert res.valid is False
    assert "read of 1 on key 'k' by process 2" in res.anomalies[0].explanation
    assert "can only hold None here" in res.anomalies[0].explanation
    # a delete concurrent with the read may come after it
    h = H((0, "invoke", "write", 1), (0, "ok", "write", 1), (1, "invoke", "delete", None),
          (2, "invoke", "read", None), (2, "ok", "read", 1), (1, "ok", "delete", None))
    assert verdict(h, "register") is True
    # an info delete may take effect, or not
    h = H((0, "invoke", "write", 1), (0, "ok", "write", 1), (1, "invoke", "delete", None),
          (1, "info", "delete", None), (2, "invoke", "read", None), (2, "ok", "read", None),
          (3, "invoke", "read", None), (3, "ok", "read", 1))
    assert verdict(h, "register") is False  # gone, then back: only one write of 1
    assert verdict(h[:6], "register") is True


def test_unique_writes_with_deletes_take_the_search() -> None:
    # Unique written values, but a delete writes None again: not Gibbons-Korach's case.
    h = H((0, "invoke", "write", "a"), (0, "ok", "write", "a"), (1, "invoke", "delete", None),
          (1, "ok", "delete", None), (2, "invoke", "write", "b"), (2, "ok", "write", "b"),
          (3, "invoke", "delete", None), (3, "ok", "delete", None), (4, "invoke", "read", None),
          (4, "ok", "read", None))
    ops = complete(pair(h))
    assert not lin._unique_writes(ops, model("register"))
    with mock.patch.object(lin, "_unique_register") as fast:
        assert check(h, "register").valid is True
    fast.assert_not_called()
    bad = [*h[:8], Op(index=8, time=0, process=4, type="invoke", f="read"),
           Op(index=9, time=0, process=4, type="ok", f="read", value="a")]
    assert check(bad, "register").valid is False


# --- limits for the whole check (issue 16) -----------------------------------


def _invalid_key_then_hard_key(n: int = 18) -> list[Op]:
    """Key "a": one impossible read (found at once); key "b": `hard_history`
    on its own key, whose search visits some 2^n configurations."""
    bad = [(0, "invoke", "write", 1, "a"), (0, "ok", "write", 1, "a"),
           (1, "invoke", "read", None, "a"), (1, "ok", "read", 2, "a")]
    hard = [(e.process + 10 if isinstance(e.process, int) else e.process, e.type, e.f, e.value, "b")
            for e in hard_history(n)]
    return H(*bad, *hard)


def test_an_invalid_key_ends_the_check_without_a_time_limit() -> None:
    h = _invalid_key_then_hard_key()
    searched: list[int] = []
    real = lin._search_part

    def spy(ops: list[Any], m: Any, budget: Any) -> Any:
        searched.append(len(ops))
        return real(ops, m, budget)

    with mock.patch.object(lin, "_search_part", spy):
        res = check(h, "register", initial=0, all_keys=False)
    assert res.valid is False and searched == [2]  # key "b" (20 operations) never searched
    assert res.details["not_checked"] == ["'b'"] and res.counts["not_checked"] == 1
    assert res.reason is not None and "not checked" in res.reason and "'b'" in res.reason
    assert check(H(*[(o.process, o.type, o.f, o.value, o.key) for o in h[:4]]), "register", initial=0,
                 all_keys=False).details.get("not_checked") is None


def test_after_an_invalid_key_the_others_are_searched_while_time_is_left() -> None:
    res = check(_invalid_key_then_hard_key(), "register", initial=0, all_keys=False, time_limit=0.3)
    assert res.valid is False  # not unknown: the verdict was known before time ran out
    assert res.details["not_checked"] == ["'b'"]
    small = check(_invalid_key_then_hard_key(4), "register", initial=0, all_keys=False, time_limit=30)
    assert small.valid is False and "not_checked" not in small.details  # time enough for "b"
    assert small.details["partitions"]["'b'"]["valid"] is False


def test_all_keys_is_the_default_of_the_library() -> None:
    res = check(_invalid_key_then_hard_key(4), "register", initial=0)
    assert set(res.details["partitions"]) == {"'a'", "'b'"} and "not_checked" not in res.details


def test_the_counterexample_search_after_the_fast_path_keeps_to_the_time_limit() -> None:
    # Unique writes: the O(n log n) path finds it invalid; the search that
    # draws the counterexample must not take its own 5 s past a 0.2 s limit.
    h = H((0, "invoke", "write", 1), (0, "ok", "write", 1), (1, "invoke", "read", None), (1, "ok", "read", 2))
    deadlines: list[float | None] = []

    def spy(ops: list[Any], m: Any, budget: Any) -> Any:
        deadlines.append(budget.deadline)
        raise lin._LimitReached("stopped by the test")

    import time as time_module

    start = time_module.monotonic()
    with mock.patch.object(lin, "_search_part", spy):
        res = check(h, "register", initial=0, time_limit=0.2)
    assert res.valid is False and len(deadlines) == 1
    assert deadlines[0] is not None and deadlines[0] <= start + 0.2 + 0.05


def test_memory_limit_counts_what_the_process_grows_by() -> None:
    # The memo estimate stays far under the limit; the process's resident
    # memory (here made to grow 1 MiB a reading) is what passes it.
    grown = iter(range(0, 10**9, 2**20))
    with mock.patch.object(lin, "_rss", lambda: next(grown)):
        res = check(hard_history(), "register", initial=0, memory_limit=20 * 2**20)
    assert res.valid == "unknown"
    assert res.reason is not None and "memory limit" in res.reason and "process grew by" in res.reason


# --- the kv model (append strings): pruned search against brute force and plain WGL --

KV_ARGS = st.sampled_from(["x", "y", "xy", "", None])
KV_READS = st.sampled_from([None, "", "x", "y", "xx", "xy", "yx", "xyx", "yxy", "xxy", 0])


@st.composite
def crashy_kv_histories(draw: Any, max_ops: int = 10, keys: tuple[str, ...] = ("k",)) -> list[Op]:
    """A run of a key-value store of strings (append-heavy, short and
    repeating arguments, so that one string is a prefix of another): an op
    took effect at its point of the run, or (crashed) never; an ok get reads
    what its point holds. Sometimes one get's value is changed (often invalid
    then), or one op's kind swapped."""
    n = draw(st.integers(1, max_ops))
    store: dict[str, str] = {}
    recs: list[dict[str, Any]] = []
    for k in range(n):
        f = draw(st.sampled_from(["append", "append", "append", "put", "get", "get"]))
        key = draw(st.sampled_from(keys))
        arg = None if f == "get" else draw(KV_ARGS)
        outcome = draw(st.sampled_from(["ok", "ok", "ok", "ok", "info", "none", "lost"]))
        point = 10 * k + 5
        out: Any = None
        if outcome != "lost":
            if f == "get":
                out = store.get(key, "") or draw(st.sampled_from(["", None]))  # nil reads as ""
            elif f == "put":
                store[key] = arg or ""
            else:
                store[key] = store.get(key, "") + (arg or "")
        start = point - draw(st.integers(0, 40))
        end = point + draw(st.integers(0, 40))
        if outcome == "lost":
            outcome = draw(st.sampled_from(["info", "none"]))
            start = draw(st.integers(-5, 10 * n + 5))
            end = start + draw(st.integers(0, 40))
        recs.append({"f": f, "key": key, "arg": arg, "out": out, "outcome": outcome, "start": start, "end": end})
    victims = [r for r in recs if r["outcome"] == "ok"]
    if victims and draw(st.booleans()):
        r = draw(st.sampled_from(victims))
        if r["f"] == "get":
            r["out"] = draw(KV_READS)
        else:
            r["f"] = "put" if r["f"] == "append" else "append"
    return _history_of(recs, read="get")


KV_INITIAL = st.sampled_from([None, {"k": "x"}, {"k": "", "j": "y"}])


@settings(max_examples=400, deadline=None)
@given(h=crashy_kv_histories(), initial=KV_INITIAL)
def test_kv_search_agrees_with_plain_wgl_and_brute_force(h: list[Op], initial: Any) -> None:
    expected = brute(h, model("kv", initial))
    pruned = check(h, "kv", initial=initial)
    with plain_wgl():
        plain = check(h, "kv", initial=initial)
    assert pruned.valid is plain.valid is expected, h
    if expected is False:
        (a,) = pruned.anomalies
        indexes = {o["index"] for o in a.details["operations"]}
        assert a.details["op"] in indexes and set(a.details["prefix"]) <= indexes
        assert a.details["states"]


@settings(max_examples=150, deadline=None)
@given(h=crashy_kv_histories(max_ops=30, keys=("k", "j")), initial=KV_INITIAL)
def test_kv_search_agrees_with_plain_wgl_on_longer_histories(h: list[Op], initial: Any) -> None:
    pruned = check(h, "kv", initial=initial)
    with plain_wgl():
        plain = check(h, "kv", initial=initial)
    assert pruned.valid is plain.valid, h


@settings(max_examples=600, deadline=None)
@given(h=crashy_kv_histories(max_ops=24), initial=KV_INITIAL)
def test_kv_search_agrees_with_plain_wgl_on_one_busy_key(h: list[Op], initial: Any) -> None:
    # Many ops on one key: states that no get left reads, memoized as one.
    pruned = check(h, "kv", initial=initial)
    with plain_wgl():
        plain = check(h, "kv", initial=initial)
    assert pruned.valid is plain.valid, h


def test_kv_values_that_are_not_plain_strings_take_the_generic_step() -> None:
    class Text(str):
        pass

    h = H((0, "invoke", "append", "x", "k"), (1, "invoke", "get", None, "k"), (0, "ok", "append", "x", "k"),
          (1, "ok", "get", Text("x"), "k"), (2, "invoke", "get", None, "k"), (2, "ok", "get", 7, "k"))
    assert verdict(h, "kv") is False
    assert verdict(h[:4], "kv") is True
    assert lin._kv_part(complete(pair(h[:4])), model("kv")) is None
