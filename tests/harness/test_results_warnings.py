"""A run whose operations mostly failed says so beside its verdict: the
warning line of the run's output and the stats row's note."""

from __future__ import annotations

from checkers.history import Op
from checkers.stats import check
from harness import results


def ops(outcomes: list[str]) -> list[Op]:
    out: list[Op] = []
    for i, outcome in enumerate(outcomes):
        out.append(Op(index=len(out), time=2 * i, process=0, type="invoke", f="read"))
        out.append(Op(index=len(out), time=2 * i + 1, process=0, type=outcome, f="read"))  # type: ignore[arg-type]
    return out


def test_mostly_failed_reads_are_warned_about_and_noted_in_the_table() -> None:
    bad = check(ops(["ok", "fail", "fail", "info"]))
    assert results.warnings([bad]) == ["'read' succeeded in 1 of 4 invocations (25%): most failed "
                                       "(2 fail, 1 info, 0 never completed)"]
    assert "most failed: 'read'" in results.table([bad])


def test_a_healthy_run_has_no_warning() -> None:
    good = check(ops(["ok", "ok", "fail"]))
    assert results.warnings([good]) == []
    assert "most failed" not in results.table([good])
