"""The sequential models: step semantics with known and unknown outputs."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from checkers.history import Op, Operation
from checkers.models import MODELS, Model, model


def op(f: str, value: Any = None, result: Any = None, *, outcome: str = "ok",
       key: Any = None, process: int = 0) -> Operation:
    inv = Op(index=0, time=0, process=process, type="invoke", f=f, key=key, value=value)
    if outcome == "none":
        return Operation(invoke=inv, completion=None)
    comp = Op(index=1, time=1, process=process, type=outcome, f=f, key=key,  # type: ignore[arg-type]
              value=result if outcome == "ok" else None)
    return Operation(invoke=inv, completion=comp)


def steps(m: Model, state: Any, o: Operation) -> list[Any]:
    return list(m.step(state, o))


def test_registry() -> None:
    assert set(MODELS) == {"register", "cas-register", "multi-register", "kv", "set", "mutex", "queue"}
    for name in MODELS:
        m = model(name)
        assert m.name == name
        assert isinstance(m, Model)
        hash(m.init())
    with pytest.raises(ValueError, match="cas-register"):
        model("stack")


def test_register() -> None:
    m = model("register", 0)
    s = m.init()
    assert steps(m, s, op("write", 3, 3)) == [3]
    assert steps(m, s, op("read", None, 0)) == [0]
    assert steps(m, s, op("read", None, None)) == [0]  # None reads as the initial value
    assert steps(m, s, op("read", None, 1)) == []
    assert steps(m, 5, op("read", outcome="info")) == [5]
    assert steps(m, 5, op("write", 2, outcome="none")) == [2]
    assert steps(m, s, op(":write", [1, 2], [1, 2])) == [(1, 2)]  # lists freeze
    assert m.partition(op("read", key="x")) == "x"
    assert m.describe(2) == "2"
    assert m.explain(op("read", None, 3, process=4)) == "read of 3 by process 4"
    with pytest.raises(ValueError):
        steps(m, s, op("cas", [0, 1], [0, 1]))


def test_cas_register() -> None:
    m = model("cas-register")
    s = m.init()
    assert steps(m, s, op("cas", [None, 1], [None, 1])) == [1]
    assert steps(m, 1, op("cas", [1, 2], [1, 2])) == [2]
    assert steps(m, 0, op("cas", [1, 2], [1, 2])) == []
    # unknown outcome: applies when the compare matches, else a no-op
    assert steps(m, 1, op("cas", [1, 2], outcome="info")) == [2]
    assert steps(m, 0, op("cas", [1, 2], outcome="info")) == [0]
    assert steps(m, 4, op("write", 7, 7)) == [7]
    assert steps(m, 4, op("read", None, 4)) == [4]


def test_multi_register() -> None:
    m = model("multi-register")
    s = m.init()
    w = op("txn", [["w", "x", 1], [":write", ":y", 2]], [["w", "x", 1], [":write", ":y", 2]])
    (s1,) = steps(m, s, w)
    assert dict(s1) == {"x": 1, ":y": 2}
    assert steps(m, s1, op("txn", [["read", "x", None]], [["read", "x", 1]])) == [s1]
    assert steps(m, s1, op("txn", [["r", "x", None]], [["r", "x", 2]])) == []
    assert steps(m, s1, op("txn", [[":read", "z", None]], [[":read", "z", None]])) == [s1]
    # a read then a write in one transaction; unknown output: reads ignored
    (s2,) = steps(m, s1, op("txn", [["r", "x", None], ["w", "x", 5]], outcome="info"))
    assert dict(s2)["x"] == 5
    assert m.describe(s1) == "{:y=2, x=1}"
    with pytest.raises(ValueError):
        steps(m, s, op("txn", [["inc", "x", 1]], [["inc", "x", 1]]))


def test_kv() -> None:
    m = model("kv")
    s = m.init()
    assert steps(m, s, op("get", None, "", key="a")) == [s]
    assert steps(m, s, op("get", None, None, key="a")) == [s]
    (s1,) = steps(m, s, op("put", "x", None, key="a"))
    (s2,) = steps(m, s1, op("append", "y", None, key="a"))
    assert steps(m, s2, op("get", None, "xy", key="a")) == [s2]
    assert steps(m, s2, op("get", None, "x", key="a")) == []
    assert steps(m, s2, op("get", None, "", key="b")) == [s2]
    assert steps(m, s2, op("get", outcome="info", key="a")) == [s2]
    assert m.partition(op("get", key="a")) == "a"
    assert m.describe(s2) == "'xy'"


def test_set() -> None:
    m = model("set")
    s = m.init()
    (s1,) = steps(m, s, op("add", 1, None))
    (s2,) = steps(m, s1, op("add", 2, None, outcome="info"))
    assert steps(m, s2, op("read", None, [2, 1])) == [s2]
    assert steps(m, s2, op("read", None, [1])) == []
    assert steps(m, s2, op("read", outcome="none")) == [s2]
    assert m.describe(s2) == "{1, 2}"


def test_mutex() -> None:
    m = model("mutex")
    s = m.init()
    assert steps(m, s, op("acquire")) == [True]
    assert steps(m, True, op("acquire")) == []
    assert steps(m, True, op("release")) == [False]
    assert steps(m, False, op("release")) == []
    assert steps(m, False, op("acquire", outcome="info")) == [True]
    assert m.describe(True) == "held"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_step_does_not_mutate(name: str) -> None:
    m = model(name)
    s = m.init()
    before = hash(s)
    for o in [op("read", None, None), op("write", 1, 1), op("add", 1), op("acquire"),
              op("get", None, "", key="k"), op("put", "v", key="k"),
              op("txn", [["w", "x", 1]], [["w", "x", 1]])]:
        with contextlib.suppress(ValueError):
            list(m.step(s, o))
    assert hash(s) == before
