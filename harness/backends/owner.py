"""Which harness process owns a run: its pid and its start time, so that
`harness clean` leaves alone every run whose harness still lives (a pid
reused by a later process has another start time) and removes only what a
crashed one left behind. The token is "<pid>:<start>", the start in clock
ticks after boot (field 22 of proc(5)); every backend records it with what
it starts (a local pid file, a netns state file, a Docker label, an ssh
host's workdir)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The process's start time, which tells it from a later process given
    the same pid; None if there is no such process or it is a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # comm may hold spaces and parentheses
    if not fields or fields[0] == "Z":
        return None
    try:
        return int(fields[19])  # field 22 of proc(5); fields here start at field 3
    except (IndexError, ValueError):
        return None


def same_process(pid: object, start: object) -> bool:
    """Is `pid` still the process that started at `start`?"""
    return isinstance(pid, int) and pid > 0 and isinstance(start, int) and start_time(pid) == start


def token(pid: int | None = None) -> str:
    """"<pid>:<start>" of this process (or of `pid`)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{start_time(pid)}"


def alive(owner: str) -> bool:
    """Is the process of `owner` (a `token`) still running? False for
    anything that is not a token."""
    pid, _, start = owner.strip().partition(":")
    return pid.isdigit() and start.isdigit() and same_process(int(pid), int(start))


def host_token() -> str:
    """"<host> <pid>:<start>": the owner as a remote host records it, since
    only the controller's host can tell whether that process lives."""
    return f"{socket.gethostname()} {token()}"


def host_alive(recorded: str) -> bool | None:
    """For a `host_token`: True or False if it names this host, None if it
    names another (which this host cannot ask)."""
    host, _, owner = recorded.strip().partition(" ")
    if host != socket.gethostname():
        return None
    return alive(owner)
