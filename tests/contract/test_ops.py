"""The operation records: what a completion from user code must be."""

from __future__ import annotations

from typing import Any

import pytest

from contract import Completion, Invocation, completion_problem


def test_records_take_type_and_value_by_position_and_the_rest_by_keyword() -> None:
    c = Completion("ok", ["a"], error=None, extra={"obs": []}, context=b"ctx")
    assert (c.type, c.value, c.context) == ("ok", ["a"], b"ctx")
    assert Invocation("write", "k", "v", extra={"obs": ["u"]}).extra == {"obs": ["u"]}
    with pytest.raises(TypeError):
        Completion("ok", ["a"], "an error", {})  # type: ignore[misc]


@pytest.mark.parametrize("completion", [Completion("ok", []), Completion("fail", error="refused"),
                                        Completion("info", error="timeout"), Completion("ok")])
def test_completions_of_the_three_types_pass(completion: Completion) -> None:
    assert completion_problem(completion) is None


@pytest.mark.parametrize("completion, problem", [
    (Completion("success", ["x"]), "type 'success'"),  # type: ignore[arg-type]
    ({"type": "ok"}, "returned dict"),
    (None, "returned NoneType"),
    (Completion("fail", error=404), "error that is not text"),  # type: ignore[arg-type]
    (Completion("ok", extra=[1]), "not a dict"),  # type: ignore[arg-type]
])
def test_anything_else_is_named(completion: Any, problem: str) -> None:
    said = completion_problem(completion)
    assert said is not None and problem in said
