"""Anomaly sentences stay sentences: values are shown whole when short, and
counted and sampled when long (a cart of 127 items is not printed five times)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from checkers import text


def test_short_values_are_shown_whole() -> None:
    assert text.short("3.4") == "'3.4'"
    assert text.values(["b", "a"]) == "['a', 'b']"


def test_a_long_collection_is_counted_with_its_ends() -> None:
    cart = tuple(f"{i}.{j}" for i in range(9) for j in range(14))
    shown = text.short(cart)
    assert shown.startswith(f"{len(cart)} values ('0.0'") and shown.endswith("'8.13')")


@given(st.recursive(st.text() | st.integers() | st.none(),
                    lambda inner: st.lists(inner) | st.tuples(inner, inner), max_leaves=60))
def test_short_is_bounded(value: object) -> None:
    assert len(text.short(value)) <= 2 * text.LIMIT + 30


def test_identical_final_reads_are_said_once() -> None:
    big = frozenset(f"v{i}" for i in range(127))
    phrase = text.final_reads([(f"n{i}", big) for i in range(1, 6)])
    assert phrase == "5 final reads, identical, 127 values each"


def test_divergent_final_reads_are_grouped_by_content() -> None:
    a, b = frozenset({"x", "y"}), frozenset({"x"})
    phrase = text.final_reads([("n1", a), ("n2", a), ("n3", b)])
    assert phrase == "3 final reads: n1 n2 return ['x', 'y']; n3 returns ['x']"
