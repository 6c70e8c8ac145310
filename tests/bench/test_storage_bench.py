"""bench/storage.py: a tiny run completes and prints its tables (figures are never asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--keys", "2000", "--reads", "200", "--batch", "100", "--scans", "5", "--scan-length", "50"]


def _load() -> ModuleType:
    # Loaded by path: `bench` is not an installed package, and under plain
    # `pytest` this directory (tests/bench) could shadow it as a namespace package.
    name = "_bench_storage_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "storage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


storage = _load()


def _table_lines(out: str) -> list[str]:
    """The lines of the main table: from its header to the first blank line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("workload"))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def test_tiny_run_prints_a_row_per_workload_and_a_column_per_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("rocksdict")
    assert storage.main([*TINY, "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = _table_lines(out)
    header = table[0]
    for name in ("ours", "sqlite", "rocksdb"):
        assert f"{name} ops/s" in header
    assert "ours/sqlite" in header and "rocksdb/sqlite" in header
    for workload in storage.WORKLOADS:
        assert sum(line.startswith(workload) for line in table) == 1, workload
    assert "bloom filters off and on" in out
    assert "target: writes" in out and "target: missing-key reads" in out
    assert list(tmp_path.iterdir()) == [], "the benchmark left its directories behind"


def test_rocksdb_is_skipped_with_a_note_when_rocksdict_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rocksdict", None)  # makes `import rocksdict` fail
    assert storage.main([*TINY, "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "rocksdb skipped: rocksdict is not importable" in out
    header = _table_lines(out)[0]
    assert "ours ops/s" in header and "sqlite ops/s" in header
    assert "rocksdb" not in header
    assert list(tmp_path.iterdir()) == []


def test_one_engine_without_the_baseline_has_no_ratio_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert storage.main([*TINY, "--engines", "ours", "--dir", str(tmp_path)]) == 0
    table = _table_lines(capsys.readouterr().out)
    assert "ours ops/s" in table[0] and "/sqlite" not in table[0]
    assert len([line for line in table if line.startswith(storage.WORKLOADS)]) == len(storage.WORKLOADS)


def test_unknown_engine_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        storage.main(["--engines", "ours,leveldb"])
    assert exc.value.code == 2
    assert "leveldb" in capsys.readouterr().err


def test_directories_are_removed_when_a_run_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: object, pairs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(storage.OursStore, "write_batch", fail)
    with pytest.raises(KeyboardInterrupt):
        storage.main([*TINY, "--engines", "ours", "--dir", str(tmp_path)])
    assert list(tmp_path.iterdir()) == []
