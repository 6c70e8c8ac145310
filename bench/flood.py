"""Flood benchmark: a well-behaved client's latency while another connection
to the same node pipelines requests as fast as it can.

A 3-node kvnode cluster on loopback (`tests.kvnode.cluster.LocalCluster`,
N=3 W=2 R=2). `--keys` keys are written once (untimed). Then one
well-behaved client (an `AsyncClient` on node n1) loops for `--seconds`,
one request at a time: a get of a random key, and every fourth operation a
put. Its latencies are taken with `time.perf_counter` around each call.

- **baseline**: the client alone.
- **flood**: the same, while a flooder in a process of its own, on another
  connection to n1, pipelines `status` requests (the request of the issue's
  report: about 400 KB of them stalled a node for 25 s) as fast as the
  socket takes them, and reads the replies in a second thread so that the
  node is limited by its own bounds, not by a full send buffer.

`--rounds` pairs of the two alternate (baseline, flood, baseline, ...),
each side `--seconds` long, so that the machine's other load falls on both.
Printed: a table of both runs (ops, p50, p99, max, errors), the flood's
request rate, whether n2 and n3 saw n1 alive throughout (polled each 0.2 s),
and p99(flood) / p99(baseline) beside the target (under 2x), never
asserted. With 2 cores shared by 3 nodes, the client and the flooder, the
figure is noisy: run it a few times.

    python -m bench.flood                            # 3 rounds of 5 s + 5 s
    python -m bench.flood --rounds 1 --seconds 2     # quick

Everything lives in one temporary directory under `--dir`, removed at the
end; every process started is killed by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

import msgpack
from tabulate import tabulate

from bench.common import positive
from bench.node import percentile
from kvnode.client import AsyncClient, KvError
from tests.kvnode.cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = "flood"
TARGET = 2.0  # p99(flood) / p99(baseline), from the issue
SETTINGS: dict[str, object] = {"n": 3, "w": 2, "r": 2, "sync": "never"}
_BATCH = 256  # status frames written per sendall by the flooder


@dataclass(kw_only=True, slots=True)
class Run:
    label: str
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    flood_replies: int = 0
    dead_seen: set[str] = field(default_factory=set)  # "n2 saw n1 suspect", ...

    def merge(self, other: Run) -> None:
        self.elapsed += other.elapsed
        self.latencies += other.latencies
        self.errors.update(other.errors)
        self.flood_replies += other.flood_replies
        self.dead_seen |= other.dead_seen


def _frame(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def flooder(host: str, port: int, cluster: str) -> None:
    """The flooding process: handshake, then status requests without pause;
    prints how many replies it read when it gets SIGTERM."""
    sock = socket.create_connection((host, port))
    sock.sendall(_frame({"type": "hello", "id": 0, "version": 1, "cluster": cluster, "node": None,
                         "nonce": None, "token": None}))
    replies = 0
    stop = threading.Event()

    def read() -> None:
        nonlocal replies
        buffer = b""
        while not stop.is_set():
            chunk = sock.recv(1 << 16)
            if not chunk:
                return
            buffer += chunk
            while len(buffer) >= 4:
                (length,) = struct.unpack_from(">I", buffer)
                if len(buffer) < 4 + length:
                    break
                buffer = buffer[4 + length:]
                replies += 1

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def finish(*_: object) -> None:
        stop.set()
        print(replies, flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, finish)
    ids = 1
    while True:
        batch = b"".join(_frame({"type": "status", "id": ids + i}) for i in range(_BATCH))
        ids += _BATCH
        sock.sendall(batch)


async def _client_loop(addr: str, keys: int, seconds: float, seed: int, run: Run,
                       watch: list[AsyncClient]) -> None:
    rng = random.Random(seed)
    async with AsyncClient(addr, cluster=CLUSTER, timeout=10.0) as kv:
        await kv.get(b"warm-up")
        start = perf_counter()
        i = 0
        while perf_counter() - start < seconds:
            key = b"flood-key-%06d" % rng.randrange(keys)
            t0 = perf_counter()
            try:
                if i % 4 == 3:
                    await kv.put(key, b"v%d" % i)
                else:
                    await kv.get(key)
                run.latencies.append(perf_counter() - t0)
            except KvError as e:
                run.errors[e.code] += 1
            i += 1
            if i % 20 == 0:
                for peer in watch:
                    with contextlib.suppress(KvError):
                        status = await peer.status()
                        state = status["membership"].get("n1", {}).get("state")
                        if state != "alive":
                            run.dead_seen.add(f"{status['node']} saw n1 {state}")
        run.elapsed = perf_counter() - start


async def _measure(c: LocalCluster, params: argparse.Namespace, label: str) -> Run:
    run = Run(label=label)
    watch = [AsyncClient(c.addr(n), cluster=CLUSTER, timeout=5.0) for n in ("n2", "n3")]
    try:
        await _client_loop(c.addr("n1"), params.keys, params.seconds, params.seed, run, watch)
    finally:
        for w in watch:
            await w.close()
    return run


async def _load(c: LocalCluster, keys: int) -> None:
    async with AsyncClient(c.addresses, cluster=CLUSTER, timeout=10.0) as kv:
        for i in range(keys):
            await kv.put(b"flood-key-%06d" % i, b"initial")


def _row(run: Run) -> list[object]:
    values = sorted(run.latencies)
    ms = 1000.0
    return [run.label, len(values), f"{percentile(values, 0.5) * ms:.2f}", f"{percentile(values, 0.99) * ms:.2f}",
            f"{(values[-1] if values else float('nan')) * ms:.2f}", sum(run.errors.values()) or "",
            f"{run.flood_replies / run.elapsed:,.0f}" if run.flood_replies and run.elapsed else ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per round and side  [default: 5]")
    parser.add_argument("--rounds", type=positive, default=3, help="baseline/flood pairs, alternating  [default: 3]")
    parser.add_argument("--keys", type=positive, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", default=None, help="where the temporary directory goes")
    parser.add_argument("--flooder", nargs=3, metavar=("HOST", "PORT", "CLUSTER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flooder:
        flooder(args.flooder[0], int(args.flooder[1]), args.flooder[2])
        return 0
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    root = Path(tempfile.mkdtemp(prefix="bench-flood-", dir=args.dir))
    proc: subprocess.Popen[str] | None = None
    try:
        c = LocalCluster(root, 3, settings=SETTINGS, cluster=CLUSTER)
        with c:
            asyncio.run(_load(c, args.keys))
            baseline, flood = Run(label="baseline"), Run(label="flood")
            # Rounds alternate, so that a change in the machine's other load
            # during the run falls on both sides alike.
            for _ in range(args.rounds):
                baseline.merge(asyncio.run(_measure(c, args, "baseline")))
                proc = subprocess.Popen(
                    [sys.executable, "-m", "bench.flood", "--flooder", "127.0.0.1", str(c.ports["n1"]), CLUSTER],
                    cwd=ROOT, stdout=subprocess.PIPE, text=True,
                )
                round_ = asyncio.run(_measure(c, args, "flood"))
                os.kill(proc.pid, signal.SIGTERM)
                out, _ = proc.communicate(timeout=30)
                proc = None
                round_.flood_replies = int(out.strip() or 0)
                flood.merge(round_)
    finally:
        if proc is not None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}; "
          f"python {platform.python_version()}; {args.rounds} rounds of {args.seconds:g} s a side, {args.keys} keys")
    print(tabulate([_row(baseline), _row(flood)],
                   headers=["run", "ops", "p50 ms", "p99 ms", "max ms", "errors", "flood replies/s"]))
    print()
    ratio = percentile(sorted(flood.latencies), 0.99) / percentile(sorted(baseline.latencies), 0.99)
    print(f"p99(flood) / p99(baseline) = {ratio:.2f}x")
    print(f"target: p99(flood) < {TARGET:g}x the baseline: {'met' if ratio < TARGET else 'NOT met'}")
    seen = sorted(baseline.dead_seen | flood.dead_seen)
    print(f"peers' view of n1 during the runs: {'; '.join(seen) if seen else 'alive throughout'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
