"""bench/runner.py: a tiny run completes and prints its figures (never asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    # Loaded by path, as the other bench tests do: `bench` is not installed.
    name = "_bench_runner_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "runner.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_tiny_run_prints_the_rate_beside_its_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _load().main(["--concurrency", "5", "--seconds", "0.3", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "runner:" in out and "baseline:" in out and "ratio runner/baseline:" in out
    ops = int(out.split("operations: ")[1].split(" ")[0].replace(",", ""))
    lines = int(out.split("(")[1].split(" history lines")[0].replace(",", ""))
    assert ops > 0 and lines == 2 * ops  # every operation invoked and completed, all read back
