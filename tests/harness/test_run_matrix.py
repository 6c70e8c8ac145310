"""`harness run` end to end on the local backend: DESIGN.md's expected-verdict
matrix, each row a short real run (kvnode processes on loopback, per-link
proxies, faketime clocks), and the run's outputs.

A harness that never finds the "must be found" rows has no teeth; one that
flags the valid rows raises false alarms: both rows kinds are asserted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.history import read_jsonl
from harness.runner import RunConfig, run

pytestmark = pytest.mark.slow

# Faster failure detection and repair than the defaults, so that a 20-second
# run sees several faults come and go and the cluster recovers in seconds.
FAST = {"gossip_interval": 0.2, "suspect_after": 1.0, "dead_after": 2.0, "ae_interval": 2.0,
        "handoff_interval": 0.3, "request_timeout": 1.0}


def _run(tmp_path: Path, **options: Any) -> Any:
    config = RunConfig(store=str(tmp_path / "store"), nodes=5, concurrency=10, rate=150.0, time_limit=15.0,
                       nemesis_interval=2.0, seed=options.pop("seed", 42), op_timeout=2.0,
                       recovery_timeout=30.0, node_settings=dict(FAST), **options)
    return run(config, live=False, echo=lambda s: None)


def _anomaly_types(outcome: Any) -> set[str]:
    return {a.type for r in outcome.results for a in r.anomalies}


def verdicts(outcome: Any) -> dict[str, Any]:
    return {r.checker: r.valid for r in outcome.results}


ROWS_VALID = [
    pytest.param(dict(resolution="dvv", quorum="strict", read_repair="async", nemesis=("partition", "kill"),
                      workload="register"), id="dvv-strict-register-partition-kill"),
    pytest.param(dict(resolution="dvv", quorum="sloppy", read_repair="async", nemesis=("partition", "kill"),
                      workload="cart"), id="dvv-sloppy-cart-partition-kill"),
    pytest.param(dict(resolution="lww", quorum="strict", read_repair="sync", nemesis=("partition", "kill"),
                      workload="register"), id="lww-strict-sync-register-partition-kill"),
]


# The must-be-found rows: options, the checker that must fail, the anomaly it must report.
ROWS_FOUND = [
    pytest.param(dict(resolution="lww", quorum="sloppy", read_repair="async", nemesis=("clock",), workload="cart"),
                 "set", "lost", id="lww-cart-clock-loses-adds"),
    pytest.param(dict(resolution="lww", quorum="sloppy", read_repair="async", n=3, w=1, r=1,
                      nemesis=("partition",), workload="register"),
                 "linearizable", None, id="lww-w1-r1-partition-not-linearizable"),
    pytest.param(dict(resolution="lww", quorum="strict", read_repair="sync", nemesis=("clock",),
                      workload="register"),
                 "linearizable", None, id="lww-strict-clock-not-linearizable"),
]


@pytest.mark.parametrize("options", ROWS_VALID)
def test_the_valid_rows_are_valid(tmp_path: Path, options: dict[str, Any]) -> None:
    outcome = _run(tmp_path, **options)
    details = [f"{r.checker}: {a.explanation}" for r in outcome.results for a in r.anomalies][:5]
    assert outcome.valid is True, (outcome.run_dir, verdicts(outcome), details)
    assert outcome.exit_code == 0
    history = read_jsonl(outcome.run_dir / "history.jsonl")
    faults = [o.f for o in history if o.process == "nemesis" and o.type == "info"]
    assert faults, "the nemesis did nothing"
    assert any(o.extra.get("final") and o.type == "ok" for o in history)


def test_lww_loses_cart_adds_under_clock_skew(tmp_path: Path) -> None:
    outcome = _run(tmp_path, resolution="lww", quorum="sloppy", read_repair="async", nemesis=("clock",),
                   workload="cart")
    assert verdicts(outcome)["set"] is False, verdicts(outcome)
    assert "lost" in _anomaly_types(outcome)
    assert outcome.exit_code == 1


def test_lww_with_w1_r1_is_not_linearizable_under_partitions(tmp_path: Path) -> None:
    outcome = _run(tmp_path, resolution="lww", quorum="sloppy", read_repair="async", n=3, w=1, r=1,
                   nemesis=("partition",), workload="register")
    assert verdicts(outcome)["linearizable"] is False, verdicts(outcome)
    assert outcome.exit_code == 1


def test_lww_with_skewed_clocks_is_not_linearizable(tmp_path: Path) -> None:
    outcome = _run(tmp_path, resolution="lww", quorum="strict", read_repair="sync", nemesis=("clock",),
                   workload="register")
    assert verdicts(outcome)["linearizable"] is False, verdicts(outcome)
    assert outcome.exit_code == 1


def test_a_run_leaves_its_record_in_the_store(tmp_path: Path) -> None:
    outcome = _run(tmp_path, nemesis=(), workload="register", seed=7)
    run_dir = outcome.run_dir
    test = json.loads((run_dir / "test.json").read_text())
    assert test["seed"] == 7 and test["workload"] == "register"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["valid"] is True and set(results["checkers"]) >= {"siblings", "stats"}
    assert (tmp_path / "store" / "latest").resolve() == run_dir.resolve()
    assert (run_dir / "nodes" / "n1" / "log" / "kvnode.log").exists()
    assert "verdict valid" in (run_dir / "harness.log").read_text()
