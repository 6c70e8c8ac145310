"""Plug-ins: the registry finds the built-ins and a third-party package's
workload and nemesis (`tests/plugins/`: one file each, one entry-point line
each), `harness list` shows them, and a run uses them end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import registry
from harness.history import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "tests" / "plugins"


def harness(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`harness` with the test plug-in package installed (on the path, with
    its dist-info, as pip would leave it)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PLUGINS), str(ROOT)]))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_the_built_ins_are_registered_as_plug_ins_are() -> None:
    assert {"kvnode", "etcd"} <= set(registry.names("systems"))
    assert {"register", "cart"} <= set(registry.names("workloads"))
    assert {"partition", "kill", "pause", "clock", "packet"} <= set(registry.names("nemeses"))
    assert {"local", "netns", "docker", "ssh"} <= set(registry.names("backends"))
    assert {"register", "cas-register", "set"} <= set(registry.names("models"))
    kvnode = next(e for e in registry.entries("systems") if e.name == "kvnode")
    assert kvnode.value == "harness.systems.kvnode:KvnodeSystem" and kvnode.distribution == "dynamo-harness"
    from harness.systems.kvnode import KvnodeSystem
    assert registry.load("systems", "kvnode") is KvnodeSystem


def test_an_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(registry.PluginError, match=r"no workload named 'bank' is registered \(registered: "):
        registry.load("workloads", "bank")
    with pytest.raises(ValueError, match="unknown plug-in kind"):
        registry.names("gadgets")


def test_harness_list_shows_a_packages_plug_ins(tmp_path: Path) -> None:
    got = harness("list", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert "write-then-read" in got.stdout and "harness_test_plugins.freeze:Freeze" in got.stdout
    assert "harness-test-plugins" in got.stdout


@pytest.mark.slow
def test_a_plug_in_workload_and_nemesis_run_end_to_end(tmp_path: Path) -> None:
    store = tmp_path / "store"
    got = harness("run", "--system", "examples.lonely_kv:LonelyKV", "--workload", "write-then-read",
                  "--nemesis", "freeze", "--nemesis-interval", "0.7", "--check", "read-your-writes",
                  "--nodes", "3", "--time-limit", "4", "--recovery-timeout", "1", "--seed", "3",
                  "--store", str(store), "--no-live", cwd=ROOT)
    # lonely-kv promises linearizability and replicates nothing: not
    # linearizable; but each process reads back its own writes on its node
    assert got.returncode == 1, got.stdout + got.stderr
    assert "checked: read-your-writes (asked for with --check)" in got.stdout
    results = json.loads((store / "latest" / "results.json").read_text())
    assert results["checkers"]["read-your-writes"]["valid"] is True
    assert results["checkers"]["linearizable"]["valid"] is False
    history = read_jsonl(store / "latest" / "history.jsonl")
    froze = [o for o in history if o.process == "nemesis" and o.f == "freeze" and o.type == "info"]
    assert froze and sorted(froze[0].value) == ["n1", "n2", "n3"]
    assert any(o.f == "thaw" for o in history if o.process == "nemesis")
    assert "pause pid=" in (store / "latest" / "nodes" / "n1" / "log" / "backend.log").read_text()
