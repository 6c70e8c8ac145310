"""bench/history_checks.py runs, tiny, and prints a row per checker, each valid."""

from __future__ import annotations

import pytest

from bench import history_checks


def test_tiny_run_prints_every_checker_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert history_checks.main(["--ops", "3000", "--keys", "20"]) == 0
    out = capsys.readouterr().out
    for name in ("siblings (P1-P6, strict, sync)", "stats", "set (cart)"):
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert " True " in line, line
