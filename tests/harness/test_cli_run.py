"""`harness run` as a user runs it: bad flags, bad system options, systems
that refuse or break, Ctrl-C in the middle of a run, re-checking a stored
run, a run file, and a system of one's own."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.history import read_jsonl

FAST = ["--set", "gossip_interval=0.2", "--set", "suspect_after=1", "--set", "dead_after=2",
        "--set", "ae_interval=2"]
ROOT = Path(__file__).resolve().parents[2]


def harness(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--nemesis", "partition,bogus"], "unknown nemesis 'bogus'"),
    (["--w", "4"], "kvnode: w (4) and r (2) cannot exceed n (3)"),
    (["--n", "7", "--nodes", "5"], "n=7 replicas per key need at least 7 nodes, not 5"),
    (["--backend", "ssh"], "needs --nodes-file nodes.toml"),
    (["--backend", "nowhere"], "no backend named 'nowhere' is registered"),
    (["--workload", "queue"], "no workload named 'queue' is registered (registered: "),
    (["--set", "oops"], "expected KEY=VALUE"),
    (["--set", "bogus=1"], "kvnode has no option 'bogus' (its options: "),
    (["--set", "n=three"], "kvnode's option n: 'three' is not an integer"),
    (["--resolution", "fast"], "kvnode's option resolution: 'fast' is not one of dvv, lww"),
    (["--check", "serializable"], "--check serializable: the register workload cannot check it"),
    (["--system", "nowhere.at.all:Thing"], "cannot import nowhere.at.all"),
    (["--system", "tests.harness.adapters:SilentKV"], "promises nothing for the register workload"),
    (["--system", "tests.harness.adapters:PickyKV", "--backend", "netns"],
     "picky-kv cannot run here: picky-kv does not run in network namespaces"),
    (["--system", "examples.lonely_kv:LonelyKV", "--workload", "cart"],
     "lonely-kv only has a client for the register workload"),
    (["--system", "examples.lonely_kv:LonelyKV", "--set", "n=3"], "lonely-kv has no option 'n' (its options: none)"),
    (["--time-limit", "-1"], "--time-limit"),
    (["--name", "../.."], "--name: test name '../..'"),
    (["--name", "latest"], "--name: test name 'latest'"),
])
def test_a_wrong_flag_is_one_clear_line_and_exit_254(tmp_path: Path, args: list[str], message: str) -> None:
    got = harness("run", "--store", str(tmp_path / "store"), *args, cwd=ROOT)
    assert got.returncode == 254, got.stderr
    assert message in got.stderr
    assert "Traceback" not in got.stderr
    said = [line for line in got.stderr.splitlines() if line.strip() and not line.startswith(("Usage:", "Try '"))]
    assert len(said) == 1, got.stderr  # one line (click adds its usage lines to a usage error)
    assert not list((tmp_path / "store").glob("*/*/nodes/*/data")), "a cluster was started for a bad flag"


def _pids(run_dir: Path) -> list[int]:
    pids = []
    for log in run_dir.glob("nodes/*/log/backend.log"):
        pids += [int(p) for p in re.findall(r"start pid=(\d+)", log.read_text())]
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


@pytest.mark.slow
def test_ctrl_c_heals_and_tears_down_and_leaves_a_readable_history(tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--store", str(store), "--nodes", "3",
                             "--time-limit", "120", "--nemesis", "partition,pause,clock", "--nemesis-interval",
                             "1", "--no-live", "--seed", "3", *FAST], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        history = store / "latest" / "history.jsonl"
        while time.monotonic() < deadline:
            if history.exists() and '"nemesis"' in history.read_text():
                break
            time.sleep(0.2)
        else:
            pytest.fail("the run never got going")
        run_dir = (store / "latest").resolve()
        pids = _pids(run_dir)
        assert len(pids) >= 3
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert not [p for p in pids if _alive(p)], "node processes outlived the harness"
    assert not list(run_dir.glob("nodes/*/*.faketime")), "faketime control files left behind"
    assert not list(run_dir.glob("nodes/*/pid")), "pid files left behind"
    ops = read_jsonl(run_dir / "history.jsonl")
    assert ops and [o.index for o in ops] == list(range(len(ops)))


@pytest.mark.slow
def test_a_stored_run_is_checked_again_and_a_system_of_ones_own_is_caught(tmp_path: Path) -> None:
    # examples/lonely_kv.py replicates nothing: reads through one node miss
    # writes acknowledged by another, and the final reads disagree.
    got = harness("run", "--system", "examples.lonely_kv:LonelyKV", "--nodes", "3", "--time-limit", "5",
                  "--store", str(tmp_path / "store"), "--no-live", "--seed", "1", "--recovery-timeout", "1",
                  cwd=tmp_path)
    assert got.returncode == 1, got.stdout + got.stderr
    assert "INVALID" in got.stdout and "linearizable" in got.stdout
    assert "checked: linearizable (promised by lonely-kv: each key holds one value)" in got.stdout
    run_dir = (tmp_path / "store" / "latest").resolve()
    stored = json.loads((run_dir / "results.json").read_text())
    assert stored["valid"] is False
    assert set(stored["checkers"]) == {"linearizable", "stats"}, "only what it promises is checked"
    assert stored["checkers"]["linearizable"]["anomalies"][0]["type"] == "nonlinearizable"

    again = harness("check", str(tmp_path / "store" / "latest"), "--json", cwd=tmp_path)
    assert again.returncode == 1, again.stderr
    assert json.loads(again.stdout)["checkers"]["linearizable"]["valid"] is False
    assert os.path.samefile(json.loads(again.stdout)["run"], run_dir)


@pytest.mark.slow
def test_a_crash_of_the_harness_leaves_the_history_and_no_cluster(tmp_path: Path) -> None:
    got = harness("run", "--system", "tests.harness.adapters:CrashingKV", "--nodes", "3",
                  "--time-limit", "2", "--nemesis", "pause", "--nemesis-interval", "0.5",
                  "--store", str(tmp_path / "store"), "--no-live", cwd=ROOT)
    assert got.returncode == 255, got.stderr
    assert "the convergence check blew up" in got.stderr
    run_dir = (tmp_path / "store" / "latest").resolve()
    pids = _pids(run_dir)
    assert len(pids) == 3
    assert not [p for p in pids if _alive(p)]
    ops = read_jsonl(run_dir / "history.jsonl")
    assert any(o.type == "ok" for o in ops)
    assert not (run_dir / "results.json").exists()


@pytest.mark.slow
def test_the_same_seed_gives_the_same_operations_and_faults(tmp_path: Path) -> None:
    def schedule(name: str) -> tuple[dict[object, list[tuple[object, ...]]], list[str]]:
        got = harness("run", "--system", "examples.lonely_kv:LonelyKV", "--nodes", "3", "--time-limit", "4",
                      "--nemesis", "pause,partition", "--nemesis-interval", "0.5", "--seed", "11",
                      "--store", str(tmp_path / name), "--no-live", "--recovery-timeout", "1", cwd=tmp_path)
        assert got.returncode in (0, 1), got.stderr
        ops = read_jsonl(tmp_path / name / "latest" / "history.jsonl")
        per_process: dict[object, list[tuple[object, ...]]] = {}
        for o in ops:
            if o.type == "invoke" and o.process != "nemesis" and not o.extra.get("final"):
                per_process.setdefault(o.process, []).append((o.f, o.key, o.value))
        faults = [f"{o.f} {o.value}" for o in ops if o.process == "nemesis" and o.type == "info"]
        return per_process, faults

    (a, fa), (b, fb) = schedule("a"), schedule("b")
    assert set(a) & set(b)
    for p in set(a) & set(b):
        n = min(len(a[p]), len(b[p]))
        assert n > 0 and a[p][:n] == b[p][:n]
    n = min(len(fa), len(fb))
    assert n >= 2 and fa[:n] == fb[:n]


def test_a_node_that_exits_at_start_up_stops_the_run_at_once_with_its_log(tmp_path: Path) -> None:
    started = time.monotonic()
    got = harness("run", "--system", "tests.harness.adapters:ExitingKV", "--nodes", "3", "--time-limit", "5",
                  "--store", str(tmp_path / "store"), "--no-live", cwd=ROOT)
    took = time.monotonic() - started
    assert got.returncode == 255, got.stderr
    assert "exited with status 3 while starting" in got.stderr
    assert "fatal: the data directory is corrupt" in got.stderr  # the last lines of its log
    assert "Traceback" not in got.stderr
    assert took < 20, f"took {took:.1f} s"  # not the 30 s start timeout (the harness itself starts in ~1 s)
    run_dir = (tmp_path / "store" / "latest").resolve()
    assert not [p for p in _pids(run_dir) if _alive(p)]


def test_a_completion_of_the_wrong_type_stops_the_run_naming_the_adapter(tmp_path: Path) -> None:
    got = harness("run", "--system", "tests.harness.adapters:LiarKV", "--nodes", "3", "--time-limit", "5",
                  "--store", str(tmp_path / "store"), "--no-live", cwd=ROOT)
    assert got.returncode == 255, got.stderr
    message = got.stderr.strip().splitlines()[-1]
    assert "adapter tests.harness.adapters:LiarKV (lonely-kv)" in message
    assert "type 'success'" in message and "it must be 'ok'" in message
    assert "Traceback" not in got.stderr
    run_dir = (tmp_path / "store" / "latest").resolve()
    assert not (run_dir / "results.json").exists(), "a run whose adapter misbehaved has no verdict"
    assert not [p for p in _pids(run_dir) if _alive(p)]


def test_a_users_system_is_found_in_system_path_without_pythonpath(tmp_path: Path) -> None:
    """The `harness` script (unlike `python -m`) does not put the current
    directory on the path: `--system-path DIR`, and the current directory,
    are searched all the same."""
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    (adapters / "my_store.py").write_text(
        "from examples.lonely_kv import LonelyKV\n\n"
        "class MyStore(LonelyKV):\n"
        "    name = 'my-store'\n\n"
        "    def __init__(self, replicas: int = 1, fast: bool = False) -> None:\n"
        "        super().__init__()\n"
        "        self.replicas, self.fast = replicas, fast\n")
    script = Path(sys.executable).parent / "harness"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    got = subprocess.run([str(script), "systems", "my_store:MyStore", "--system-path", str(adapters)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert got.returncode == 0, got.stderr
    assert "replicas" in got.stdout and "fast" in got.stdout and "register: promises linearizable" in got.stdout
    got = subprocess.run([str(script), "systems", "my_store:MyStore", "--set", "replicas=two"], cwd=adapters,
                         capture_output=True, text=True, timeout=60, env=env)
    assert got.returncode == 254, got.stderr
    assert "my-store's option replicas: 'two' is not an integer" in got.stderr


def test_harness_systems_and_list_show_options_promises_and_plug_ins(tmp_path: Path) -> None:
    got = harness("systems", "kvnode", "--set", "resolution=lww", "--set", "quorum=strict",
                  "--set", "read_repair=sync", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert "resolution" in got.stdout and "dvv | lww" in got.stdout and "write quorum" in got.stdout
    assert "register: promises last-write-wins; linearizable" in got.stdout
    listed = harness("list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    for name in ("kvnode", "etcd", "register", "cart", "partition", "clock", "local", "netns", "cas-register"):
        assert name in listed.stdout


@pytest.mark.slow
def test_a_run_file_sets_run_and_system_options_and_flags_override_it(tmp_path: Path) -> None:
    run_file = tmp_path / "run.toml"
    # ae_interval: a write n1 missed while paused is repaired within the
    # recovery timeout (the default, 10 s, is longer than the whole run).
    run_file.write_text('nodes = 3\ntime-limit = 3\nnemesis = ["pause"]\nnemesis_interval = 1\nseed = 5\n'
                        'recovery-timeout = 5\n\n[system]\nresolution = "lww"\ngossip_interval = 0.2\n'
                        'ae_interval = 1.0\n')
    got = harness("run", "--config", str(run_file), "--seed", "6", "--store", str(tmp_path / "store"),
                  "--no-live", cwd=tmp_path)
    assert got.returncode == 0, got.stdout + got.stderr
    test = json.loads((tmp_path / "store" / "latest" / "test.json").read_text())
    assert test["nodes"] == 3 and test["nemesis"] == ["pause"] and test["seed"] == 6
    assert test["system_settings"] == {"resolution": "lww", "gossip_interval": 0.2, "ae_interval": 1.0}
    assert [c["name"] for c in test["promise"]["claims"]] == ["last-write-wins"]
    bad = tmp_path / "bad.toml"
    bad.write_text("nodez = 3\n")
    got = harness("run", "--config", str(bad), cwd=tmp_path)
    assert got.returncode == 254 and "unknown key 'nodez'" in got.stderr
