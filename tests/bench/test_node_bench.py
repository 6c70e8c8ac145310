"""bench/node.py: a tiny run completes and prints its tables (figures are never asserted)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--seconds", "1", "--clients", "4", "--keys", "20"]


def _load() -> ModuleType:
    # Loaded by path, as tests/bench/test_storage_bench.py does: `bench` is not
    # an installed package.
    name = "_bench_node_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "node.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


node = _load()


def _table(out: str, label: str) -> list[str]:
    """The lines of the table whose header starts with `label`, up to the first blank line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == [label, "ops"])
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


@pytest.mark.slow
def test_tiny_run_prints_the_cluster_and_floor_tables_and_the_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert node.main([*TINY, "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out

    cluster = _table(out, "cluster")
    for column in ("ops/s", "p50 ms", "p99 ms", "errors"):
        assert column in cluster[0]
    for op in ("get", "put", "all"):
        assert sum(line.split()[0] == op for line in cluster[2:]) == 1, op

    floor = _table(out, "floor")
    assert "p50 ms" in floor[0] and "p99 ms" in floor[0]
    assert sum(line.split()[0] == "floor" for line in floor[2:]) == 1

    assert "p50(put) / p50(floor) = " in out
    assert "target: p50(put) <= 3x the floor: " in out
    assert "values per get: mean" in out
    assert list(tmp_path.iterdir()) == [], "the benchmark left its directory behind"


def test_percentile_is_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert node.percentile(values, 0.5) == 50.0
    assert node.percentile(values, 0.99) == 99.0
    assert node.percentile(values, 1.0) == 100.0
    assert node.percentile([7.0], 0.99) == 7.0
    assert math.isnan(node.percentile([], 0.5))


def test_zero_clients_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        node.main(["--clients", "0"])
    assert exc.value.code == 2
    assert "--clients" in capsys.readouterr().err


@pytest.mark.slow
def test_a_failed_run_kills_its_processes_and_removes_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers: list[object] = []
    real = node.FloorServer

    def recorded(directory: str) -> object:
        server = real(directory)
        servers.append(server)
        return server

    async def interrupted(*args: object) -> object:
        raise RuntimeError("the floor broke")

    monkeypatch.setattr(node, "FloorServer", recorded)
    monkeypatch.setattr(node, "_floor_worker", interrupted)
    with pytest.raises(RuntimeError, match="the floor broke"):
        node.main([*TINY, "--dir", str(tmp_path)])
    assert len(servers) == 1
    assert servers[0].proc.poll() is not None  # type: ignore[attr-defined]
    assert list(tmp_path.iterdir()) == []
