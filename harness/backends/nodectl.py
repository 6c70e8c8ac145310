"""nodectl: the ssh backend's agent on a node's host.

`harness.backends.ssh` uploads this file to every host as
`<workdir>/nodectl.py` at each setup and runs it with the host's own
`python3`, so it must stay a single file that needs nothing but the standard
library (Python 3.8 or later) and never imports the harness. One operation
per call, one JSON line out; exit status 1 with {"error": ...} on failure.

    start NODE_DIR ENV_JSON ARGV...  start the node in a session of its own
    signal NODE_DIR NAME             signal its process group (KILL: wait until gone)
    status NODE_DIR                  {"pid": the running node's pid or null,
                                      "exited": null or {"status": S}: how it ended on its own}
    write FILE TEXT                  replace FILE atomically
    routes ADDR...                   {"ADDR": device toward ADDR}
    probe PYTHON ENV_JSON            {"problem": ""} if PYTHON under ENV_JSON sees its
                                     wall clock +1000 s and its monotonic clock true
    shift-clock SECONDS              (as root, through sudo) move the host's real wall clock
                                     (CLOCK_REALTIME) by SECONDS; 0 only checks that it could

Files in NODE_DIR: `node.pid`, the running node's pid, which is also its
process group's id (removed when `signal KILL` ended it); `node.exit`, "PID
STATUS" once that process ended, written by the small waiter process that
`start` leaves behind to wait for the node (STATUS as Python's subprocess
reports it: negative for the signal that killed it). A pid is taken for our
node only while its process carries `HARNESS_NODE_DIR=<NODE_DIR>` in the
environment it started with: pids are reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, NoReturn

MARK = "HARNESS_NODE_DIR"
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", "/usr/bin:/bin"), "/usr/sbin", "/sbin"])
PROBE = ("import asyncio, threading, time; w, m = time.time(), time.monotonic(); time.sleep(0.01); "
         "threading.Event().wait(0.01); asyncio.run(asyncio.sleep(0.01)); print(w, m)")
EXIT_WAIT_S = 0.5  # for the waiter to record the status of a node that just ended
USAGE = "usage: nodectl.py start|signal|status|write|routes|probe|shift-clock ..."


def answer(obj: Any, code: int = 0) -> NoReturn:
    print(json.dumps(obj))
    sys.stdout.flush()
    sys.exit(code)


def read_pid(d: str) -> int | None:
    try:
        with open(os.path.join(d, "node.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def ours(pid: int, d: str) -> bool:
    """The process lives (a zombie is gone) and carries our mark."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and (f"{MARK}={d}").encode() in env


def node_pid(d: str) -> int | None:
    pid = read_pid(d)
    return pid if pid is not None and ours(pid, d) else None


def write(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def exit_status(d: str, pid: int) -> int | None:
    """The status `node.exit` records for `pid`, if it does."""
    try:
        with open(os.path.join(d, "node.exit")) as f:
            recorded, status = f.read().split()
        return int(status) if int(recorded) == pid else None
    except (OSError, ValueError):
        return None


def start(d: str, env_json: str, argv: list[str]) -> NoReturn:
    """Fork a waiter that leaves the SSH session, starts the node in a
    session of its own (its pid = its process group's id), writes
    `node.pid`, tells us the pid, and then waits for the node to record how
    it ended in `node.exit`."""
    pid = node_pid(d)
    if pid is not None:
        answer({"error": f"the node of {d} is running already (pid {pid})"}, 1)
    env = dict(os.environ)
    env.update(json.loads(env_json))
    env[MARK] = d
    logs = os.path.join(d, "log")
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(d, "node.exit"))
    sys.stdout.flush()
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.close(read_end)
        _waiter(d, env, argv, logs, write_end)  # never returns
    os.close(write_end)
    chunks = []
    while True:
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    told = b"".join(chunks).decode("utf-8", "replace")
    if told.isdigit():
        answer({"pid": int(told)})
    answer({"error": told or "the waiter died before starting the node"}, 1)


def _waiter(d: str, env: dict[str, str], argv: list[str], logs: str, tell: int) -> NoReturn:
    code = 0
    try:
        os.setsid()  # out of the SSH session: its end must not end us
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # the SSH channel sees EOF only once no one holds it
            os.dup2(null, fd)
        os.close(null)
        try:
            with open(os.devnull, "rb") as stdin, open(os.path.join(logs, "stdout.log"), "ab") as out, \
                    open(os.path.join(logs, "stderr.log"), "ab") as err:
                proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=err, env=env, cwd=d,
                                        start_new_session=True, close_fds=True)
            write(os.path.join(d, "node.pid"), f"{proc.pid}\n")
        except Exception as e:
            os.write(tell, (f"cannot start {argv[0]}: {e}").encode())
            os.close(tell)
            os._exit(1)
        os.write(tell, str(proc.pid).encode())
        os.close(tell)
        status = proc.wait()
        write(os.path.join(d, "node.exit"), f"{proc.pid} {status}\n")
    except BaseException:
        code = 1
    os._exit(code)


def status(d: str) -> NoReturn:
    pid = read_pid(d)
    if pid is None:  # never started here, or ended by `signal KILL`
        answer({"pid": None, "exited": None})
    if ours(pid, d):
        answer({"pid": pid, "exited": None})
    deadline = time.monotonic() + EXIT_WAIT_S
    recorded = exit_status(d, pid)
    while recorded is None and time.monotonic() < deadline:
        time.sleep(0.01)
        recorded = exit_status(d, pid)
    answer({"pid": None, "exited": {"status": recorded}})


def signal_node(d: str, name: str) -> NoReturn:
    pid = node_pid(d)
    if pid is None:
        answer({"pid": None})
    sig = getattr(signal, "SIG" + name)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    if sig == signal.SIGKILL:
        deadline = time.monotonic() + 30
        while ours(pid, d):
            if time.monotonic() > deadline:
                answer({"error": f"pid {pid} still there 30 s after SIGKILL"}, 1)
            time.sleep(0.02)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(d, "node.pid"))
    answer({"pid": pid})


def routes(addresses: list[str]) -> NoReturn:
    found = {}
    for a in addresses:
        got = subprocess.run(["ip", "-o", "route", "get", a], capture_output=True, text=True, env=dict(os.environ, PATH=SBIN_PATH))
        if got.returncode != 0:
            answer({"error": f"ip route get {a}: {got.stderr.strip()}"}, 1)
        words = got.stdout.split()
        found[a] = words[words.index("dev") + 1] if "dev" in words else None
    answer(found)


def probe(python: str, env_json: str) -> NoReturn:
    env = dict(os.environ)
    env.update(json.loads(env_json))
    wall, mono = time.time(), time.monotonic()
    try:
        got = subprocess.run([python, "-c", PROBE], env=env, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        answer({"problem": f"a Python child under libfaketime failed to run: {e}"})
    if got.returncode != 0:
        last = (got.stderr.strip().splitlines() or ["(no output)"])[-1]
        answer({"problem": f"a Python child under libfaketime failed: {last}"})
    try:
        child_wall, child_mono = (float(x) for x in got.stdout.split())
    except ValueError:
        answer({"problem": f"unexpected probe output {got.stdout[:100]!r}"})
    if abs(child_wall - wall - 1000) > 60:
        answer({"problem": "the wall clock did not follow the control file"})
    if abs(child_mono - mono) > 60:
        answer({"problem": "the monotonic clock moved too"})
    answer({"problem": ""})


def shift_clock(text: str) -> NoReturn:
    """Move CLOCK_REALTIME by `text` seconds, relative to its reading here
    (so the SSH round trip adds no error); CLOCK_MONOTONIC is not touched
    by that. 0: only check that we could (root, clock_settime)."""
    try:
        seconds = float(text)
    except ValueError:
        answer({"error": f"shift-clock needs a number of seconds, not {text!r}"}, 1)
    if os.geteuid() != 0:
        answer({"error": "setting the wall clock needs root: log in as root, or set sudo = true and "
                         "allow the user `sudo -n` for this host's python3"}, 1)
    if not hasattr(time, "clock_settime_ns"):
        answer({"error": "this Python cannot set clocks (no time.clock_settime_ns)"}, 1)
    if seconds:
        try:
            now = time.clock_gettime_ns(time.CLOCK_REALTIME)
            time.clock_settime_ns(time.CLOCK_REALTIME, now + round(seconds * 1e9))
        except OSError as e:
            answer({"error": f"clock_settime(CLOCK_REALTIME) failed: {e}"}, 1)
    answer({"shifted": seconds})


def main(args: list[str]) -> NoReturn:
    op = args[0] if args else ""
    if op == "start" and len(args) >= 4:
        start(args[1], args[2], args[3:])
    elif op == "signal" and len(args) == 3:
        signal_node(args[1], args[2])
    elif op == "status" and len(args) == 2:
        status(args[1])
    elif op == "write" and len(args) == 3:
        write(args[1], args[2])
        answer({})
    elif op == "routes":
        routes(args[1:])
    elif op == "probe" and len(args) == 3:
        probe(args[1], args[2])
    elif op == "shift-clock" and len(args) == 2:
        shift_clock(args[1])
    answer({"error": f"{USAGE} (got {args!r})"}, 1)


if __name__ == "__main__":
    main(sys.argv[1:])
