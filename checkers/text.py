"""Values as an anomaly sentence shows them: whole when short, else counted
and sampled, so that a sentence stays a sentence. The anomaly's details (and
the report) keep the values in full."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

LIMIT = 48  # characters of one value's repr shown in full


def short(value: Any, limit: int = LIMIT) -> str:
    """repr(value) if short; a collection as '47 values ('0.67' … '7.74')';
    anything else cut with an ellipsis."""
    text = repr(value)
    if len(text) <= limit:
        return text
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value) if isinstance(value, list | tuple) else sorted(value, key=repr)
        if len(items) > 1:
            return f"{len(items)} values ({_cut(repr(items[0]), 16)} … {_cut(repr(items[-1]), 16)})"
    return _cut(text, limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def values(vals: Iterable[Hashable], limit: int = 60) -> str:
    """A set of values read: "['a', 'b']" when short, else '127 values'."""
    items = sorted(vals, key=repr)
    text = "[" + ", ".join(short(v) for v in items) + "]"
    return text if len(text) <= limit else f"{len(items)} values"


def final_reads(per_node: Sequence[tuple[str, frozenset[Hashable]]]) -> str:
    """'5 final reads, identical: ['a']', '5 final reads, identical, 127
    values each', or '5 final reads: n1 n2 n3 return 127 values; n4 n5
    return 126 values'."""
    n = len(per_node)
    reads = f"{n} final read{'s' if n != 1 else ''}"
    groups: dict[frozenset[Hashable], list[str]] = {}
    for node, vals in per_node:
        groups.setdefault(vals, []).append(node)
    if len(groups) == 1:
        (vals,) = groups
        shown = values(vals)
        if n == 1:
            return f"{reads}, via {per_node[0][0]}: {shown}"
        if shown.startswith("["):
            return f"{reads}, identical: {shown}"
        return f"{reads}, identical, {len(vals)} values each"
    said = "; ".join(f"{' '.join(nodes)} return{'s' if len(nodes) == 1 else ''} {values(vals)}"
                     for vals, nodes in groups.items())
    return f"{reads}: {said}"
