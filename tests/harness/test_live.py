"""`harness run` on a terminal: the live status line is redrawn while the
workload runs (not only at the end), and Ctrl-C says what it did (faults
healed, nodes stopped, where the history is) instead of a bare "Aborted!".

The run is driven through a pseudo-terminal, as a person at a terminal
would see it."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HARNESS = [sys.executable, "-m", "harness"]
LIVE = re.compile(rb"(\d+\.\d) s  ok (\d+)  fail \d+  info \d+  faults: ")


def _read(fd: int, until: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], max(0.0, until - time.monotonic()))
    if not ready:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:  # the child closed the terminal
        return b""


def test_the_live_line_is_redrawn_during_the_run_and_ctrl_c_says_what_it_did(tmp_path: Path) -> None:
    store = tmp_path / "store"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*HARNESS, "run", "--nodes", "1", "--n", "1", "--w", "1", "--r", "1", "--time-limit", "60", "--rate", "20",
         "--nemesis", "none", "--store", str(store), "--seed", "3"],
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True, cwd=tmp_path)
    os.close(slave)
    out = b""
    seen: list[tuple[float, int]] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len({ok for _, ok in seen if ok > 0}) < 3:
            chunk = _read(master, deadline)
            out += chunk
            seen = [(float(m.group(1)), int(m.group(2))) for m in LIVE.finditer(out)]
            assert proc.poll() is None, out.decode(errors="replace")
        # Drawn at least three times with growing counts while the workload ran.
        assert len({ok for _, ok in seen if ok > 0}) >= 3, out.decode(errors="replace")
        assert b"operations:" not in out
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            out += _read(master, time.monotonic() + 0.5)
        out += _read(master, time.monotonic() + 0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    text = out.decode(errors="replace")
    assert proc.returncode == 130, text
    assert "Aborted!" not in text
    message = re.search(r"interrupted: faults healed, 1 node stopped; history kept at (\S+history\.jsonl)", text)
    assert message, text
    assert Path(message.group(1)).stat().st_size > 0
