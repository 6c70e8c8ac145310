"""`harness sim` (harness/sim/command.py): the summary line, a failing seed's
verdict line and run directory, `--replay`'s trace hash in any process, and
bad arguments."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from harness.cli import cli

QUICK = ["--simulated-seconds", "2", "--nemesis-interval", "0.5", "--rate", "40"]
# DESIGN.md's matrix: lww, sloppy 3/1/1, partition, register: not linearizable, must be found.
WEAK = [*QUICK, "--nemesis", "partition", "--set", "resolution=lww", "--set", "w=1", "--set", "r=1",
        "--check", "linearizable"]


def _trace(output: str) -> str:
    found = re.search(r"trace ([0-9a-f]{32})", output)
    assert found, output
    return found.group(1)


def test_valid_seeds_print_the_rates_and_exit_0(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["sim", "--seeds", "3", "--first-seed", "10", "--nemesis", "partition,kill",
                                      *QUICK, "--store", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert re.search(r"3 seeds in [\d.]+ s: [\d.]+ seeds/s, [\d.]+ simulated s per wall s; 0 invalid, 0 unknown",
                     result.output)
    assert not list(tmp_path.iterdir())  # nothing stored for valid seeds


def test_an_invalid_seed_gets_a_verdict_line_a_replay_command_and_a_run_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["sim", "--seeds", "2", "--first-seed", "1", *WEAK, "--store", str(tmp_path)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("seed ")]
    assert lines and all("INVALID (linearizable: nonlinearizable)" in line for line in lines)
    assert "replay: harness sim --replay 1 " in lines[0]
    run_dir = Path(lines[0].rsplit("stored in ", 1)[1])
    assert {p.name for p in run_dir.iterdir()} >= {"test.json", "history.jsonl", "results.json"}
    # harness check re-judges the stored seed with the same checkers
    checked = CliRunner().invoke(cli, ["check", str(run_dir)])
    assert checked.exit_code == 1, checked.output
    assert "nonlinearizable" in checked.output
    # and harness report draws it as any run
    reported = CliRunner().invoke(cli, ["report", str(run_dir)])
    assert reported.exit_code == 0, reported.output
    assert "nonlinearizable" in (run_dir / "report.html").read_text(encoding="utf-8")


def test_replay_prints_the_same_trace_hash_in_another_process_with_other_string_hashing() -> None:
    args = ["sim", "--replay", "3", "--nemesis", "partition,kill", *QUICK]
    here = _trace(CliRunner().invoke(cli, args).output)
    again = _trace(CliRunner().invoke(cli, args).output)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                           timeout=120)
    assert here == again == _trace(other.stdout)
    different = _trace(CliRunner().invoke(cli, ["sim", "--replay", "4", "--nemesis", "partition,kill", *QUICK]).output)
    assert different != here


def test_bad_arguments_exit_254_with_a_clear_message() -> None:
    runner = CliRunner()
    bad = runner.invoke(cli, ["sim", "--nemesis", "bridge"])
    assert bad.exit_code == 254
    assert "--nemesis 'bridge': the simulation has none, partition, kill, pause, clock, packet, power, wipe" in bad.output
    unset = runner.invoke(cli, ["sim", "--set", "colour=blue"])
    assert unset.exit_code == 254
    assert "expected KEY=VALUE with KEY one of" in unset.output
    small = runner.invoke(cli, ["sim", "--nodes", "2"])
    assert small.exit_code == 254
    assert "need at least 3 nodes" in small.output


def test_skewed_clocks_break_linearizability_under_last_write_wins(tmp_path: Path) -> None:
    # DESIGN.md's matrix: lww, strict, 3/2/2, sync repair, clock: not linearizable, must be found.
    lww = [*QUICK, "--set", "resolution=lww", "--set", "quorum=strict", "--set", "read_repair=sync",
           "--check", "linearizable", "--store", str(tmp_path)]
    skewed = CliRunner().invoke(cli, ["sim", "--seeds", "1", "--first-seed", "1", "--skew-ms", "500", *lww])
    assert skewed.exit_code == 1, skewed.output
    assert "linearizable: nonlinearizable" in skewed.output
    agreed = CliRunner().invoke(cli, ["sim", "--seeds", "1", "--first-seed", "1", *lww])
    assert agreed.exit_code == 0, agreed.output


def test_jobs_run_the_same_seeds_to_the_same_verdicts(tmp_path: Path) -> None:
    def verdicts(jobs: str) -> list[str]:
        result = CliRunner().invoke(cli, ["sim", "--seeds", "3", "--first-seed", "5", "--jobs", jobs, *WEAK,
                                          "--store", str(tmp_path / jobs)])
        assert result.exit_code == 1, result.output
        return [line.split("; stored in")[0] for line in result.output.splitlines() if line.startswith("seed ")]

    alone = verdicts("1")
    assert alone == verdicts("2")
    assert len(alone) == 3


def test_shrink_saves_a_smaller_failing_run_that_replays_to_its_trace(tmp_path: Path) -> None:
    import json

    args = ["--nemesis", "partition,kill", "--nemesis-interval", "0.5", "--simulated-seconds", "3",
            "--set", "resolution=lww", "--set", "w=1", "--set", "r=1", "--check", "linearizable"]
    result = CliRunner().invoke(cli, ["sim", "--seeds", "1", "--first-seed", "1", *args, "--shrink",
                                      "--store", str(tmp_path)])
    assert result.exit_code == 1, result.output
    head = next(line for line in result.output.splitlines() if line.startswith("shrunk seed 1 in "))
    assert "still: linearizable: nonlinearizable" in head
    saved = next(tmp_path.rglob("shrunk.json"))
    doc = json.loads(saved.read_text())
    original = next(line for line in result.output.splitlines() if line.startswith("seed 1: INVALID"))
    assert doc["trace_hash"] not in original  # a different, smaller run
    assert doc["simulated_seconds"] <= 3 and doc["concurrency"] <= 6
    replayed = CliRunner().invoke(cli, ["sim", "--replay", "1", *args, "--schedule", str(saved),
                                        "--store", str(tmp_path)])
    assert replayed.exit_code == 1, replayed.output
    assert _trace(replayed.output) == doc["trace_hash"]
    alone = CliRunner().invoke(cli, ["sim", "--seeds", "1", "--schedule", str(saved)])
    assert alone.exit_code == 254
    assert "--schedule goes with --replay" in alone.output


def test_time_budget_runs_seeds_until_it_is_spent_and_seeds_caps_it() -> None:
    spent = CliRunner().invoke(cli, ["sim", "--time-budget", "1.5", "--first-seed", "5", *QUICK])
    assert spent.exit_code == 0, spent.output
    ran = int(re.search(r"^(\d+) seeds in ([\d.]+) s", spent.output, re.M).group(1))  # type: ignore[union-attr]
    assert ran >= 2  # a seed of QUICK takes a fraction of a second
    capped = CliRunner().invoke(cli, ["sim", "--time-budget", "600", "--seeds", "2", "--first-seed", "5", *QUICK])
    assert capped.exit_code == 0, capped.output
    assert re.search(r"^2 seeds in ", capped.output, re.M), capped.output


def test_every_fault_kind_and_duplication_from_the_command_line() -> None:
    result = CliRunner().invoke(cli, ["sim", "--seeds", "2", "--first-seed", "1", *QUICK, "--nemesis",
                                      "partition,kill,pause,clock,packet,power", "--power-targets", "all",
                                      "--duplicate", "0.05"])
    assert result.exit_code == 0, result.output
    assert "0 invalid, 0 unknown" in result.output
