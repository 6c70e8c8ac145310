"""Checker results as the harness shows and stores them: the verdict table,
`results.json`, and the exit code (DESIGN.md: 0 valid, 1 invalid, 2 unknown)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from checkers.result import Result, Verdict, worst

EXIT_VALID, EXIT_INVALID, EXIT_UNKNOWN = 0, 1, 2


def verdict_text(valid: Verdict) -> str:
    return "valid" if valid is True else "INVALID" if valid is False else "unknown"


def exit_code(valid: Verdict) -> int:
    return EXIT_VALID if valid is True else EXIT_INVALID if valid is False else EXIT_UNKNOWN


def overall(results: Sequence[Result]) -> Verdict:
    return worst(r.valid for r in results)


def as_dict(results: Sequence[Result], **extra: Any) -> dict[str, Any]:
    return {"valid": overall(results), **extra,
            "checkers": {r.checker: dataclasses.asdict(r) for r in results}}


def _anomaly_counts(r: Result) -> str:
    types: dict[str, int] = {}
    for a in r.anomalies:
        types[a.type] = types.get(a.type, 0) + 1
    return ", ".join(f"{t}: {n}" for t, n in sorted(types.items())) or "-"


def _note(r: Result) -> str:
    if r.valid == "unknown" and r.reason:
        return r.reason
    not_checked = r.details.get("not_checked") if isinstance(r.details, dict) else None
    if not_checked:
        return "not checked: " + ", ".join(sorted(not_checked))
    return ""


def table(results: Sequence[Result]) -> str:
    rows = [(r.checker, verdict_text(r.valid), _anomaly_counts(r), _note(r)) for r in results]
    return tabulate(rows, headers=("checker", "verdict", "anomalies", "notes"))


def operations_line(results: Sequence[Result], faults: dict[str, int]) -> str:
    """'3,819 operations: 3,724 ok, 0 fail, 95 info; faults: 3 start-partition'."""
    counts = next((r.counts for r in results if r.checker == "stats"), {})
    ops = (f"{counts.get('invocations', 0):,} operations: {counts.get('ok', 0):,} ok, "
           f"{counts.get('fail', 0):,} fail, {counts.get('info', 0):,} info") if counts else "operations: -"
    started = {f: n for f, n in faults.items() if not f.startswith(("stop-", "restart", "resume", "reset-"))}
    shown = ", ".join(f"{n} {f}" for f, n in sorted(started.items())) or "none"
    return f"{ops}; faults: {shown}"


def first_explanations(results: Sequence[Result], limit: int = 3) -> list[str]:
    """A few anomaly sentences, the serious ones first."""
    out: list[str] = []
    for r in sorted(results, key=lambda r: r.valid is not False):
        for a in r.anomalies[:limit]:
            out.append(f"{r.checker}/{a.type}: {a.explanation}")
    return out[:limit * 2]
