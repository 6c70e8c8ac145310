"""The one seam through which the storage engine runs work beside its caller.

Flushing memtables, compacting tables and the periodic WAL sync of
`sync="interval"` run on threads in production (`ThreadBackground`). A
deterministic simulation or a test swaps in `InlineBackground`, which runs each
job at once in the caller's thread and leaves periodic jobs to be driven by
hand, so that a whole run is a pure function of its inputs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol


class Periodic(Protocol):
    def stop(self) -> None:
        """Stop the job and wait for a run in progress to end."""
        ...


class Background(Protocol):
    def start(self, name: str, job: Callable[[], None]) -> None:
        """Run `job` once, beside the caller. Called without the engine's lock
        held; the job takes the locks it needs and must not raise (the engine
        records its own background errors)."""
        ...

    def every(self, name: str, seconds: float, job: Callable[[], None]) -> Periodic:
        """Run `job` every `seconds` until stopped."""
        ...

    def join(self) -> None:
        """Wait until every job started so far has finished (used by close)."""
        ...


class _PeriodicThread:
    def __init__(self, name: str, seconds: float, job: Callable[[], None]) -> None:
        self._stopped = threading.Event()
        self._seconds = seconds
        self._job = job
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopped.wait(self._seconds):
            self._job()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


class ThreadBackground:
    """Each job on a daemon thread of its own (the engine runs at most one flush
    and one compaction at a time, so there are never more than a few)."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self, name: str, job: Callable[[], None]) -> None:
        t = threading.Thread(target=job, name=name, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()

    def every(self, name: str, seconds: float, job: Callable[[], None]) -> Periodic:
        return _PeriodicThread(name, seconds, job)

    def join(self) -> None:
        while True:
            with self._lock:
                alive = [t for t in self._threads if t.is_alive() and t is not threading.current_thread()]
            if not alive:
                return
            for t in alive:
                t.join()


class _ManualPeriodic:
    def __init__(self, job: Callable[[], None]) -> None:
        self.job: Callable[[], None] | None = job

    def stop(self) -> None:
        self.job = None


class InlineBackground:
    """Runs every job synchronously, in the caller's thread, when it is started.
    Periodic jobs run only when `tick()` is called."""

    def __init__(self) -> None:
        self._periodic: list[_ManualPeriodic] = []

    def start(self, name: str, job: Callable[[], None]) -> None:
        job()

    def every(self, name: str, seconds: float, job: Callable[[], None]) -> Periodic:
        p = _ManualPeriodic(job)
        self._periodic.append(p)
        return p

    def tick(self) -> None:
        for p in list(self._periodic):
            if p.job is not None:
                p.job()

    def join(self) -> None:
        return None
