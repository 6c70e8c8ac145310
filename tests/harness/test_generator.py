"""The runner's client loop: what it records, how a crashed process is
replaced, pacing, and that the seed fixes the schedule of operations."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

from checkers.history import pair
from harness.generator import Pace, worker
from harness.history import read_jsonl
from harness.recorder import Recorder
from harness.systems.base import Completion, Invocation, NodeSetup
from workloads.base import WorkloadOptions
from workloads.register import RegisterWorkload


class FlakyClient:
    """Answers at once; every `info_every`-th operation is indeterminate,
    and one operation in a hundred hangs until the runner gives up on it."""

    def __init__(self, counter: list[int], info_every: int = 0, hang: bool = False) -> None:
        self.counter, self.info_every, self.hang = counter, info_every, hang
        self.closed = False

    async def open(self, node: NodeSetup) -> None:
        pass

    async def invoke(self, op: Invocation) -> Completion:
        await asyncio.sleep(0)
        self.counter[0] += 1
        if self.hang and self.counter[0] % 100 == 0:
            await asyncio.sleep(3600)
        if self.info_every and self.counter[0] % self.info_every == 0:
            return Completion("info", error="connection lost")
        if op.f == "read":
            return Completion("ok", [], context=None)
        return Completion("ok", op.value)

    async def close(self) -> None:
        self.closed = True


def _run(path: Path, *, concurrency: int = 3, seconds: float = 0.3, info_every: int = 0, hang: bool = False,
         rate: float | None = None, seed: int = 1, op_timeout: float = 5.0) -> list[FlakyClient]:
    counter = [0]
    clients: list[FlakyClient] = []

    async def open_client(node: str) -> FlakyClient:
        c = FlakyClient(counter, info_every, hang)
        clients.append(c)
        return c

    async def main() -> None:
        recorder = Recorder(path)
        workload = RegisterWorkload(WorkloadOptions(concurrency=concurrency))
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(worker(i, f"n{i + 1}", workload=workload, open_client=open_client,
                                      recorder=recorder, deadline=deadline, pace=Pace(rate, concurrency),
                                      seed=seed, op_timeout=op_timeout) for i in range(concurrency)))
        recorder.close()

    asyncio.run(main())
    return clients


def test_every_invocation_completes_and_indexes_are_dense(tmp_path: Path) -> None:
    clients = _run(tmp_path / "h.jsonl")
    history = read_jsonl(tmp_path / "h.jsonl")
    assert [o.index for o in history] == list(range(len(history)))
    ops = pair(history)
    assert len(ops) > 10 and all(o.completion is not None for o in ops)
    assert {o.invoke.node for o in ops} == {"n1", "n2", "n3"}
    assert all(c.closed for c in clients)
    times = [o.time for o in history]
    assert times == sorted(times)


def test_an_info_completion_retires_the_process(tmp_path: Path) -> None:
    clients = _run(tmp_path / "h.jsonl", info_every=5)
    ops = pair(read_jsonl(tmp_path / "h.jsonl"))
    by_process: dict[int, list[str]] = {}
    for o in ops:
        assert isinstance(o.process, int)
        by_process.setdefault(o.process, []).append(o.outcome)
    for process, outcomes in by_process.items():
        assert "info" not in outcomes[:-1], f"process {process} went on after an info"
    for slot in range(3):  # each worker's processes are slot, slot + 3, slot + 6 ... with no gap
        mine = sorted(p for p in by_process if p % 3 == slot)
        assert mine == list(range(slot, slot + 3 * len(mine), 3))
        assert all(by_process[p][-1] == "info" for p in mine[:-1])
    assert any(len([p for p in by_process if p % 3 == s]) > 1 for s in range(3))
    assert len(clients) > 3  # a new client for every new process


def test_an_operation_that_never_answers_becomes_info_at_the_timeout(tmp_path: Path) -> None:
    _run(tmp_path / "h.jsonl", hang=True, op_timeout=0.05, seconds=0.5)
    ops = pair(read_jsonl(tmp_path / "h.jsonl"))
    timeouts = [o for o in ops if o.completion is not None and (o.completion.error or "").startswith("timeout")]
    assert timeouts and all(o.outcome == "info" for o in timeouts)


def test_the_rate_limits_the_operations(tmp_path: Path) -> None:
    _run(tmp_path / "h.jsonl", rate=100, seconds=0.5)
    invocations = [o for o in read_jsonl(tmp_path / "h.jsonl") if o.type == "invoke"]
    assert 15 <= len(invocations) <= 90  # about 50 at 100 ops/s for 0.5 s


def test_the_seed_fixes_each_processs_operations(tmp_path: Path) -> None:
    def schedule(path: Path, seed: int) -> dict[int, list[tuple[str, str, object]]]:
        _run(path, seed=seed, seconds=0.2)
        out: dict[int, list[tuple[str, str, object]]] = {}
        for o in pair(read_jsonl(path)):
            assert isinstance(o.process, int)
            out.setdefault(o.process, []).append((o.f, o.key, o.invoke.value))
        return out

    a, b = schedule(tmp_path / "a.jsonl", 5), schedule(tmp_path / "b.jsonl", 5)
    c = schedule(tmp_path / "c.jsonl", 6)
    for p in set(a) & set(b):
        n = min(len(a[p]), len(b[p]))
        assert a[p][:n] == b[p][:n]
    p = min(a)
    n = min(len(a[p]), len(c[p]))
    assert a[p][:n] != c[p][:n]


def test_the_operation_timer_times_out_only_its_own_operations() -> None:
    from harness.generator import OpTimer

    class Slow:
        def __init__(self, delay: float) -> None:
            self.delay = delay

        async def open(self, node: NodeSetup) -> None:
            pass

        async def invoke(self, op: Invocation) -> Completion:
            await asyncio.sleep(self.delay)
            return Completion("ok", op.value)

        async def close(self) -> None:
            pass

    async def main() -> list[str]:
        timer = OpTimer(0.05)
        outcomes = []
        for delay in (0.0, 0.2, 0.01, 0.2, 0.0):  # fast, hung, fast ... on one timer
            c = await timer.invoke(Slow(delay), Invocation("write", "k", 1))
            outcomes.append(c.type)
        # a cancellation that is not the timer's passes through
        task = asyncio.create_task(timer.invoke(Slow(10), Invocation("write", "k", 2)))
        await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
            outcomes.append("not cancelled")
        except asyncio.CancelledError:
            outcomes.append("cancelled")
        timer.close()
        return outcomes

    assert asyncio.run(main()) == ["ok", "info", "ok", "info", "ok", "cancelled"]


def test_the_first_read_after_an_acknowledged_write_goes_to_the_far_side(tmp_path: Path) -> None:
    """While a partition cuts n1 from n3, a read that follows an ok write
    through n1 is sent (and recorded) through n3, by a client of n3, in the
    same process; other reads stay on n1; with nothing cut, all stay."""
    import random

    counter = [0]
    opened: list[str] = []
    cut = {"on": True}

    async def open_client(node: str) -> FlakyClient:
        opened.append(node)
        return FlakyClient(counter)

    def route(node: str, rng: random.Random) -> str | None:
        return "n3" if cut["on"] and node == "n1" else None

    async def main(path: Path) -> None:
        recorder = Recorder(path)
        workload = RegisterWorkload(WorkloadOptions(concurrency=1))
        await worker(0, "n1", workload=workload, open_client=open_client, recorder=recorder,
                     deadline=time.monotonic() + 0.3, pace=Pace(None, 1), seed=1, op_timeout=5.0, route=route)
        recorder.close()

    asyncio.run(main(tmp_path / "h.jsonl"))
    ops = pair(read_jsonl(tmp_path / "h.jsonl"))
    after_write = [b for a, b in itertools.pairwise(ops) if a.invoke.f != "read" and b.invoke.f == "read"]
    assert after_write and all(o.invoke.node == "n3" and o.completion is not None and o.completion.node == "n3"
                               for o in after_write)
    others = [b for a, b in itertools.pairwise(ops) if a.invoke.f == "read"]
    assert others and all(o.invoke.node == "n1" for o in others)
    assert {o.invoke.process for o in ops} == {0}
    assert opened == ["n1", "n3"]  # the far client is opened once and kept

    cut["on"] = False
    opened.clear()
    asyncio.run(main(tmp_path / "h2.jsonl"))
    assert {o.invoke.node for o in pair(read_jsonl(tmp_path / "h2.jsonl"))} == {"n1"}
    assert opened == ["n1"]
