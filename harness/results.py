"""Checker results as the harness shows and stores them: the promise checked
and what was not, the verdict table, `results.json`, and the exit code
(DESIGN.md: 0 valid, 1 invalid, 2 unknown)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from checkers.result import Result, Verdict, worst
from contract.promise import Promise

EXIT_VALID, EXIT_INVALID, EXIT_UNKNOWN = 0, 1, 2


def verdict_text(valid: Verdict) -> str:
    return "valid" if valid is True else "INVALID" if valid is False else "unknown"


def exit_code(valid: Verdict) -> int:
    return EXIT_VALID if valid is True else EXIT_INVALID if valid is False else EXIT_UNKNOWN


def overall(results: Sequence[Result]) -> Verdict:
    return worst(r.valid for r in results)


def as_dict(results: Sequence[Result], *, promise: Promise | None = None,
            not_checked: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """`results.json`: the verdict, the promise checked (each claim, and
    whether the user asked for it), the claims not checked and why, and each
    checker's result."""
    out: dict[str, Any] = {"valid": overall(results), **extra}
    if promise is not None:
        out["promise"] = promise.to_json()
    if not_checked is not None:
        out["not_checked"] = dict(not_checked)
    out["checkers"] = {r.checker: dataclasses.asdict(r) for r in results}
    return out


def promise_lines(promise: Promise, not_checked: dict[str, str], system: str = "the system") -> list[str]:
    """What was checked and what was not, for the summary:

        checked: linearizable (promised by etcd: every read and put goes through raft)
        not checked: siblings: not promised (--check siblings checks it anyway)
    """
    lines = []
    for c in promise.claims:
        source = "asked for with --check" if c.asked else f"promised by {system}" + (f": {c.why}" if c.why else "")
        lines.append(f"checked: {c.name} ({source})")
    lines += [f"not checked: {name}: {why}" for name, why in not_checked.items()]
    return lines


def _anomaly_counts(r: Result) -> str:
    types: dict[str, int] = {}
    for a in r.anomalies:
        types[a.type] = types.get(a.type, 0) + 1
    return ", ".join(f"{t}: {n}" for t, n in sorted(types.items())) or "-"


def _note(r: Result) -> str:
    if r.valid == "unknown" and r.reason:
        return r.reason
    if r.checker == "stats" and isinstance(r.details, dict) and r.details.get("warnings"):
        return "most failed: " + ", ".join(str(w).split(" succeeded")[0] for w in r.details["warnings"])
    not_checked = r.details.get("not_checked") if isinstance(r.details, dict) else None
    if not_checked:
        return "not checked: " + ", ".join(sorted(not_checked))
    return ""


def table(results: Sequence[Result]) -> str:
    rows = [(r.checker, r.details.get("claim", "-") if isinstance(r.details, dict) else "-", verdict_text(r.valid),
             _anomaly_counts(r), _note(r)) for r in results]
    return tabulate(rows, headers=("checker", "claim", "verdict", "anomalies", "notes"))


def operations_line(results: Sequence[Result], faults: dict[str, int]) -> str:
    """'3,819 operations: 3,724 ok, 0 fail, 95 info; faults: 3 start-partition'."""
    counts = next((r.counts for r in results if r.checker == "stats"), {})
    ops = (f"{counts.get('invocations', 0):,} operations: {counts.get('ok', 0):,} ok, "
           f"{counts.get('fail', 0):,} fail, {counts.get('info', 0):,} info") if counts else "operations: -"
    started = {f: n for f, n in faults.items() if not f.startswith(("stop-", "restart", "resume", "reset-"))}
    shown = ", ".join(f"{n} {f}" for f, n in sorted(started.items())) or "none"
    return f"{ops}; faults: {shown}"


def warnings(results: Sequence[Result]) -> list[str]:
    """What the verdict does not judge but a reader must know: the kinds of
    operation that mostly failed (the stats checker's warnings)."""
    return [str(w) for r in results if isinstance(r.details, dict) for w in r.details.get("warnings") or ()]


def first_explanations(results: Sequence[Result], limit: int = 3) -> list[str]:
    """A few anomaly sentences of the checkers that found the history
    invalid, and the reason of each that could not decide."""
    out: list[str] = []
    for r in results:
        if r.valid is False:
            out += [f"{r.checker}/{a.type}: {a.explanation}" for a in r.anomalies[:limit]]
        elif r.valid == "unknown" and r.reason:
            out.append(f"{r.checker}: unknown: {r.reason}")
    return out[:limit * 2]
