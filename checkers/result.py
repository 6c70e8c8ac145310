"""What every checker returns: a three-valued verdict with its evidence.

`valid` is True, False, or "unknown" (a search that ran out of time or
memory, or a checker that crashed: the reason says which). Composing results
takes the worst: False beats "unknown" beats True.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = bool | Literal["unknown"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Anomaly:
    type: str  # e.g. "nonlinearizable", "lost-write", "phantom-read"
    ops: tuple[int, ...]  # indexes of the history ops involved
    explanation: str  # one sentence a person can act on
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class Result:
    checker: str
    valid: Verdict
    anomalies: tuple[Anomaly, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)
    reason: str | None = None  # for "unknown": why
    details: dict[str, Any] = field(default_factory=dict)


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """False beats "unknown" beats True (True for no verdicts)."""
    seen = list(verdicts)
    if any(v is False for v in seen):
        return False
    if any(v == "unknown" for v in seen):
        return "unknown"
    return True
