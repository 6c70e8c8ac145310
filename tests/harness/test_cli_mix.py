"""`harness run --mix` and `--deletes`: the choices are refused before anything
starts when they are wrong (exit 254, one clear line), they reach the
workload through `RunConfig`, and a run file or a CI matrix row may set them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import matrix
from harness.errors import ConfigError
from harness.runner import RunConfig

ROOT = Path(__file__).resolve().parents[2]


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--mix", "write-heavy"],
     "Invalid value for '--mix': 'write-heavy' is not one of 'default', 'read-mostly', 'contention'"),
    (["--deletes", "1"], "Invalid value for '--deletes': 1.0 is not in the range 0<=x<1"),
    (["--active-keys", "0"], "Invalid value for '--active-keys': 0 is not in the range x>=1"),
])
def test_a_bad_mix_or_share_of_deletes_exits_254(tmp_path: Path, args: list[str], message: str) -> None:
    got = harness("run", "--store", str(tmp_path / "store"), *args, cwd=ROOT)
    assert got.returncode == 254, got.stderr
    assert message in got.stderr and "Traceback" not in got.stderr
    assert not (tmp_path / "store").exists()


def test_a_run_file_with_a_bad_mix_exits_254(tmp_path: Path) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text('mix = "write-heavy"\n')
    got = harness("run", "--config", str(run_file), "--store", str(tmp_path / "store"), cwd=ROOT)
    assert got.returncode == 254, got.stderr
    assert "--mix 'write-heavy': not a mix (mixes: default, read-mostly, contention)" in got.stderr


def test_the_mix_and_deletes_reach_the_workload_and_test_json() -> None:
    config = RunConfig(mix="read-mostly", deletes=0.0, seed=1)
    config.validate()
    options = config.workload_options()
    assert options.mix == "read-mostly" and options.deletes == 0.0
    assert config.to_json()["mix"] == "read-mostly" and config.to_json()["deletes"] == 0.0
    assert RunConfig(seed=1).workload_options().deletes is None
    for bad in (RunConfig(mix="nope", seed=1), RunConfig(deletes=1.5, seed=1)):
        with pytest.raises(ConfigError):
            bad.validate()


def test_a_matrix_row_may_set_the_mix_and_deletes(tmp_path: Path) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text('[[row]]\nname = "read-mostly"\nmix = "read-mostly"\ndeletes = 0\ntime_limit = 5\n'
                    'expect = "valid"\n')
    (row,) = matrix.load(path).rows
    assert row.run["mix"] == "read-mostly" and row.run["deletes"] == 0.0
    path.write_text('[[row]]\nname = "bad"\nmix = "write-heavy"\nexpect = "valid"\n')
    with pytest.raises(matrix.MatrixError, match="not a mix"):
        matrix.load(path)
