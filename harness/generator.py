"""The client side of a run: one worker per client slot, each bound to a node,
taking operations from its workload worker, pacing them, recording each
invocation and completion, and turning into a new process after an
indeterminate (`info`) completion, as DESIGN.md says (old id + concurrency).

Pacing: `rate` operations per second in total, each worker waiting a random
time between 0 and twice its mean interval before each operation (Jepsen's
stagger), so that workers do not march in lockstep. Each worker draws its
operations and its pauses from random streams of its own, seeded from the
run's seed: the schedule of operations does not depend on timing.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from contract.ops import Completion, Invocation
from harness.recorder import Recorder
from harness.systems.base import Client
from workloads.base import Workload

OpenClient = Callable[[str], Awaitable[Client]]  # node -> an open client
# Called with each operation and its completion before it is recorded;
# raises to stop the run (the runner's check of what user code returned).
CheckCompletion = Callable[[Invocation, Completion], None]


@dataclass(frozen=True)
class Pace:
    rate: float | None  # operations per second over all workers; None: as fast as they complete
    concurrency: int

    def delay(self, rng: random.Random) -> float:
        if not self.rate:
            return 0.0
        return rng.uniform(0.0, 2.0 * self.concurrency / self.rate)


class OpTimer:
    """`asyncio.timeout` for one worker's stream of operations, with one
    armed timer per worker instead of one per operation: a timer per
    operation leaves a cancelled handle in the event loop's heap for every
    operation, and at thousands of operations a second the heap's upkeep
    costs more than the rest of the runner.

    The timer fires at the oldest deadline it was armed for; if the operation
    in flight is overdue then, the worker's task is cancelled (the cancel
    lands in the client's await, the only place the worker waits while an
    operation is in flight) and the operation is `info`; otherwise the
    timer re-arms for the operation in flight."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._deadline: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._fired = False

    def _fire(self) -> None:
        self._handle = None
        if self._deadline is None or self._task is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= self._deadline:
            self._fired = True
            self._task.cancel()
        else:
            self._handle = loop.call_at(self._deadline, self._fire)

    async def invoke(self, client: Client, op: Invocation) -> Completion:
        """The completion of `op`; never raises (but passes on a
        cancellation that is not its own)."""
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._deadline = loop.time() + self.timeout
        if self._handle is None:
            self._handle = loop.call_at(self._deadline, self._fire)
        try:
            return await client.invoke(op)
        except asyncio.CancelledError:
            if self._fired and self._task is not None:
                self._fired = False
                if self._task.uncancel() == 0:
                    return Completion("info", error=f"timeout: no answer in {self.timeout:g} s")
            raise
        except Exception as e:
            return Completion("info", error=f"{type(e).__name__}: {e}"[:200])
        finally:
            self._deadline = None
            if self._fired and self._task is not None:  # a client that swallowed our cancel
                self._fired = False
                self._task.uncancel()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


async def invoke(client: Client, op: Invocation, timeout: float) -> Completion:
    """The completion of one `op` (see `OpTimer`); never raises (but passes
    cancellation on)."""
    timer = OpTimer(timeout)
    try:
        return await timer.invoke(client, op)
    finally:
        timer.close()


def record_completion(recorder: Recorder, process: int, node: str, op: Invocation, c: Completion) -> None:
    recorder.record(process, c.type, op.f, key=op.key, value=op.value if c.value is None else c.value,
                    node=node, error=c.error, extra=c.extra)


async def _open(open_client: OpenClient, node: str, deadline: float) -> Client | None:
    while True:
        try:
            return await open_client(node)
        except asyncio.CancelledError:
            raise
        except Exception:
            if time.monotonic() + 0.5 >= deadline:
                return None
            await asyncio.sleep(0.5)


# node -> a node on the far side of the partition in force (one `node` cannot
# reach), or None when nothing cuts it off. Reads right after an
# acknowledged write go there: a stale read shows only where the write did
# not reach.
Route = Callable[[str, random.Random], str | None]


async def worker(index: int, node: str, *, workload: Workload, open_client: OpenClient, recorder: Recorder,
                 deadline: float, pace: Pace, seed: int, op_timeout: float,
                 check: CheckCompletion | None = None, route: Route | None = None) -> None:
    """Run one client slot until the monotonic `deadline`; `check` vets each
    completion before it is recorded (its exception ends the worker). With
    `route`, the first read after an acknowledged write goes to the far side
    of the partition in force, through a client of that node (the same
    process: a process is a logical client, as in Jepsen)."""
    gen = workload.worker(index, random.Random(f"{seed}:ops:{index}"))
    pauses = random.Random(f"{seed}:pace:{index}")
    routes = random.Random(f"{seed}:route:{index}")
    process = index
    timer = OpTimer(op_timeout)
    client = await _open(open_client, node, deadline)
    far: dict[str, Client] = {}  # clients of other nodes, opened on first use
    cross = False  # the last operation was an acknowledged write
    try:
        while client is not None:
            wait = pace.delay(pauses)
            if time.monotonic() + wait >= deadline:
                return
            if wait:
                await asyncio.sleep(wait)
            op = gen.next()
            target, via = node, client
            if cross and op.f == "read" and route is not None:
                other = route(node, routes)
                if other is not None and other != node:
                    if other not in far:
                        try:  # once: a far node that cannot be reached now is no reason to wait
                            far[other] = await open_client(other)
                        except asyncio.CancelledError:
                            raise
                        except Exception:
                            pass
                    if other in far:
                        target, via = other, far[other]
            recorder.record(process, "invoke", op.f, key=op.key, value=op.value, node=target, extra=op.extra)
            completion = await timer.invoke(via, op)
            if check is not None:
                check(op, completion)
            record_completion(recorder, process, target, op, completion)
            gen.completed(op, completion)
            cross = completion.type == "ok" and op.f != "read"
            if completion.type == "info":
                # This process may still have an operation in flight: it is
                # gone for good, and the worker goes on as a new one.
                process += pace.concurrency
                gen.new_process()
                cross = False
                for other_client in far.values():
                    await other_client.close()
                far.clear()
                await client.close()
                client = None
                client = await _open(open_client, node, deadline)
    finally:
        timer.close()
        for other_client in far.values():
            await other_client.close()
        if client is not None:
            await client.close()
