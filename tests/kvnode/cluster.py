"""Real `kvnode serve` processes on loopback, for the node's end-to-end tests
and benchmarks.

`LocalCluster` starts N nodes on 127.0.0.1 with OS-chosen free ports, waits
until each accepts connections, and can kill (SIGKILL), stop (SIGTERM) and
restart single nodes. It ends every process it started, by its pid, on every
exit path (use it as a context manager).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalCluster:
    root: Path
    size: int = 3
    settings: dict[str, object] = field(default_factory=dict)
    cluster: str = "test"
    env: dict[str, str] | None = None  # extra environment for the node processes
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ids = [f"n{i + 1}" for i in range(self.size)]
        self.ports = {n: free_port() for n in self.ids}

    @property
    def peers(self) -> str:
        return ",".join(f"{n}=127.0.0.1:{p}" for n, p in self.ports.items())

    def addr(self, node: str) -> str:
        return f"127.0.0.1:{self.ports[node]}"

    @property
    def addresses(self) -> list[str]:
        return [self.addr(n) for n in self.ids]

    def start(self, node: str) -> None:
        args = [
            sys.executable, "-m", "kvnode", "serve", "--id", node, "--listen", self.addr(node),
            "--data", str(self.root / node), "--peers", self.peers, "--cluster", self.cluster,
            "--log", str(self.root / f"{node}.log"),
        ]
        for key, value in self.settings.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        env = {**os.environ, **self.env} if self.env else None
        self.procs[node] = subprocess.Popen(
            args, stderr=open(self.root / f"{node}.stderr", "ab"), env=env  # noqa: SIM115
        )
        self.wait_listening(node)

    def wait_listening(self, node: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            proc = self.procs[node]
            if proc.poll() is not None:
                err = (self.root / f"{node}.stderr").read_text()
                raise RuntimeError(f"{node} exited with {proc.returncode}: {err[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.ports[node]), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{node} is not listening after {timeout}s") from None
                time.sleep(0.02)

    def start_all(self) -> LocalCluster:
        for node in self.ids:
            self.start(node)
        return self

    def kill(self, node: str) -> None:
        """SIGKILL: no chance to flush or close anything."""
        proc = self.procs.pop(node)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def pause(self, node: str) -> None:
        """SIGSTOP: the process keeps its sockets open but answers nothing."""
        os.kill(self.procs[node].pid, signal.SIGSTOP)

    def resume(self, node: str) -> None:
        os.kill(self.procs[node].pid, signal.SIGCONT)

    def terminate(self, node: str) -> int:
        """SIGTERM: a clean shutdown; returns the exit status."""
        proc = self.procs.pop(node)
        os.kill(proc.pid, signal.SIGTERM)
        return proc.wait(timeout=30)

    def close(self) -> None:
        for node in list(self.procs):
            proc = self.procs.pop(node)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # in case it was paused
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> LocalCluster:
        return self.start_all()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
