"""Shrinking a failing seed (harness.sim.shrink, hypothesis's shrinker):
fewer faults, a shorter run, fewer clients, callbacks in order, the same
failure, shown as a readable timeline; bad input is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.sim.shrink import load, shrink
from harness.sim.world import WorldConfig, simulate
from kvnode.config import ClusterSettings

WEAK = WorldConfig(nodes=3, simulated_seconds=4.0, recovery=4.0, nemesis=("partition", "kill"), nemesis_interval=0.5,
                   check=("linearizable",), settings=ClusterSettings(cluster="sim", resolution="lww", w=1, r=1))


def test_a_shrunk_run_is_smaller_and_fails_the_same_way(tmp_path: Path) -> None:
    result = shrink(WEAK, seed=2)
    original = result.original
    assert original.valid is False
    assert set(result.outcome.anomalies()) & set(original.anomalies())
    assert set(result.schedule) <= set(original.schedule)
    assert len(result.schedule) < len(original.schedule)
    assert result.config.simulated_seconds <= WEAK.simulated_seconds
    assert result.config.clients <= WEAK.clients
    lines = result.lines()
    assert lines[0].startswith("shrunk seed 2 in ")
    # the kept faults and the anomaly's operations in time order, then its sentence
    assert any(str(step) in lines for step in [f"  {s}" for s in result.schedule]) or not result.schedule
    assert any(" client " in line and " -> " in line for line in lines)
    assert lines[-1].startswith("  => ")
    result.save(tmp_path / "shrunk.json")
    config, schedule = load(tmp_path / "shrunk.json", WEAK)
    assert schedule == result.schedule
    assert (config.simulated_seconds, config.clients, config.fifo) == (
        result.config.simulated_seconds, result.config.clients, result.config.fifo)
    assert simulate(config, 2, schedule).trace_hash == result.outcome.trace_hash


def test_a_valid_seed_has_nothing_to_shrink() -> None:
    with pytest.raises(ValueError, match="not invalid: nothing to shrink"):
        shrink(WorldConfig(nodes=3, simulated_seconds=1.0, recovery=2.0), seed=1)


def test_a_file_that_is_no_saved_shrink_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"seed": 1}')
    with pytest.raises(ValueError, match="not a saved shrink"):
        load(path, WEAK)


def test_the_shrink_keeps_the_one_fault_that_matters_among_every_kind() -> None:
    from harness.sim.world import Step

    config = WorldConfig(nodes=3, simulated_seconds=6.0, recovery=4.0, rate=60.0, mix="contention", active_keys=1,
                         settings=ClusterSettings(cluster="sim", resolution="lww"))
    noise = (Step(at=0.5, action="partition", groups=(("n2",), ("n1", "n3"))), Step(at=1.0, action="heal"),
             Step(at=2.0, action="pause", node="n2"), Step(at=2.5, action="resume", node="n2"),
             Step(at=3.0, action="packet", nodes=("n3",), delay=0.2, loss=0.1), Step(at=3.5, action="packet-stop"),
             Step(at=4.0, action="power", nodes=("n3",)), Step(at=4.5, action="power-on", nodes=("n3",)))
    jump = Step(at=1.5, action="clock", node="n1", offset=5.0)  # lww with a clock ahead loses later writes
    schedule = tuple(sorted((*noise, jump), key=lambda s: s.at))
    original = simulate(config, 2, schedule)
    assert original.valid is False
    result = shrink(config, 2, original)
    assert result.schedule == (jump,)
    assert result.outcome.valid is False
