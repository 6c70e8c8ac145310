"""A matrix row as a simulated test (harness.sim.rows, `harness sim --matrix
FILE --row NAME`): the row's cluster, workload, settings and faults carry
over; what the simulation cannot honour is named; bad rows are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.matrix import MatrixError
from harness.sim.rows import load_row

MUTANTS = Path(__file__).resolve().parents[2] / "ci" / "mutants" / "matrix.toml"


def test_a_row_carries_its_cluster_workload_settings_and_faults() -> None:
    row = load_row(MUTANTS, "kill-contention")
    c = row.config
    assert (c.nodes, c.clients, c.rate, c.simulated_seconds, c.recovery) == (5, 10, 120.0, 20.0, 20.0)
    assert (c.nemesis, c.nemesis_interval, c.kill_targets) == (("kill",), 1.0, "majority")
    assert (c.mix, c.active_keys, c.max_ops_per_key) == ("contention", 1, 1000)
    assert c.settings.dead_after == 2.0 and c.replica_reads
    assert row.expected == "valid" and row.ignored == ()
    power = load_row(MUTANTS, "power").config
    assert (power.nemesis, power.power_targets) == (("power", "kill"), "all")
    assert load_row(MUTANTS, "deletes").config.deletes == 0.3


def test_what_the_simulation_cannot_honour_is_named() -> None:
    sync = load_row(MUTANTS, "sync-repair")
    assert sync.config.partition_shapes == ("majorities-ring", "bridge", "isolate-one") and not sync.ignored
    assert any("wipe_targets=primary" in what for what in load_row(MUTANTS, "wipe").ignored)


def test_a_missing_row_or_another_system_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match="no row named 'nope' \\(rows: strict-partition, "):
        load_row(MUTANTS, "nope")
    other = tmp_path / "m.toml"
    other.write_text('[[row]]\nname = "e"\nsystem = "etcd"\nbackend = "netns"\nexpect = "valid"\n')
    with pytest.raises(MatrixError, match="harness sim runs kvnode, not 'etcd'"):
        load_row(other, "e")


def test_harness_sim_runs_a_row_and_its_replay_command_names_it(tmp_path: Path) -> None:
    small = tmp_path / "m.toml"
    small.write_text('[defaults]\nnodes = 3\ntime_limit = 3\nrecovery_timeout = 5\n'
                     '[[row]]\nname = "weak"\nnemesis = ["partition"]\nnemesis_interval = 0.5\n'
                     'check = ["linearizable"]\nsystem = { resolution = "lww", w = 1, r = 1 }\n'
                     'expect = "invalid"\n')
    result = CliRunner().invoke(cli, ["sim", "--matrix", str(small), "--row", "weak", "--seeds", "3",
                                      "--first-seed", "1", "--store", str(tmp_path / "store")])
    assert result.exit_code == 1, result.output
    assert f"replay: harness sim --replay 1 --matrix {small} --row weak" in result.output \
        or f"--matrix {small} --row weak; stored" in result.output
    alone = CliRunner().invoke(cli, ["sim", "--row", "weak"])
    assert alone.exit_code == 254
    assert "--matrix FILE and --row NAME go together" in alone.output
