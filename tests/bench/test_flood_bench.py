"""bench/flood.py: a tiny run completes and prints its table, the ratio and
the peers' view (figures are never asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .loading import load_bench

flood = load_bench("flood")


@pytest.mark.slow
def test_tiny_run_prints_both_runs_and_the_ratio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert flood.main(["--seconds", "1", "--rounds", "1", "--keys", "20", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["run", "ops"])
    assert "p99 ms" in header and "flood replies/s" in header
    for label in ("baseline", "flood"):
        row = next(line.split() for line in lines if line.split()[:1] == [label])
        assert int(row[1]) > 0, row  # the well-behaved client was answered in both runs
    assert "p99(flood) / p99(baseline) = " in out
    assert "target: p99(flood) < 2x the baseline: " in out
    assert "peers' view of n1 during the runs: " in out
    assert list(tmp_path.iterdir()) == [], "the benchmark left its directory behind"


def test_zero_keys_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        flood.main(["--keys", "0"])
    assert exc.value.code == 2
    assert "--keys" in capsys.readouterr().err
