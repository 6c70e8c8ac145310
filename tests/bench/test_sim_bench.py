"""bench/sim.py: a tiny run prints its throughput table, the ratio, the
target line and the mutant table, the mutant and the unmutated code on the
mutant's own matrix rows (figures are never asserted)."""

from __future__ import annotations

import pytest

from .loading import load_bench

sim = load_bench("sim")


def test_tiny_run_prints_throughput_ratio_and_mutant_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--seeds", "1", "--simulated-seconds", "1", "--mutant-seeds", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.split()[:2] == ["run", "seeds/s"] for line in lines)
    for label in ("no faults", "partition"):
        row = next(line for line in lines if line.startswith(label))
        assert float(row.split()[-3]) > 0, row  # simulated seconds per wall second
    assert "partition / no faults (simulated s per wall s) = " in out
    assert "target: >= 100 simulated s per wall s with partitions: " in out
    assert "mutant read-first-reply (quorum counting on reads)" in out
    unmutated = [line.split() for line in lines if line.startswith("unmutated")]
    assert {u[1] for u in unmutated} == {"strict-partition", "sync-repair"}  # the mutant's rows
    assert all(u[2] == "0/1" for u in unmutated)  # the baseline is never flagged
    assert any(line.startswith("read-first-reply ") for line in lines)


def test_an_unknown_mutant_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        sim.main(["--seeds", "1", "--simulated-seconds", "0.5", "--mutant", "no-such-bug"])
    assert exc.value.code == 2
    assert "--mutant no-such-bug" in capsys.readouterr().err
