"""Runner benchmark: the harness's own ceiling, with nothing to wait on.

`--concurrency` workers (default 50) run the `register` workload through the
real client loop of `harness run` (`harness.generator.worker`: workload
generator, invocation and completion records, process replacement, pacing
off) against an in-process client that answers at once, for `--seconds`;
every operation is recorded in a `history.jsonl` and flushed line by line, as
in a real run. Printed: operations per second generated, recorded and flushed,
beside the issue's target (10,000 ops/s) and a baseline measured in the same
run: the same number of history lines written by `HistoryWriter` alone, from
one plain loop (what recording costs with no generator, no asyncio). The
ratio runner / baseline says how much of the ceiling the runner's own work
takes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench.common import positive
from checkers.history import Op
from harness.generator import Pace, worker
from harness.history import HistoryWriter, read_jsonl
from harness.recorder import Recorder
from harness.systems.base import Completion, Invocation, NodeSetup
from workloads.base import WorkloadOptions
from workloads.register import RegisterWorkload

TARGET = 10_000


class InstantClient:
    """A multi-value register in memory that answers at once."""

    def __init__(self, data: dict[str, list[str]]) -> None:
        self.data = data

    async def open(self, node: NodeSetup) -> None:
        pass

    async def invoke(self, op: Invocation) -> Completion:
        await asyncio.sleep(0)  # a real client yields to the loop while it waits for the answer
        key = str(op.key)
        if op.f == "read":
            return Completion("ok", list(self.data.get(key, [])), context=len(self.data.get(key, [])))
        self.data[key] = [str(op.value)]
        return Completion("ok", op.value)

    async def close(self) -> None:
        pass


async def _run_workers(path: Path, concurrency: int, seconds: float) -> tuple[int, float]:
    recorder = Recorder(path)
    data: dict[str, list[str]] = {}
    workload = RegisterWorkload(WorkloadOptions(concurrency=concurrency))

    async def open_client(node: str) -> InstantClient:
        return InstantClient(data)

    started = time.perf_counter()
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(worker(i, f"n{i % 5 + 1}", workload=workload, open_client=open_client,
                                  recorder=recorder, deadline=deadline, pace=Pace(None, concurrency), seed=1,
                                  op_timeout=5.0) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    recorder.close()
    return recorder.counts["invoke"], elapsed


def _baseline(path: Path, lines: int) -> float:
    started = time.perf_counter()
    with HistoryWriter(path) as w:
        for i in range(lines):
            w.write(Op(index=i, time=i, process=i % 50, type="invoke" if i % 2 == 0 else "ok", f="write",
                       key=f"k{i % 7}", value=f"{i % 50}.{i}", node="n1"))
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=positive, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dir", default=None, help="where the history is written (default: a temporary dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        history = Path(tmp) / "history.jsonl"
        ops, elapsed = asyncio.run(_run_workers(history, args.concurrency, args.seconds))
        lines = sum(1 for _ in open(history))  # noqa: SIM115
        checked = len(read_jsonl(history))
        base = _baseline(Path(tmp) / "baseline.jsonl", lines)
    rate = ops / elapsed
    base_rate = lines / 2 / base
    print(f"runner benchmark: {args.concurrency} workers, instant client, {elapsed:.1f} s, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"  operations: {ops:,} ({lines:,} history lines, {checked:,} read back)")
    print(f"  runner:   {rate:10,.0f} ops/s   target {TARGET:,} ops/s: {'met' if rate >= TARGET else 'MISSED'}")
    print(f"  baseline: {base_rate:10,.0f} ops/s   (HistoryWriter alone, 2 lines per op)")
    print(f"  ratio runner/baseline: {rate / base_rate:.2f}")


if __name__ == "__main__":
    main()
