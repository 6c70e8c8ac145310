"""A deterministic asyncio event loop for simulation: virtual time, a seeded
order among ready callbacks, and a hash of everything it ran.

- **Virtual time.** `loop.time()` starts at 0 and moves only when nothing is
  ready to run: it then jumps to the earliest timer. A one-hour
  `asyncio.sleep` takes no wall time; `wait_for` and `asyncio.timeout` work
  unchanged, since they read `loop.time()`.
- **A seeded interleaving.** Each step takes every ready callback (as
  asyncio's own loop does) and runs them in an order shuffled by the loop's
  `random.Random(seed)`: concurrent tasks interleave differently per seed, and
  the same seed gives the same order. Tasks and futures the loop makes hash
  by a per-loop serial number, not by address, so a `set` of them (which
  `asyncio.wait` and the node's code use) iterates in the same order on
  every run.
- **A trace.** Each callback run adds "virtual time, description" to a
  blake2b hash (`trace_hash`); descriptions name the callback's qualified
  name and, for a task's step, the task's per-loop serial and coroutine name,
  never an address. Same seed and same program: same hash.
- **Pauses.** `pause(owner)` freezes everything an owner (a node's
  incarnation, see `OWNER`) would run, as SIGSTOP freezes a process: its
  callbacks and due timers are held, in order, until `resume(owner)` puts
  them back; the rest of the world runs on. Held callbacks are not traced
  until they run.
- **Refusals.** The world has no threads, executors, subprocesses, sockets,
  signals or file-descriptor watchers: each raises `SimulationError` naming
  what was attempted and the seam to use instead (`kvnode.offload`'s
  `InlineOffload`, the simulated transport, ...). `threading.Thread.start`
  is refused too while a simulated loop runs in the calling thread.

When every task waits and no timer is pending the program can never move
again: `run_until_complete` raises `SimulationError` ("deadlock") instead of
waiting forever.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import hashlib
import heapq
import random
import threading
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["OWNER", "SimLoop", "SimulationError", "run"]

# Who a task belongs to (a simulated node's incarnation, say): a task takes
# the owner of the context it is created in, so everything a node spawns is
# its own, and `SimLoop.tasks_of` finds it to cancel when the node crashes.
OWNER: contextvars.ContextVar[str | None] = contextvars.ContextVar("harness_sim_owner", default=None)

T = TypeVar("T")


class SimulationError(RuntimeError):
    """Something the simulated world cannot do (a thread, a socket, ...) or
    a simulated program that can never make progress."""


class _SimFuture(asyncio.Future[Any]):
    # Hash (and so set order) by creation order in this loop, not by address.
    _sim_serial: int

    def __hash__(self) -> int:
        return self._sim_serial


class _SimTask(asyncio.Task[Any]):
    def __init__(self, coro: Any, *, loop: SimLoop, serial: int, name: str | None,
                 context: contextvars.Context | None) -> None:
        # Set before Task.__init__, which hashes the task (the loop's set of
        # all tasks) and schedules its first step (described in the trace).
        self._sim_serial = serial
        self._sim_owner = context.get(OWNER) if context is not None else OWNER.get()
        self._sim_name = f"{serial}:{getattr(coro, '__qualname__', type(coro).__name__)}"
        super().__init__(coro, loop=loop, name=name, context=context)

    def __hash__(self) -> int:
        return self._sim_serial


def _refuse(what: str, instead: str) -> SimulationError:
    return SimulationError(f"{what} is not allowed inside the simulated world: {instead}")


_real_thread_start = threading.Thread.start


def _guarded_thread_start(self: threading.Thread) -> None:
    if isinstance(asyncio._get_running_loop(), SimLoop):
        raise _refuse(f"starting a thread ({self.name})",
                      "hand blocking work to kvnode.offload.InlineOffload and storage to InlineBackground")
    _real_thread_start(self)


_guard_depth = 0


class SimLoop(asyncio.BaseEventLoop):
    """An event loop on virtual time with a seeded order of ready callbacks.
    Run it like any loop (`run_until_complete`); `run()` below is the short way."""

    # BaseEventLoop's own state, which the typeshed stubs do not declare.
    _scheduled: list[Any]
    _ready: collections.deque[Any]
    _timer_cancelled_count: int
    _stopping: bool
    _check_closed: Callable[[], None]

    def __init__(self, seed: int, *, start: float = 0.0, shuffle: bool = True) -> None:
        super().__init__()
        self.shuffle = shuffle  # False: ready callbacks run in the order they came, as asyncio's own loop runs them
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, not {type(seed).__name__}")
        self.seed = seed
        self.rng = random.Random(seed)
        self._now = float(start)
        self._serial = 0
        self._trace = hashlib.blake2b(digest_size=16)
        self.steps = 0
        self._clock_resolution = 0.0
        # What asyncio would log: a callback that raised (a bug to see:
        # `callback_errors`), and tasks whose exception nobody retrieved
        # (counted only: the node leaves abandoned quorum requests so, and
        # when they are collected depends on the garbage collector).
        self.callback_errors: list[str] = []
        self.unretrieved = 0
        self._paused: dict[str, list[asyncio.Handle]] = {}  # owner -> its held callbacks, in order

    # ------------------------------------------------------------ time

    def time(self) -> float:
        return self._now

    @property
    def trace_hash(self) -> str:
        """Hex digest of every step run so far (time and callback)."""
        return self._trace.hexdigest()

    # ------------------------------------------------- futures and tasks

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def create_future(self) -> asyncio.Future[Any]:
        future = _SimFuture(loop=self)
        future._sim_serial = self._next_serial()
        return future

    def create_task(  # type: ignore[override]
        self, coro: Coroutine[Any, Any, T] | Generator[Any, None, T], *, name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        self._check_closed()
        serial = self._next_serial()
        task = _SimTask(coro, loop=self, serial=serial, name=name, context=context)
        return task

    def tasks_of(self, owner: str) -> list[asyncio.Task[Any]]:
        """The unfinished tasks made in a context whose OWNER is `owner`, in creation order."""
        tasks = [t for t in asyncio.all_tasks(self) if isinstance(t, _SimTask) and t._sim_owner == owner]
        return sorted(tasks, key=hash)

    # ----------------------------------------------------------- pauses

    def pause(self, owner: str) -> None:
        """Hold every callback of `owner` from now on (see the module docstring)."""
        self._paused.setdefault(owner, [])

    def resume(self, owner: str) -> None:
        """Run `owner`'s held callbacks again, in the order they were held."""
        self._ready.extend(self._paused.pop(owner, []))

    def is_paused(self, owner: str) -> bool:
        return owner in self._paused

    def _hold(self, batch: list[asyncio.Handle]) -> list[asyncio.Handle]:
        runnable = []
        for handle in batch:
            owner = handle._context.get(OWNER)  # type: ignore[attr-defined]
            held = self._paused.get(owner) if owner is not None else None
            if held is None:
                runnable.append(handle)
            else:
                held.append(handle)
        return runnable

    def set_task_factory(self, factory: Any) -> None:
        raise _refuse("a task factory", "the simulated loop makes its own tasks so that their order is stable")

    # -------------------------------------------------------- the step

    def _describe(self, handle: asyncio.Handle) -> str:
        callback: Any = handle._callback  # type: ignore[attr-defined]
        owner = getattr(callback, "__self__", None)
        name = getattr(callback, "__qualname__", None) or type(callback).__name__
        if isinstance(owner, _SimTask):
            return f"{name}@{owner._sim_name}"
        if isinstance(owner, _SimFuture):
            return f"{name}@f{owner._sim_serial}"
        return name

    def _run_once(self) -> None:
        # Drop cancelled timers from the head of the heap.
        while self._scheduled and self._scheduled[0]._cancelled:
            self._timer_cancelled_count -= 1
            heapq.heappop(self._scheduled)._scheduled = False
        if not self._ready:
            if self._stopping:
                return
            if not self._scheduled:
                raise SimulationError(
                    f"deadlock at virtual time {self._now:.6f}: every task waits and no timer is pending")
            # Nothing to run: time jumps to the next timer.
            self._now = max(self._now, self._scheduled[0]._when)
        while self._scheduled and self._scheduled[0]._when <= self._now:
            handle = heapq.heappop(self._scheduled)
            handle._scheduled = False
            self._ready.append(handle)
        batch = list(self._ready)
        self._ready.clear()
        if self._paused:
            batch = self._hold(batch)
        if self.shuffle:
            self.rng.shuffle(batch)
        now = repr(self._now).encode()
        for handle in batch:
            if handle._cancelled:
                continue
            self.steps += 1
            self._trace.update(now + b" " + self._describe(handle).encode() + b"\n")
            handle._run()

    def run_forever(self) -> None:
        global _guard_depth
        if _guard_depth == 0:
            threading.Thread.start = _guarded_thread_start  # type: ignore[method-assign]
        _guard_depth += 1
        try:
            super().run_forever()
        finally:
            _guard_depth -= 1
            if _guard_depth == 0:
                threading.Thread.start = _real_thread_start  # type: ignore[method-assign]

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        exception = context.get("exception")
        if "handle" in context and "future" not in context:
            self.callback_errors.append(f"{context.get('message')}: {exception!r} in {context['handle']!r}")
        else:
            self.unretrieved += 1

    def _write_to_self(self) -> None:
        # Only call_soon_threadsafe uses this (to wake a selector); there is none.
        return None

    def _process_events(self, event_list: Any) -> None:
        return None

    # -------------------------------------------------------- refusals

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:  # type: ignore[override]
        inner: Any = func
        if isinstance(func, functools.partial) and func.args:  # asyncio.to_thread: partial(ctx.run, fn, ...)
            inner = func.args[0]
        raise _refuse(f"run_in_executor({getattr(inner, '__qualname__', type(inner).__name__)})",
                      "hand blocking work to kvnode.offload.InlineOffload (asyncio.to_thread ends here too)")

    def set_default_executor(self, executor: Any) -> None:
        raise _refuse("an executor", "hand blocking work to kvnode.offload.InlineOffload")

    def call_soon_threadsafe(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        if threading.current_thread() is not threading.main_thread() and self.is_running():
            raise _refuse("a call from another thread", "the world has one thread")
        return self.call_soon(callback, *args, context=context)

    async def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        raise _refuse(f"resolving {host}:{port}", "nodes reach each other through harness.sim.network")

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> Any:
        raise _refuse(f"resolving {sockaddr}", "nodes reach each other through harness.sim.network")

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        where = ":".join(str(a) for a in args[1:3]) or kwargs.get("host", "?")
        raise _refuse(f"a real connection to {where} (open_connection/create_connection)",
                      "nodes reach each other through the simulated transport (harness.sim.network)")

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        where = ":".join(str(a) for a in args[1:3]) or kwargs.get("host", "?")
        raise _refuse(f"a real server on {where} (start_server/create_server)",
                      "a simulated node is reached in-process through harness.sim.network")

    async def create_unix_connection(self, *args: Any, **kwargs: Any) -> Any:
        raise _refuse("a unix-socket connection", "use the simulated transport (harness.sim.network)")

    async def create_unix_server(self, *args: Any, **kwargs: Any) -> Any:
        raise _refuse("a unix-socket server", "use the simulated transport (harness.sim.network)")

    async def create_datagram_endpoint(self, *args: Any, **kwargs: Any) -> Any:
        raise _refuse("a datagram socket", "use the simulated transport (harness.sim.network)")

    async def connect_accepted_socket(self, *args: Any, **kwargs: Any) -> Any:
        raise _refuse("a real socket", "use the simulated transport (harness.sim.network)")

    async def sock_connect(self, sock: Any, address: Any) -> None:
        raise _refuse(f"a socket connect to {address}", "use the simulated transport (harness.sim.network)")

    async def sock_accept(self, sock: Any) -> Any:
        raise _refuse("a socket accept", "use the simulated transport (harness.sim.network)")

    async def sock_recv(self, sock: Any, n: int) -> bytes:
        raise _refuse("a socket read", "use the simulated transport (harness.sim.network)")

    async def sock_sendall(self, sock: Any, data: Any) -> None:
        raise _refuse("a socket write", "use the simulated transport (harness.sim.network)")

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
        raise _refuse(f"a subprocess ({args[1] if len(args) > 1 else '?'})",
                      "a simulated node runs in-process (harness.sim.world)")

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> Any:
        raise _refuse(f"a subprocess shell ({args[1] if len(args) > 1 else '?'})",
                      "a simulated node runs in-process (harness.sim.world)")

    def add_reader(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:  # type: ignore[override]
        raise _refuse("watching a file descriptor", "use the simulated transport (harness.sim.network)")

    def add_writer(self, fd: Any, callback: Callable[..., object], *args: Any) -> None:  # type: ignore[override]
        raise _refuse("watching a file descriptor", "use the simulated transport (harness.sim.network)")

    def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: Any) -> None:  # type: ignore[override]
        raise _refuse(f"a signal handler (signal {sig})", "crash and stop nodes through harness.sim.world")


def run(main: Coroutine[Any, Any, T], seed: int) -> tuple[T, SimLoop]:
    """Run `main` to completion on a fresh `SimLoop(seed)`; return its result
    and the loop (for `time()`, `trace_hash`, `steps`). Tasks still pending at
    the end are cancelled and awaited, on virtual time, as `asyncio.run` does."""
    loop = SimLoop(seed)
    try:
        result = loop.run_until_complete(main)
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        return result, loop
    finally:
        loop.close()
