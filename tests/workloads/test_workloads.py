"""The workloads' generators: key cycling bounds, read-modify-writes that
carry the right context and `obs`, and the cart's view as a register."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from checkers import siblings
from checkers.history import Op
from contract import Claim, Completion, Invocation, Promise
from workloads.base import WorkloadOptions, judge
from workloads.cart import CartWorkload, as_register
from workloads.keys import KeySchedule
from workloads.register import RegisterWorkload, single_values


@given(concurrency=st.integers(1, 20), max_ops=st.integers(1, 200), active=st.integers(1, 8),
       ops=st.lists(st.integers(0, 19), max_size=400), seed=st.integers(0, 2**16))
@settings(max_examples=60)
def test_no_key_takes_more_than_its_bound(concurrency: int, max_ops: int, active: int, ops: list[int],
                                          seed: int) -> None:
    keys = KeySchedule.for_writes(concurrency=concurrency, max_ops_per_key=max_ops, active=active)
    rngs = [random.Random(seed + w) for w in range(concurrency)]
    done = [0] * concurrency
    per_key: Counter[str] = Counter()
    for w in ops:  # an arbitrary interleaving of the workers
        w %= concurrency
        per_key[keys.key(done[w], rngs[w])] += 1
        done[w] += 1
    assert all(n <= concurrency * keys.ops_per_generation for n in per_key.values())
    assert set(keys.used_keys()) == set(per_key)


def test_the_same_seed_gives_every_worker_the_same_keys() -> None:
    def run() -> list[str]:
        keys = KeySchedule(active=3, ops_per_generation=5)
        rng = random.Random(7)
        return [keys.key(i, rng) for i in range(40)]

    first = run()
    assert first == run()
    assert len(set(first)) > 3  # keys retire and fresh ones come


def _register() -> RegisterWorkload:
    return RegisterWorkload(WorkloadOptions(concurrency=2, active_keys=1, max_ops_per_key=1000))


def test_a_read_modify_write_carries_the_last_reads_values_and_context() -> None:
    w = _register().worker(0, random.Random(3))
    seen_rmw = False
    for _ in range(200):
        op = w.next()
        if op.f == "read":
            w.completed(op, Completion("ok", ["a", "b"], context=b"ctx"))
        elif op.extra.get("obs") is not None:
            assert op.extra["obs"] == ["a", "b"] and op.context == b"ctx"
            seen_rmw = True
            w.completed(op, Completion("ok", op.value))
        else:
            assert op.context is None  # a blind write
            w.completed(op, Completion("ok", op.value))
    assert seen_rmw


def test_written_values_are_unique_and_a_new_process_forgets_what_it_read() -> None:
    w = _register().worker(4, random.Random(1))
    values = []
    for _ in range(300):
        op = w.next()
        if op.f == "write":
            values.append(op.value)
        if op.f == "read":
            w.completed(op, Completion("ok", ["x"], context=b"c"))
            w.new_process()
        else:
            w.completed(op, Completion("ok", op.value))
    assert len(values) == len(set(values)) and all(v.startswith("4.") for v in values)
    # every read was forgotten at once: no write ever carried a context
    w2 = _register().worker(4, random.Random(1))
    for _ in range(300):
        op = w2.next()
        if op.f == "read":
            w2.completed(op, Completion("ok", ["x"], context=b"c"))
            w2.new_process()
        else:
            assert op.context is None


def _op(i: int, process: int, type: str, f: str, key: str = "k", value: object = None, **extra: object) -> Op:
    return Op(index=i, time=i, process=process, type=type, f=f, key=key, value=value, extra=dict(extra))


def test_the_cart_as_a_register_turns_adds_into_writes_of_their_carts() -> None:
    history = [
        _op(0, 0, "invoke", "add", value="a"),
        _op(1, 0, "ok", "add", value="a", obs=[], wrote=["a"]),
        _op(2, 1, "invoke", "add", value="b"),
        _op(3, 1, "ok", "add", value="b", obs=[["a"]], wrote=["a", "b"]),
        _op(4, 2, "invoke", "add", value="c"),
        _op(5, 2, "fail", "add", value="c"),  # its read failed: wrote nothing
        _op(6, 3, "invoke", "read", final=True),
        _op(7, 3, "ok", "read", value=["a", "b"], siblings=[["a", "b"]], final=True),
    ]
    reg = as_register(history)
    assert [(o.f, o.type) for o in reg] == [("write", "invoke"), ("write", "ok"), ("write", "invoke"),
                                            ("write", "ok"), ("read", "invoke"), ("read", "ok")]
    assert [o.index for o in reg] == list(range(6))
    assert reg[2].value == ["a", "b"] and reg[2].extra["obs"] == [["a"]]
    assert reg[5].value == [["a", "b"]]
    result = siblings.check(reg, n=3, w=2, r=2)
    assert result.valid is True, result.anomalies
    # the carts each add read are its causal past: a final read of only the
    # first cart loses the second add
    lost = [*history[:6], _op(6, 3, "invoke", "read", final=True),
            _op(7, 3, "ok", "read", value=["a"], siblings=[["a"]], final=True)]
    assert siblings.check(as_register(lost), n=3, w=2, r=2).valid is False
    workload = CartWorkload(WorkloadOptions())
    promise = Promise(claims=(Claim(name="siblings", params={"n": 3, "w": 2, "r": 2}), Claim(name="no-lost-adds")))
    results = {r.checker: r for r in judge(lost, workload.checks(promise))}
    assert results["set"].valid is False
    # the sibling checker's anomalies name operations of the recorded history
    # (the failed add at 4-5 is not in the register view, so indexes differ)
    named = {i for a in results["siblings"].anomalies for i in a.ops}
    assert named and named <= {2, 3, 6, 7} and 3 in named


def test_single_values_turns_reads_into_a_plain_registers() -> None:
    history = [_op(0, 0, "invoke", "read"), _op(1, 0, "ok", "read", value=["v1"]),
               Op(index=2, time=2, process="nemesis", type="info", f="start-partition"),
               _op(3, 1, "invoke", "read"), _op(4, 1, "ok", "read", value=[]),
               _op(5, 2, "invoke", "read"), _op(6, 2, "ok", "read", value=["a", "b"])]
    out = single_values(history)
    assert [o.value for o in out if o.type == "ok"] == ["v1", None, ["a", "b"]]
    # every op keeps its index: anomalies name lines of the recorded history
    assert [o.index for o in out] == [o.index for o in history]


# -- deletes and mixes ---------------------------------------------------------------------

def _drive(workload: RegisterWorkload | CartWorkload, ops: int, seed: int = 5) -> list[Invocation]:
    """`ops` operations from two workers, every one completing ok (a read
    returns one value and a context)."""
    out: list[Invocation] = []
    workers = [workload.worker(i, random.Random(seed + i)) for i in range(2)]
    for n in range(ops):
        w = workers[n % 2]
        op = w.next()
        out.append(op)
        w.completed(op, Completion("ok", ["x"], context=b"c") if op.f == "read" else Completion("ok", op.value))
    return out


def test_deletes_with_and_without_context_by_default() -> None:
    ops = _drive(RegisterWorkload(WorkloadOptions(concurrency=2, active_keys=1)), 2000)
    deletes = [o for o in ops if o.f == "delete"]
    assert 0.05 < len(deletes) / len(ops) < 0.11
    with_context = [o for o in deletes if o.context is not None]
    assert 0.3 < len(with_context) / len(deletes) < 0.7
    assert all(o.value is None and o.extra == {"obs": ["x"]} and o.context == b"c" for o in with_context)
    assert all(o.extra == {} for o in deletes if o.context is None)
    # a delete makes the read's context stale, as a write does: the next delete or rmw reads first
    w = _register().worker(0, random.Random(2))
    w.completed(Invocation("read", "k0"), Completion("ok", ["x"], context=b"c"))
    w.completed(Invocation("delete", "k0"), Completion("ok"))
    assert w.last == {}


def test_deletes_can_be_turned_off() -> None:
    ops = _drive(RegisterWorkload(WorkloadOptions(concurrency=2, deletes=0)), 1000)
    assert not any(o.f == "delete" for o in ops)
    more = _drive(RegisterWorkload(WorkloadOptions(concurrency=2, deletes=0.5)), 1000)
    assert 0.3 < sum(o.f == "delete" for o in more) / len(more) < 0.6  # a share of the decisions: pairs add reads


def test_validate_accepts_an_ok_delete_without_a_value() -> None:
    workload = _register()
    delete = Invocation("delete", "k", None)
    assert workload.validate(delete, Completion("ok")) is None
    assert "no value" in str(workload.validate(delete, Completion("ok", "1.1")))


def test_read_mostly_mix_reads_at_least_80_percent() -> None:
    for workload in (RegisterWorkload(WorkloadOptions(concurrency=2, mix="read-mostly")),
                     CartWorkload(WorkloadOptions(concurrency=2, mix="read-mostly"))):
        ops = _drive(workload, 400)
        assert sum(o.f == "read" for o in ops) / len(ops) >= 0.8, workload.name


def test_contention_mix_is_mostly_writes() -> None:
    ops = _drive(RegisterWorkload(WorkloadOptions(concurrency=2, active_keys=1, mix="contention")), 1000)
    kinds = Counter(o.f for o in ops)
    assert kinds["write"] + kinds["delete"] > 0.55 * len(ops)
    rmw = sum(1 for o in ops if o.f == "write" and o.context is not None)
    assert rmw > 0.3 * len(ops)  # most reads are the first halves of read-modify-writes
    cart = _drive(CartWorkload(WorkloadOptions(concurrency=2, active_keys=1, mix="contention")), 400)
    assert sum(o.f == "add" for o in cart) > 0.9 * len(cart)


def test_a_bad_mix_or_share_of_deletes_is_refused() -> None:
    for bad in ({"mix": "write-heavy"}, {"deletes": 1.0}, {"deletes": -0.1}):
        try:
            WorkloadOptions(**bad)  # type: ignore[arg-type]
        except ValueError as e:
            assert "mix" in str(e) or "deletes" in str(e)
        else:
            raise AssertionError(f"{bad} accepted")


def test_a_read_then_write_pair_stays_on_the_key_read() -> None:
    w = RegisterWorkload(WorkloadOptions(concurrency=2, active_keys=4, max_ops_per_key=1000)).worker(
        0, random.Random(9))
    pairs = 0
    previous: Invocation | None = None
    for _ in range(500):
        op = w.next()
        if op.context is not None:
            assert op.extra["obs"] == [f"seen {op.key}"]
            if previous is not None and previous.f == "read" and previous.key == op.key:
                pairs += 1
        w.completed(op, Completion("ok", [f"seen {op.key}"], context=op.key) if op.f == "read"
                    else Completion("ok", op.value))
        previous = op
    assert pairs > 50
