"""`harness run` end to end on the local backend, for what a run leaves
behind: its record in the store (test.json, results.json, nodes.json,
harness.log, node logs, report.html), and, for a row of the project's matrix
that must be found, a report that explains the anomaly. The verdict matrix
itself is `ci/matrix.toml`, run by `harness ci` (scripts/test)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness import ci
from harness.report import page
from harness.report.context import RunHistory, describe
from harness.runner import RunConfig, run
from tests.harness.project_matrix import FAST, row

pytestmark = pytest.mark.slow


def test_a_run_leaves_its_record_in_the_store(tmp_path: Path) -> None:
    config = RunConfig(store=str(tmp_path / "store"), nodes=5, concurrency=10, rate=150.0, time_limit=10.0,
                       seed=7, op_timeout=2.0, recovery_timeout=30.0, workload="register", system_options=FAST)
    outcome = run(config, live=False, echo=lambda s: None)
    run_dir = outcome.run_dir
    test = json.loads((run_dir / "test.json").read_text())
    assert test["seed"] == 7 and test["workload"] == "register"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["valid"] is True and set(results["checkers"]) >= {"siblings", "stats"}
    assert [c["name"] for c in results["promise"]["claims"]] == ["siblings"]
    assert results["checkers"]["siblings"]["details"]["claim"] == "siblings"
    assert "linearizable" in results["not_checked"]
    assert test["system_settings"]["gossip_interval"] == 0.2 and test["promise"]["claims"]
    assert (tmp_path / "store" / "latest").resolve() == run_dir.resolve()
    assert (run_dir / "nodes" / "n1" / "log" / "kvnode.log").exists()
    assert "verdict valid" in (run_dir / "harness.log").read_text()
    shares = json.loads((run_dir / "nodes.json").read_text())
    assert sum(float(info["ring share"].rstrip("%")) for info in shares.values()) == pytest.approx(100, abs=0.5)
    report = (run_dir / "report.html").read_text()
    assert 'id="verdict">valid<' in report and "ring share" in report


def test_the_report_of_a_found_row_explains_its_anomalies(tmp_path: Path) -> None:
    """The lww 3/1/1 partition row: report.html shows the anomaly, linked to
    its own history.jsonl lines, and a sentence names the node that answered
    and the partition."""
    result = ci.run_row(row("lww-w1-r1-partition-not-linearizable@local"), str(tmp_path / "store"))
    assert result.status == "pass", ci.details(result)
    attempt = next(a for a in result.attempts if a.met)
    assert attempt.run_dir is not None
    run_dir = Path(attempt.run_dir)
    html = (run_dir / "report.html").read_text()
    assert 'id="verdict">INVALID<' in html
    record = page.load_run(run_dir)
    history = RunHistory(record.history, record.faults)
    clauses = []
    for r in page.results_of(record.results):
        for a in r.anomalies[:page.LISTED] if r.valid is False else ():
            clause, named = describe(a, history)
            assert f'data-ops="{",".join(map(str, sorted(set(a.ops) | set(named))))}"' in html
            clauses.append(clause)
    assert any(re.match(r"n\d+ answered", c) and "partition" in c for c in clauses), clauses[:5]
