"""`harness run` as a user runs it: bad flags, Ctrl-C in the middle of a
run, re-checking a stored run, and a system of one's own."""

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

FAST = ["--node-setting", "gossip_interval=0.2", "--node-setting", "suspect_after=1",
        "--node-setting", "dead_after=2", "--node-setting", "ae_interval=2"]


def harness(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--nemesis", "partition,bogus"], "unknown nemesis 'bogus'"),
    (["--w", "4"], "--w 4 and --r 2 must be between 1 and --n 3"),
    (["--n", "7", "--nodes", "5"], "--n 7 must be between 1 and --nodes 5"),
    (["--backend", "ssh"], "--backend ssh needs --nodes-file nodes.toml"),
    (["--workload", "queue"], "'queue' is not one of"),
    (["--node-setting", "oops"], "expected KEY=VALUE"),
    (["--system", "nowhere.at.all:Thing"], "cannot import nowhere.at.all"),
    (["--time-limit", "-1"], "--time-limit"),
])
def test_a_wrong_flag_is_one_clear_line_and_exit_254(tmp_path: Path, args: list[str], message: str) -> None:
    got = harness("run", "--store", str(tmp_path / "store"), *args, cwd=tmp_path)
    assert got.returncode == 254, got.stderr
    assert message in got.stderr
    assert "Traceback" not in got.stderr
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
    assert "INVALID" in got.stdout and "siblings" in got.stdout
    run_dir = (tmp_path / "store" / "latest").resolve()
    stored = json.loads((run_dir / "results.json").read_text())
    assert stored["valid"] is False
    types = {a["type"] for a in stored["checkers"]["siblings"]["anomalies"]}
    assert types & {"lost-write", "divergent", "stale-read"}, types

    again = harness("check", str(tmp_path / "store" / "latest"), "--json", cwd=tmp_path)
    assert again.returncode == 1, again.stderr
    assert json.loads(again.stdout)["checkers"]["siblings"]["valid"] is False
    assert os.path.samefile(json.loads(again.stdout)["run"], run_dir)


@pytest.mark.slow
def test_a_crash_of_the_harness_leaves_the_history_and_no_cluster(tmp_path: Path) -> None:
    got = harness("run", "--system", "tests.harness.crashing_system:CrashingKV", "--nodes", "3",
                  "--time-limit", "2", "--nemesis", "pause", "--nemesis-interval", "0.5",
                  "--store", str(tmp_path / "store"), "--no-live", cwd=Path(__file__).resolve().parents[2])
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
