"""Node processes on this machine, as the `local` and `netns` backends run
them: started, signalled, reaped and reported in one place.

Each node's process runs in a session of its own, so its pid is also the id
of its process group, and SIGKILL, SIGSTOP and SIGCONT go to that whole
group (a wrapper script cannot leave an orphan behind). Nothing is ever
signalled by name, and nothing but the processes started here. Its output is
appended to `stdout.log` and `stderr.log` in the node's log directory, and
`note` appends to that directory's `backend.log` what a backend did to the
node, and when (docker and ssh keep theirs in the same form).

    procs = NodeProcesses()
    proc = procs.start("n1", argv, environ, log_dir)   # argv already wrapped
    procs.signal("n1", signal.SIGSTOP)
    await procs.exited("n1")                          # None while it runs
    await procs.kill("n1")                            # SIGKILL and reap
    stuck = procs.kill_all()                          # teardown and atexit
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from harness.backends.base import Exited
from harness.backends.faketime import ClockControl, child_environ

__all__ = ["WAIT_S", "NodeProcesses", "copy_tree", "node_environ", "note"]

WAIT_S = 30.0  # for a SIGKILLed process to be reaped


def node_environ(env: Mapping[str, str], clock: ClockControl | None, library: Path | None) -> dict[str, str]:
    """The whole environment of a node's process: ours plus `env`, under
    libfaketime following `clock` when there is one."""
    if clock is not None:
        return child_environ(clock.path, dict(env), library=library)
    return {**os.environ, **env}


def note(log_dir: str | Path, text: str) -> None:
    """A line in the node's backend.log: what was done to it, and when."""
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    with contextlib.suppress(OSError), open(Path(log_dir) / "backend.log", "a") as f:
        f.write(f"{stamp} {text}\n")


def copy_tree(source: Path, dest: Path) -> list[Path]:
    """Copy the files under `source` into `dest` (kept relative); returns
    the copies. A file already in place is not copied onto itself."""
    copied: list[Path] = []
    if not source.is_dir():
        return copied
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        target = dest / path.relative_to(source)
        if target.exists() and target.resolve() == path.resolve():
            copied.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        copied.append(target)
    return copied


class NodeProcesses:
    """The processes started for the nodes, one per node at a time."""

    def __init__(self) -> None:
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node: str, argv: Sequence[str], environ: Mapping[str, str],
              log_dir: str | Path) -> subprocess.Popen[bytes]:
        """Start `argv` (the whole command line, any wrapper included) in a
        session of its own, output appended to the log directory's
        stdout.log and stderr.log. Raises if the node's process runs."""
        old = self._procs.get(node)
        if old is not None:
            if old.poll() is None:
                raise RuntimeError(f"{node} is running already (pid {old.pid})")
            del self._procs[node]  # it ended on its own; poll() reaped it
        log_dir = Path(log_dir)
        out: IO[bytes] = open(log_dir / "stdout.log", "ab")  # noqa: SIM115 -- handed to the child
        try:
            err: IO[bytes] = open(log_dir / "stderr.log", "ab")  # noqa: SIM115
            try:
                proc = subprocess.Popen(
                    [str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    env=dict(environ), start_new_session=True, close_fds=True,
                )
            finally:
                err.close()
        finally:
            out.close()
        self._procs[node] = proc
        return proc

    def running(self, node: str) -> subprocess.Popen[bytes] | None:
        """The node's process while it exists (a paused one counts)."""
        proc = self._procs.get(node)
        return proc if proc is not None and proc.poll() is None else None

    def pid(self, node: str) -> int | None:
        proc = self.running(node)
        return proc.pid if proc is not None else None

    def exited(self, node: str) -> Exited | None:
        """How the node's process ended on its own; None while it runs, if
        it never started, or after `kill` (an end the backend made)."""
        proc = self._procs.get(node)
        if proc is None:
            return None
        status = proc.poll()
        return None if status is None else Exited(status)

    def signal(self, node: str, sig: signal.Signals) -> subprocess.Popen[bytes] | None:
        """Send `sig` to the running process's group; the process, or None
        if it does not run."""
        proc = self.running(node)
        if proc is not None:
            _signal(proc, sig)
        return proc

    def cont_all(self) -> None:
        """SIGCONT every running process."""
        for proc in list(self._procs.values()):
            if proc.poll() is None:
                _signal(proc, signal.SIGCONT)

    async def kill(self, node: str) -> subprocess.Popen[bytes] | None:
        """SIGKILL the node's process group and reap it; the process if it
        was running (None: nothing to kill). Forgets it either way."""
        proc = self._procs.pop(node, None)
        if proc is None:
            return None
        running = proc.poll() is None
        if running:
            # Not SIGCONT first: a paused node must not get to run a moment.
            _signal(proc, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, WAIT_S)
        return proc if running else None

    def kill_all(self) -> tuple[list[tuple[str, int]], list[str]]:
        """SIGCONT and SIGKILL every process, reap them all and forget them
        (blocking: teardown runs it in a thread, atexit as it is). Returns
        (node, pid) of those that ran, and a line per process not reaped
        in WAIT_S."""
        procs = list(self._procs.items())
        self._procs.clear()
        killed = []
        for node, proc in procs:
            if proc.poll() is None:
                _signal(proc, signal.SIGCONT)
                _signal(proc, signal.SIGKILL)
                killed.append((node, proc.pid))
        stuck = []
        for node, proc in procs:
            try:
                proc.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                stuck.append(f"{node} (pid {proc.pid}) not reaped {WAIT_S:g} s after SIGKILL")
        return killed, stuck


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the process group made for `proc` (its id is proc's pid, set
    by start_new_session), else the process alone."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
