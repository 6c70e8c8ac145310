"""bench/flood.py: a tiny run completes and prints its table, the ratio and
the peers' view (figures are never asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    # Loaded by path, as the other bench smoke tests do: `bench` is not an
    # installed package.
    name = "_bench_flood_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "flood.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


flood = _load()


@pytest.mark.slow
def test_tiny_run_prints_both_runs_and_the_ratio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert flood.main(["--seconds", "1", "--keys", "20", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["run", "ops"])
    assert "p99 ms" in header and "flood replies/s" in header
    for label in ("baseline", "flood"):
        row = next(line.split() for line in lines if line.split()[:1] == [label])
        assert int(row[1]) > 0, row  # the well-behaved client was answered in both runs
    assert "p99(flood) / p99(baseline) = " in out
    assert "target: p99(flood) < 2x the baseline: " in out
    assert "peers' view of n1 during the runs: " in out
    assert list(tmp_path.iterdir()) == [], "the benchmark left its directory behind"


def test_zero_keys_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        flood.main(["--keys", "0"])
    assert exc.value.code == 2
    assert "--keys" in capsys.readouterr().err
