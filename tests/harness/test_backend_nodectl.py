"""The ssh backend's agent, `harness.backends.nodectl`, run here as a host
runs it (a file, Python without site-packages: the standard library only):
the node it starts, the exit status its waiter records, signals that reach
the node alone, and `shift-clock`'s arithmetic with the clock call faked
(a test must never set this machine's clock)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from harness.backends import nodectl
from harness.backends.ssh import NODECTL


def call(*args: str) -> dict[str, Any]:
    """nodectl.py as the ssh backend runs it, but here: its JSON answer."""
    done = subprocess.run([sys.executable, "-I", "-S", str(NODECTL), *args], capture_output=True, text=True,
                          timeout=60, check=False)
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(answer, dict)
    if done.returncode != 0:
        assert "error" in answer, done
    return answer


@pytest.fixture
def node_dir(tmp_path: Path) -> Iterator[str]:
    d = tmp_path / "node"
    (d / "log").mkdir(parents=True)
    try:
        yield str(d)
    finally:
        call("signal", str(d), "KILL")  # whatever a test left running there


def until_exited(d: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = call("status", d)
        if answer["exited"] is not None:
            return answer
        assert time.monotonic() < deadline, answer
        time.sleep(0.02)


def state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def test_the_agent_is_the_module_file() -> None:
    assert Path(nodectl.__file__) == NODECTL and NODECTL.is_file()


def test_a_node_that_exits_at_once_leaves_its_status(node_dir: str) -> None:
    assert call("status", node_dir) == {"pid": None, "exited": None}  # never started
    started = call("start", node_dir, json.dumps({"X": "1"}), sys.executable, "-c",
                   "import os, sys; print(os.environ['X']); sys.exit(3)")
    assert isinstance(started["pid"], int)
    assert until_exited(node_dir) == {"pid": None, "exited": {"status": 3}}
    assert (Path(node_dir) / "log" / "stdout.log").read_text() == "1\n"
    assert (Path(node_dir) / "node.exit").read_text() == f"{started['pid']} 3\n"


def test_signals_reach_the_node_and_a_kill_by_us_is_no_exit(node_dir: str) -> None:
    pid = call("start", node_dir, "{}", sys.executable, "-c", "import time; time.sleep(60)")["pid"]
    assert call("status", node_dir) == {"pid": pid, "exited": None}
    assert os.getpgid(pid) == pid  # a session of its own: the group is the node's alone
    assert call("start", node_dir, "{}", "true")["error"].endswith(f"is running already (pid {pid})")
    call("signal", node_dir, "STOP")
    deadline = time.monotonic() + 5
    while state(pid) != "T":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert call("status", node_dir) == {"pid": pid, "exited": None}  # paused counts as running
    call("signal", node_dir, "CONT")
    assert call("signal", node_dir, "KILL") == {"pid": pid}
    assert state(pid) in ("", "Z")
    assert call("status", node_dir) == {"pid": None, "exited": None}


def test_a_node_killed_by_something_else_reports_the_signal(node_dir: str) -> None:
    pid = call("start", node_dir, "{}", sys.executable, "-c", "import time; time.sleep(60)")["pid"]
    os.kill(pid, signal.SIGKILL)  # the node this test started, ended behind the agent's back
    assert until_exited(node_dir)["exited"] == {"status": -signal.SIGKILL}
    # A new start forgets the old ending.
    call("start", node_dir, "{}", sys.executable, "-c", "import time; time.sleep(60)")
    assert call("status", node_dir)["exited"] is None


def test_a_program_that_cannot_start_is_an_error(node_dir: str) -> None:
    answer = call("start", node_dir, "{}", "/nonexistent/program")
    assert "cannot start /nonexistent/program" in answer["error"]


def test_usage_errors_name_the_operations() -> None:
    assert "shift-clock" in call("frobnicate")["error"]


def shift(seconds: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as ended:
        nodectl.main(["shift-clock", seconds])
    return int(ended.value.code or 0), json.loads(out.getvalue())


def test_shift_clock_moves_the_realtime_clock_by_the_difference(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(nodectl.os, "geteuid", lambda: 0)
    # Never the real call: this machine's clock must not move.
    monkeypatch.setattr(nodectl.time, "clock_settime_ns", lambda clock, ns: calls.append((clock, ns)))
    before = time.clock_gettime_ns(time.CLOCK_REALTIME)
    assert shift("-2.5") == (0, {"shifted": -2.5})
    after = time.clock_gettime_ns(time.CLOCK_REALTIME)
    [(clock, ns)] = calls
    assert clock == time.CLOCK_REALTIME
    assert before - 2_500_000_000 <= ns <= after - 2_500_000_000
    assert shift("0") == (0, {"shifted": 0.0}) and len(calls) == 1  # 0: a check, nothing set
    assert shift("soon")[0] == 1


def test_shift_clock_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodectl.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(nodectl.time, "clock_settime_ns", lambda clock, ns: pytest.fail("must not be called"))
    code, answer = shift("5")
    assert code == 1 and "needs root" in answer["error"]
