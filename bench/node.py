"""Node benchmark: a 3-node kvnode cluster on loopback against a bare floor.

One run measures two things, one after the other, with the same number of
concurrent clients:

- **the cluster**: three real `kvnode serve` processes on 127.0.0.1
  (`tests.kvnode.cluster.LocalCluster`), N=3 W=2 R=2, WAL `sync="always"`.
  `--keys` keys are written once (untimed), then `--clients` coroutines, each
  with an `AsyncClient` of its own whose first address is node i mod 3 (so
  the clients are spread round-robin over the nodes), loop for `--seconds`:
  pick a key uniformly at random, then with probability 1/2 a get and
  otherwise a put of a `--value-size`-byte value. A put passes the context of
  the most recent get of that key by any client (`--put-context shared`, the
  default; blind only if no client has read the key yet), as clients sharing
  a session cache would. `--put-context own` uses only the same client's
  latest get of the key; with 32 clients and 1000 keys a client has rarely
  read the key it puts, so most puts are blind and siblings pile up (several
  per key), which makes every state, and so every put and get, heavier;
  `--put-context none` makes every put blind. The values per get and the
  number of blind puts are printed. Each operation's latency is taken with
  `time.perf_counter` around the one client call; errors are counted by their
  code and not timed.
- **the floor**: what any design of such a put must pay on this machine. A
  bare asyncio server in a process of its own on loopback, speaking the same
  framing (`kvnode.protocol`'s: a 4-byte big-endian length and a msgpack map
  with a type and an id; no handshake, no schema check). One floor operation
  is two sequential round trips on one connection: a `put` carrying the
  value, which the server answers after appending the value to a file and
  fdatasyncing it (the call the engine's WAL makes; on a worker thread, so
  the event loop keeps serving the other clients), then a `replica_put`
  carrying it again, answered at once. The same number of client coroutines
  run for the same time.

The ratio p50(put) / p50(floor) is printed with the issue's target (at most
3x), never asserted. A header gives the machine facts, including the latency
of one small append + fdatasync in `--dir` and the load average. Notes after
the tables give each node's counters and the CPU that the servers and the
clients used in each timed window: with this many clients both runs are
usually CPU-bound, and then latency is clients / throughput (Little's law),
so the ratio is mostly one of CPU per operation.

Run it from the repository root:

    python -m bench.node                                   # 20 s + 20 s, 32 clients
    python -m bench.node --seconds 5 --clients 8           # quick
    python -m bench.node --keys 100 --value-size 4096 --dir /mnt/ssd --seed 1

Everything (node data, logs, the floor's file) lives in one temporary
directory under `--dir`, removed at the end, also on Ctrl-C or an error; every
process started is killed by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter, process_time
from typing import Any

import msgpack
from tabulate import tabulate

from bench.common import filesystem, positive, version
from kvnode.client import AsyncClient, KvError
from tests.kvnode.cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = "bench"
NODES = 3
SETTINGS: dict[str, object] = {"n": 3, "w": 2, "r": 2, "sync": "always"}
TARGET = 3.0  # p50(put) / p50(floor), from the issue

GET, PUT, ALL = "get", "put", "all"
# Where a put's context comes from: the most recent get of the key by any
# client, by this client, or nowhere (every put blind).
PUT_CONTEXTS = ("shared", "own", "none")
FLOOR = "floor"

_POOL_BYTES = 1 << 16
_LOADERS = 32
_FLOOR_WORKERS = 8  # as many threads as the node's ThreadOffload
_FSYNC_PROBES = 200
_CLIENT_TIMEOUT = 10.0
_SERVER_START = 30.0


# ---------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True, slots=True)
class Params:
    seconds: float
    clients: int
    keys: int
    value_size: int
    seed: int
    put_context: str  # one of PUT_CONTEXTS


@dataclass(kw_only=True, slots=True)
class Tally:
    """What one client coroutine saw: its own, merged only after the run."""

    latencies: dict[str, list[float]] = field(default_factory=dict)  # op -> seconds
    errors: dict[str, Counter[str]] = field(default_factory=dict)  # op -> code -> count
    siblings: Counter[int] = field(default_factory=Counter)  # values per get -> count
    blind_puts: int = 0  # successful puts made without a context

    def ok(self, op: str, seconds: float) -> None:
        self.latencies.setdefault(op, []).append(seconds)

    def error(self, op: str, code: str) -> None:
        self.errors.setdefault(op, Counter())[code] += 1

    def merge(self, other: Tally) -> None:
        for op, values in other.latencies.items():
            self.latencies.setdefault(op, []).extend(values)
        for op, counts in other.errors.items():
            self.errors.setdefault(op, Counter()).update(counts)
        self.siblings.update(other.siblings)
        self.blind_puts += other.blind_puts


@dataclass(frozen=True, kw_only=True, slots=True)
class Row:
    """One line of a table: an operation type's figures over a run."""

    op: str
    ops: int
    rate: float  # ops/s
    mean: float  # seconds, as are the rest
    p50: float
    p99: float
    max: float
    errors: Counter[str]


@dataclass(kw_only=True, slots=True)
class Run:
    elapsed: float
    tally: Tally
    notes: list[str] = field(default_factory=list)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of an ascending sequence; nan if empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def row(op: str, latencies: list[float], errors: Counter[str], elapsed: float) -> Row:
    values = sorted(latencies)
    n = len(values)
    return Row(
        op=op, ops=n, rate=n / elapsed if elapsed > 0 else math.nan,
        mean=sum(values) / n if n else math.nan, p50=percentile(values, 0.50),
        p99=percentile(values, 0.99), max=values[-1] if n else math.nan, errors=errors,
    )


def rows(run: Run, ops: Sequence[str], *, total: str | None = None) -> list[Row]:
    t = run.tally
    out = [row(op, t.latencies.get(op, []), t.errors.get(op, Counter()), run.elapsed) for op in ops]
    if total is not None:
        every = [x for op in ops for x in t.latencies.get(op, [])]
        errors: Counter[str] = Counter()
        for op in ops:
            errors.update(t.errors.get(op, Counter()))
        out.append(row(total, every, errors, run.elapsed))
    return out


# ------------------------------------------------------------ the cluster


def _key(i: int) -> bytes:
    return b"bench-key-%08d" % i


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Values:
    """`--value-size`-byte windows of one random buffer: cheap to make, and
    not all alike (a value of zeros would flatter compression, were there any)."""

    def __init__(self, rng: random.Random, size: int) -> None:
        self._size = size
        self._pool = rng.randbytes(_POOL_BYTES + size)

    def pick(self, rng: random.Random) -> bytes:
        off = rng.randrange(_POOL_BYTES)
        return self._pool[off : off + self._size]


async def _load(clients: list[AsyncClient], keys: list[bytes], values: Values, seed: int) -> None:
    """Write every key once, untimed; this also opens the nodes' peer connections."""
    rng = random.Random(seed)
    todo = list(keys)

    async def loader(i: int) -> None:
        client = clients[i % len(clients)]
        while todo:
            await client.put(todo.pop(), values.pick(rng))

    await asyncio.gather(*(loader(i) for i in range(min(_LOADERS, len(keys)))))


async def _cluster_worker(
    client: AsyncClient,
    rng: random.Random,
    keys: list[bytes],
    values: Values,
    deadline: float,
    contexts: dict[bytes, bytes | None] | None,
) -> Tally:
    """One client's loop. `contexts` maps a key to the context of its most
    recent get (this client's own map, or one map shared by every client:
    only read and written between awaits, on one event loop); None: blind puts."""
    tally = Tally()
    while perf_counter() < deadline:
        key = keys[rng.randrange(len(keys))]
        if rng.random() < 0.5:
            t0 = perf_counter()
            try:
                read = await client.get(key)
            except KvError as e:
                tally.error(GET, e.code)
                continue
            tally.ok(GET, perf_counter() - t0)
            if contexts is not None:
                contexts[key] = read.context
            tally.siblings[len(read.values)] += 1
        else:
            value = values.pick(rng)
            context = None if contexts is None else contexts.get(key)
            t0 = perf_counter()
            try:
                await client.put(key, value, context)
            except KvError as e:
                tally.error(PUT, e.code)
                continue
            tally.ok(PUT, perf_counter() - t0)
            if context is None:
                tally.blind_puts += 1
    return tally


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process `pid` (Linux /proc); nan if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


@dataclass(frozen=True, kw_only=True, slots=True)
class CpuMeter:
    """CPU used by the server processes and by this (the clients') process
    over the timed window: where a saturated run's latency comes from."""

    servers: dict[str, int]  # name -> pid
    before: dict[str, float]
    client_before: float

    @classmethod
    def start(cls, servers: dict[str, int]) -> CpuMeter:
        return cls(servers=servers, before={n: _cpu_seconds(pid) for n, pid in servers.items()},
                   client_before=process_time())

    def note(self, what: str, elapsed: float, ops: int) -> str:
        used = {n: _cpu_seconds(pid) - self.before[n] for n, pid in self.servers.items()}
        client = process_time() - self.client_before
        total = sum(used.values()) + client
        each = ", ".join(f"{n} {u / elapsed:.2f}" for n, u in used.items())
        per_op = f"{total / ops * 1e3:.2f} ms" if ops else "n/a"
        return (f"{what} CPU in the timed window (CPU-seconds per second): {each}, clients "
                f"{client / elapsed:.2f}; all {total / elapsed:.2f} of {os.cpu_count()} CPUs; "
                f"{per_op} of CPU per operation")


def _node_notes(statuses: dict[str, dict[str, Any]]) -> list[str]:
    notes = []
    for node, s in statuses.items():
        c = s.get("counters", {})
        errors = {k.removeprefix("errors."): v for k, v in c.items() if k.startswith("errors.")}
        storage = s.get("storage", {})
        notes.append(
            f"node {node}: coordinated {c.get('gets', 0):,} gets, {c.get('puts', 0):,} puts "
            f"({c.get('forwarded', 0):,} forwarded), {c.get('read_repairs', 0):,} read repairs, "
            f"{c.get('requests', 0):,} requests in all (peers' included); errors {errors or 'none'}; "
            f"storage {storage.get('flushes', 0)} flushes, {storage.get('compactions', 0)} compactions"
        )
    return notes


async def _run_cluster(cluster: LocalCluster, p: Params) -> Run:
    addresses = cluster.addresses
    clients = [
        AsyncClient(addresses[i % NODES :] + addresses[: i % NODES], cluster=cluster.cluster,
                    timeout=_CLIENT_TIMEOUT)
        for i in range(p.clients)
    ]
    try:
        nodes = Counter(await asyncio.gather(*(c.connect() for c in clients)))
        keys = [_key(i) for i in range(p.keys)]
        values = Values(random.Random(p.seed), p.value_size)
        _progress(f"[cluster] loading {p.keys:,} keys")
        await _load(clients, keys, values, p.seed)
        _progress(f"[cluster] {p.clients} clients, {p.seconds:g}s of 50/50 get/put")
        rngs = [random.Random(p.seed * 1_000_003 + i + 1) for i in range(p.clients)]
        shared: dict[bytes, bytes | None] = {}
        maps = [shared if p.put_context == "shared" else {} if p.put_context == "own" else None
                for _ in clients]
        cpu = CpuMeter.start({n: proc.pid for n, proc in cluster.procs.items()})
        start = perf_counter()
        deadline = start + p.seconds
        tallies = await asyncio.gather(*(
            _cluster_worker(c, rng, keys, values, deadline, m)
            for c, rng, m in zip(clients, rngs, maps, strict=True)
        ))
        elapsed = perf_counter() - start
        ops = sum(len(v) for t in tallies for v in t.latencies.values())
        cpu_note = cpu.note("cluster", elapsed, ops)
        statuses = {}
        for node in cluster.ids:
            async with AsyncClient(cluster.addr(node), cluster=cluster.cluster) as admin:
                statuses[node] = await admin.status()
    finally:
        for c in clients:
            await c.close()
    tally = Tally()
    for t in tallies:
        tally.merge(t)
    spread = ", ".join(f"{n} {nodes[n]}" for n in sorted(nodes))
    total_gets = sum(tally.siblings.values())
    mean_siblings = sum(k * v for k, v in tally.siblings.items()) / total_gets if total_gets else math.nan
    notes = [
        f"clients per coordinating node: {spread}",
        f"values per get: mean {mean_siblings:.2f}, max {max(tally.siblings, default=0)} "
        f"({', '.join(f'{k}: {v:,}' for k, v in sorted(tally.siblings.items()))}); "
        f"{tally.blind_puts:,} of {len(tally.latencies.get(PUT, [])):,} puts blind "
        f"(put contexts: {p.put_context})",
        cpu_note,
        "node settings (from n1's status): "
        + " ".join(f"{k}={v}" for k, v in statuses[cluster.ids[0]].get("settings", {}).items()),
        *_node_notes(statuses),
    ]
    return Run(elapsed=elapsed, tally=tally, notes=notes)


# -------------------------------------------------------------- the floor
#
# The floor speaks the node's framing (`kvnode.protocol`: a 4-byte big-endian
# length, then a msgpack map with a type and an id) with its own few lines, so
# that it stays bare: no handshake, no schema, nothing that changes when the
# node's messages do.

_LENGTH = struct.Struct(">I")
_LIMIT = (16 << 20) + 64  # the node's stream buffer: MAX_FRAME plus a little


class FloorError(Exception):
    """The floor connection broke or answered out of turn."""


def _frame(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return _LENGTH.pack(len(body)) + body


async def _read(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None at a clean end of stream."""
    try:
        head = await reader.readexactly(_LENGTH.size)
        body = await reader.readexactly(_LENGTH.unpack(head)[0])
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise FloorError("connection closed inside a frame") from None
    message = msgpack.unpackb(body, raw=False)
    if not isinstance(message, dict):
        raise FloorError(f"a frame must hold a map, not {type(message).__name__}")
    return message


def _append_and_sync(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fdatasync(fd)


async def _floor_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fd: int, pool: ThreadPoolExecutor
) -> None:
    loop = asyncio.get_running_loop()
    try:
        while True:
            message = await _read(reader)
            if message is None:
                return
            if message["type"] == "put":
                await loop.run_in_executor(pool, _append_and_sync, fd, message["value"])
                reply = {"type": "put_ok", "id": message["id"]}
            else:
                reply = {"type": "replica_put_ok", "id": message["id"]}
            writer.write(_frame(reply))
    except (OSError, FloorError):
        return
    finally:
        writer.close()


async def _serve_floor(directory: str) -> None:
    """The floor server: listens on a free loopback port, prints it on
    stdout, and serves until SIGTERM, SIGINT or the end of its stdin."""
    fd = os.open(os.path.join(directory, "floor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pool = ThreadPoolExecutor(max_workers=_FLOOR_WORKERS, thread_name_prefix="floor-io")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(
        lambda r, w: _floor_connection(r, w, fd, pool), "127.0.0.1", 0, limit=_LIMIT
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    # The parent never writes to our stdin: it becomes readable (at EOF) only
    # when the parent has gone, however it went.
    loop.add_reader(sys.stdin.fileno(), stop.set)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(sys.stdin.fileno())
        server.close()
        pool.shutdown(wait=True)
        os.close(fd)


class FloorServer:
    """The floor server in a process of its own (as each node is), so that
    it does not share a CPU's time slice with the clients."""

    def __init__(self, directory: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.node", "--serve-floor", directory],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError(f"the floor server did not start (exit {self.proc.returncode}, said {line!r})")
        self.port = int(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class FloorClient:
    """A bare request/response connection: write a frame, read its reply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = 0

    @classmethod
    async def open(cls, port: int) -> FloorClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=_LIMIT)
        return cls(reader, writer)

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        self._ids += 1
        self._writer.write(_frame({**message, "id": self._ids}))
        reply = await _read(self._reader)
        if reply is None or reply.get("id") != self._ids:
            raise FloorError(f"floor server: unexpected reply {reply!r:.80}")
        return reply

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


async def _floor_worker(
    client: FloorClient, rng: random.Random, keys: list[bytes], values: Values, deadline: float
) -> Tally:
    tally = Tally()
    while perf_counter() < deadline:
        key = keys[rng.randrange(len(keys))]
        value = values.pick(rng)
        t0 = perf_counter()
        try:
            await client.request({"type": "put", "key": key, "value": value, "context": None})
            await client.request({"type": "replica_put", "key": key, "state": value})
        except (OSError, FloorError) as e:
            tally.error(FLOOR, type(e).__name__)
            break  # the connection is gone
        tally.ok(FLOOR, perf_counter() - t0)
    return tally


async def _run_floor(port: int, pid: int, p: Params) -> Run:
    clients = [await FloorClient.open(port) for _ in range(p.clients)]
    try:
        keys = [_key(i) for i in range(p.keys)]
        values = Values(random.Random(p.seed), p.value_size)
        _progress(f"[floor] {p.clients} clients, {p.seconds:g}s of 2 round trips + 1 fdatasync")
        rngs = [random.Random(p.seed * 1_000_003 + i + 1) for i in range(p.clients)]
        cpu = CpuMeter.start({"server": pid})
        start = perf_counter()
        deadline = start + p.seconds
        tallies = await asyncio.gather(
            *(_floor_worker(c, rng, keys, values, deadline) for c, rng in zip(clients, rngs, strict=True))
        )
        elapsed = perf_counter() - start
        ops = sum(len(v) for t in tallies for v in t.latencies.values())
        cpu_note = cpu.note("floor", elapsed, ops)
    finally:
        for c in clients:
            await c.close()
    tally = Tally()
    for t in tallies:
        tally.merge(t)
    return Run(elapsed=elapsed, tally=tally, notes=[cpu_note])


# ------------------------------------------------------------------ output


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1e3:.2f}"


def _errors(counts: Counter[str]) -> str:
    if not counts:
        return "0"
    return ", ".join(f"{code} {n:,}" for code, n in sorted(counts.items()))


def table(lines: list[Row], label: str) -> str:
    headers = [label, "ops", "ops/s", "mean ms", "p50 ms", "p99 ms", "max ms", "errors"]
    body = [
        [r.op, f"{r.ops:,}", f"{r.rate:,.0f}", _ms(r.mean), _ms(r.p50), _ms(r.p99), _ms(r.max), _errors(r.errors)]
        for r in lines
    ]
    return tabulate(body, headers=headers, colalign=["left"] + ["right"] * (len(headers) - 1))


def fsync_probe(directory: str, size: int) -> tuple[float, float]:
    """p50 and p99 (seconds) of one `size`-byte append + fdatasync in `directory`."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    data = b"x" * size
    times = []
    try:
        for _ in range(_FSYNC_PROBES):
            t0 = perf_counter()
            _append_and_sync(fd, data)
            times.append(perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    return percentile(times, 0.5), percentile(times, 0.99)


CONTEXT_TEXT = {
    "shared": "the context of the latest get of the key by any client",
    "own": "the context of the same client's latest get of the key",
    "none": "no context (blind)",
}


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def header(p: Params, base: str, probe: tuple[float, float]) -> str:
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    settings = " ".join(f"{k}={v}" for k, v in SETTINGS.items())
    return "\n".join([
        "node benchmark: a 3-node kvnode cluster on loopback vs a bare request/response floor",
        f"python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.platform()}; {cpus} CPUs ({usable} usable)",
        f"msgpack {version('msgpack')}; dir {base} ({filesystem(base)}); one {p.value_size}-byte "
        f"append + fdatasync there: p50 {_ms(probe[0])} ms, p99 {_ms(probe[1])} ms",
        f"cluster: {NODES} nodes, {settings} (the rest the node's defaults); {p.clients} clients "
        f"round-robin over the nodes; {p.seconds:g}s of 50/50 get/put over {p.keys:,} keys; "
        f"{p.value_size}-byte values; puts carry {CONTEXT_TEXT[p.put_context]}; seed {p.seed}",
        f"load average at the start {_loadavg()} (other work on the machine skews every figure)",
    ])


def ratio_lines(put: Row, floor: Row) -> list[str]:
    """The ratio and the issue's target, as text (never asserted)."""
    ratio = put.p50 / floor.p50 if floor.p50 > 0 else math.nan
    verdict = "met" if ratio <= TARGET else "NOT met"
    return [
        f"p50(put) / p50(floor) = {_ms(put.p50)} ms / {_ms(floor.p50)} ms = {ratio:.2f}x",
        f"target: p50(put) <= {TARGET:g}x the floor: {ratio:.2f}x ({verdict})",
    ]


# --------------------------------------------------------------------- main


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.node",
        description="50/50 get/put on a 3-node kvnode cluster (N=3 W=2 R=2) on loopback, and the floor "
        "of two round trips + one fdatasync with the same framing; prints ops/s, p50, p99 and "
        "p50(put)/p50(floor).",
    )
    parser.add_argument("--seconds", type=_seconds, default=20.0, help="seconds of each run (default 20)")
    parser.add_argument("--clients", type=positive, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--keys", type=positive, default=1000, help="keys, written once beforehand (default 1000)")
    parser.add_argument("--value-size", type=positive, default=1024, help="bytes per value (default 1024)")
    parser.add_argument("--dir", default=None, help="where to make the temporary directory (default: the system temp dir)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--put-context", choices=PUT_CONTEXTS, default="shared",
                        help="a put's context: from the latest get of the key by any client (shared, "
                        "the default), by the same client (own), or none (blind puts)")
    parser.add_argument("--serve-floor", metavar="DIR", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_floor is not None:
        asyncio.run(_serve_floor(args.serve_floor))
        return 0
    p = Params(seconds=args.seconds, clients=args.clients, keys=args.keys,
               value_size=args.value_size, seed=args.seed, put_context=args.put_context)
    if args.dir is not None:
        os.makedirs(args.dir, exist_ok=True)
    base = tempfile.mkdtemp(prefix="bench-node-", dir=args.dir)
    try:
        print(header(p, base, fsync_probe(base, p.value_size)), flush=True)
        print(flush=True)
        cluster_dir = Path(base) / "cluster"
        cluster_dir.mkdir()
        _progress(f"[cluster] starting {NODES} nodes")
        with LocalCluster(cluster_dir, NODES, settings=dict(SETTINGS), cluster=CLUSTER) as cluster:
            cluster_run = asyncio.run(_run_cluster(cluster, p))
        floor_dir = os.path.join(base, "floor")
        os.mkdir(floor_dir)
        _progress("[floor] starting the server")
        server = FloorServer(floor_dir)
        try:
            floor_run = asyncio.run(_run_floor(server.port, server.proc.pid, p))
        finally:
            server.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)

    cluster_rows = rows(cluster_run, (GET, PUT), total=ALL)
    print(table(cluster_rows, "cluster"))
    print()
    floor_rows = rows(floor_run, (FLOOR,))
    print("floor: 2 sequential round trips + 1 fdatasync per operation, same framing, same clients")
    print(table(floor_rows, "floor"))
    print()
    for note in cluster_run.notes + floor_run.notes:
        print(f"note: {note}")
    print(f"note: load average at the end {_loadavg()}")
    print()
    print("\n".join(ratio_lines(cluster_rows[1], floor_rows[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
