"""The power fault end to end (`slow`): `harness run --nemesis power` on
real kvnode clusters on the local backend, each node's data on a lazy disk.

- kvnode fsyncs its WAL before it acknowledges (sync="always"): power
  failures drop unsynced bytes and lose nothing acknowledged (valid);
- `UnsyncedKvnode`, kvnode with `--sync never`, acknowledges writes it never
  fsyncs: a whole-cluster power failure loses them and the checkers must
  find the lost writes (invalid);
- Ctrl-C in the middle of a run leaves no lazy disk mounted and no file
  system process running;
- the same on the netns backend (`netns`: its nodes see the disks mounted on
  the host, their namespaces sharing its file system).

They skip, saying why, where no lazy disk can be mounted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.history import read_jsonl
from harness.lazyfs import mounted, probe_mount
from harness.systems.base import NodeSetup
from harness.systems.kvnode import KvnodeDB, KvnodeSystem

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--set", "gossip_interval=0.2", "--set", "suspect_after=1", "--set", "dead_after=2",
        "--set", "ae_interval=2"]


class UnsyncedDB(KvnodeDB):
    def command(self, node: NodeSetup) -> tuple[list[str], dict[str, str]]:
        argv, env = super().command(node)
        return [*argv, "--sync", "never"], env


class UnsyncedKvnode(KvnodeSystem):
    """kvnode whose WAL is never fsynced: it acknowledges what a power
    failure loses."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.db = UnsyncedDB(self.settings)


@pytest.fixture(scope="module", autouse=True)
def fuse_ok() -> None:
    reason = probe_mount()
    if reason is not None:
        pytest.skip(f"no lazy disk can be mounted here: {reason}")


def harness(*args: str, cwd: Path, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def lazyfs_pids(run_dir: Path) -> list[int]:
    """File system processes serving a node of this run."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "harness.lazyfs" in cmdline and str(run_dir) in cmdline:
                found.append(int(entry.name))
    return found


def assert_clean(run_dir: Path) -> None:
    mounts = Path("/proc/mounts").read_text()
    assert str(run_dir) not in mounts, "a lazy disk is still mounted"
    assert not any(mounted(d) for d in run_dir.glob("nodes/*/data"))
    assert lazyfs_pids(run_dir) == [], "a lazy disk's process outlived the run"
    assert not list(run_dir.glob("nodes/*/disk")), "a backing directory was not moved back"


def power_ops(run_dir: Path) -> list[dict[str, object]]:
    return [o.value for o in read_jsonl(run_dir / "history.jsonl")
            if o.process == "nemesis" and o.type == "info" and o.f == "power-off" and isinstance(o.value, dict)]


def test_kvnode_loses_nothing_acknowledged_to_power_failures(tmp_path: Path) -> None:
    got = harness("run", "--store", str(tmp_path / "store"), "--nodes", "3", "--time-limit", "12",
                  "--nemesis", "power", "--nemesis-interval", "2", "--nemesis-option", "power_torn=0.5",
                  "--no-live", "--seed", "4", "--rate", "50", *FAST, cwd=tmp_path)
    assert got.returncode == 0, got.stdout + got.stderr
    run_dir = next((tmp_path / "store").glob("*/2*"))
    offs = power_ops(run_dir)
    assert offs, "no power failure in the run"
    assert all("error" not in v for v in offs), offs
    assert sum(sum(v["lost-bytes"].values()) for v in offs) > 0  # type: ignore[union-attr]
    assert "power-off" in got.stdout
    assert_clean(run_dir)
    # The node's files are back in its data directory for the record.
    assert list(run_dir.glob("nodes/n1/data/*"))


def test_a_node_that_never_fsyncs_loses_acknowledged_writes_to_a_power_failure(tmp_path: Path) -> None:
    got = harness("run", "--system", "tests.harness.test_power_run:UnsyncedKvnode", "--store",
                  str(tmp_path / "store"), "--nodes", "3", "--time-limit", "10", "--nemesis", "power",
                  "--nemesis-interval", "3", "--nemesis-option", "power_targets=all", "--nemesis-option",
                  "power_torn=0", "--no-live", "--seed", "2", "--rate", "50", *FAST, cwd=ROOT)
    assert got.returncode == 1, got.stdout + got.stderr
    run_dir = next((tmp_path / "store").glob("*/2*"))
    assert sum(sum(v["lost-bytes"].values()) for v in power_ops(run_dir)) > 0  # type: ignore[union-attr]
    assert "lost-write" in got.stdout, got.stdout  # P3: acknowledged writes missing from the final reads
    assert_clean(run_dir)


def test_ctrl_c_leaves_no_lazy_disk_mounted(tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--store", str(store), "--nodes", "3",
                             "--time-limit", "120", "--nemesis", "power", "--nemesis-interval", "1",
                             "--no-live", "--seed", "3", *FAST], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        history = store / "latest" / "history.jsonl"
        while time.monotonic() < deadline:
            if history.exists() and '"power-off"' in history.read_text():
                break
            time.sleep(0.2)
        else:
            pytest.fail("the run never got going")
        run_dir = (store / "latest").resolve()
        assert len(lazyfs_pids(run_dir)) == 3
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert_clean(run_dir)


@pytest.mark.netns
def test_power_failures_on_the_netns_backend(tmp_path: Path) -> None:
    from harness.backends.probe import netns_problem

    problem = netns_problem()
    if problem:
        pytest.skip(problem)
    got = harness("run", "--backend", "netns", "--subnet", "10.78.231.0/24", "--store", str(tmp_path / "store"),
                  "--nodes", "3", "--time-limit", "8", "--nemesis", "power", "--nemesis-interval", "2",
                  "--no-live", "--seed", "3", "--rate", "50", *FAST, cwd=tmp_path)
    assert got.returncode == 0, got.stdout + got.stderr
    run_dir = next((tmp_path / "store").glob("*/2*"))
    assert power_ops(run_dir) and all("error" not in v for v in power_ops(run_dir))
    assert_clean(run_dir)
