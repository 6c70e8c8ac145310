"""The replica-convergence phase end to end: kvnode clusters on the local
backend, each replica of every key read by itself (`local_get`) after the
faults heal and before anything forces anti-entropy (`checkers.replicas`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from checkers.history import REPLICA_READ
from harness.history import read_jsonl
from harness.runner import RunConfig, check_run, run
from tests.harness.project_matrix import FAST

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, nemesis: str = "partition", **options: object) -> Path:
    config = RunConfig(store=str(tmp_path / "store"), nodes=3, concurrency=6, rate=80.0, time_limit=8.0, seed=5,
                       nemesis=(nemesis,), nemesis_interval=2.0, op_timeout=2.0, recovery_timeout=10.0,
                       system_options={**FAST, **options})
    return run(config, live=False, echo=lambda s: None).run_dir


def test_a_healthy_partitioned_run_reads_every_replica_and_they_agree(tmp_path: Path) -> None:
    run_dir = _run(tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    replicas = results["checkers"]["replicas"]
    assert replicas["valid"] is True and replicas["details"]["claim"] == "siblings"
    assert replicas["counts"]["keys"] >= 1 and replicas["counts"]["replicas"] == 3 * replicas["counts"]["keys"]
    history = read_jsonl(run_dir / "history.jsonl")
    reads = [o for o in history if o.f == REPLICA_READ and o.type == "ok"]
    assert reads and all(isinstance(o.value, list) for o in reads)
    first_final = min(o.index for o in history if o.extra.get("final"))
    assert max(o.index for o in reads) < first_final  # before the quorum reads that repair
    assert "replica convergence: the replicas of all" in (run_dir / "harness.log").read_text()
    assert (run_dir / "report.html").exists()
    assert "report.html not written" not in (run_dir / "harness.log").read_text()
    again = {r.checker: r.valid for r in check_run(run_dir)[0]}  # `harness check` judges it the same way
    assert again["replicas"] is True


def test_replicas_left_diverged_without_anti_entropy_or_repair_are_found(tmp_path: Path) -> None:
    # Strict quorums (no hints), no read repair, no anti-entropy: the writes
    # made while one replica was killed never reach it. (Not a partition:
    # the local backend's proxies deliver what a partition held once it
    # heals, so whether a replica misses a write hangs on the timing of the
    # failure detector, which a loaded machine changes.)
    run_dir = _run(tmp_path, nemesis="kill", quorum="strict", read_repair="off", ae_interval=0)
    results = json.loads((run_dir / "results.json").read_text())
    replicas = results["checkers"]["replicas"]
    assert replicas["valid"] is False, replicas
    anomaly = replicas["anomalies"][0]
    assert anomaly["type"] == "replica-divergence"
    assert ", a replica of 'k" in anomaly["explanation"] and "still lacks" in anomaly["explanation"]
    assert results["checkers"]["siblings"]["valid"] is True  # the quorum reads alone see nothing wrong
    assert "still differ between replicas" in (run_dir / "harness.log").read_text()
