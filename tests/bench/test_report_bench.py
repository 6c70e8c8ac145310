"""bench/report.py: a tiny run prints every figure (the browser's where a
headless Chromium starts, else it says why not), and the run it makes holds
exactly the stale reads it planted. Figures are never asserted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench import report as bench

TINY = ["--ops", "2000", "--rate", "200", "--repeat", "1", "--seed", "3"]
FILE_ROWS = ("harness report RUN_DIR", "report.html ")
BROWSER_ROWS = ("first paint", "first contentful paint", "load event", "one frame of the whole run",
                "scroll end to end")


def test_tiny_run_prints_the_report_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main([*TINY, "--no-browser"]) == 0
    out = capsys.readouterr().out
    assert "verdict False, 5 stale reads planted (of 5)" in out
    for row in FILE_ROWS:
        line = next(line for line in out.splitlines() if line.startswith(row))
        assert "x " in line and " under " in line, line  # a ratio and its target
    assert "where the report's time goes" in out
    assert "browser part skipped: --no-browser" in out
    assert not any(row in out for row in BROWSER_ROWS)


@pytest.mark.browser
def test_tiny_run_prints_the_browser_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(TINY) == 0
    out = capsys.readouterr().out
    assert "harness report RUN_DIR" in out
    if "browser part skipped" in out:
        pytest.skip(next(line for line in out.splitlines() if "browser part skipped" in line))
    for row in BROWSER_ROWS:
        line = next(line for line in out.splitlines() if row in line)
        assert re.search(r" \d+\.\d\dx( |$)", line), line  # a ratio to its baseline
    assert "under 2 s" in next(line for line in out.splitlines() if "first paint" in line)


def test_run_holds_the_planted_stale_reads(tmp_path: Path) -> None:
    shape = bench.RunShape(ops=1500, workers=6, nodes=3, rate=200.0, partitions=3, stale=3)
    run = bench.make_run(tmp_path, shape, seed=5)
    assert 1 <= len(run.stale) <= 3 and len(run.partitions) == 3  # short partitions may hold fewer
    assert abs(run.ops - 1500) <= shape.nodes * 4  # final reads come in whole keys
    results = json.loads((run.dir / "results.json").read_text())
    assert results["valid"] is False
    found = results["checkers"]["linearizable"]["anomalies"]
    assert sorted(min(a["ops"]) for a in found) == sorted(run.stale)
    lines = (run.dir / "history.jsonl").read_text().splitlines()
    assert len(lines) == run.events and [json.loads(line)["index"] for line in lines] == list(range(run.events))
    clean = bench.make_run(tmp_path, bench.RunShape(ops=1500, workers=6, nodes=3, rate=200.0, stale=0), seed=5,
                           stamp="20240101T130000")
    assert clean.stale == () and json.loads((clean.dir / "results.json").read_text())["valid"] is True
