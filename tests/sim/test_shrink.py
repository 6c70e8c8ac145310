"""Shrinking a failing seed (harness.sim.shrink): fewer faults, a shorter
run, fewer clients, the same failure; bad input is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.sim.shrink import load, shrink
from harness.sim.world import WorldConfig
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
    assert result.lines()[0].startswith("shrunk seed 2 in ")
    result.save(tmp_path / "shrunk.json")
    config, schedule = load(tmp_path / "shrunk.json", WEAK)
    assert schedule == result.schedule
    assert (config.simulated_seconds, config.clients) == (result.config.simulated_seconds, result.config.clients)


def test_a_valid_seed_has_nothing_to_shrink() -> None:
    with pytest.raises(ValueError, match="not invalid: nothing to shrink"):
        shrink(WorldConfig(nodes=3, simulated_seconds=1.0, recovery=2.0), seed=1)


def test_a_file_that_is_no_saved_shrink_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"seed": 1}')
    with pytest.raises(ValueError, match="not a saved shrink"):
        load(path, WEAK)
