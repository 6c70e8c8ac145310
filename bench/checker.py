"""Linearizability checker benchmark: `checkers.linearizable` on generated
histories, next to Porcupine's published figures.

Every history is made from the seed by simulating a real concurrent register:
each process runs its operations one after another, each takes effect at one
instant between its invocation and its completion (a crashed one: at any
time after its invocation, or never), and the results are computed by
applying the operations in the order of those instants, so a history is
linearizable by construction.

Three parts, each printed as a table:

- (a) etcd-style histories, as in Jepsen's etcd tests whose logs Porcupine
  ships: `--histories` histories from `etcd_simulate`, a simulated etcd key
  under a partitioning nemesis. 5 worker threads, one per node, each taking
  a new process id after every `info`; reads, writes and cas with values 0-4
  (the key starts absent: None); 70-90 completed operations (`ok` or `fail`)
  a history. A thread whose node is cut off (or on the majority side before
  it has elected a leader, or just unlucky) times out: a read ends in `fail`
  (as Jepsen's etcd client logs it), a write or cas in `info`, and it stays
  open to the end of the history, having taken effect (half of the time, up
  to when the partition heals) or not. So a history carries about 20-25
  crashed writes and cas, dozens at most, all concurrent with everything
  after them: what makes Jepsen's etcd histories hard. About one in 20 gets
  one read's value changed (so some are invalid). `--easy-etcd` gives the
  older generator (`simulate`: no partitions, few crashed ops). Checked with
  `check(history, "cas-register")`: total model steps, wall time, steps/s,
  the hardest history; then the same histories with the checker's pruning
  off (`checkers.linearizable._prune = False`: plain Wing & Gong + Lowe, the
  algorithm Porcupine runs; `--plain-time-limit` seconds each, `--skip-plain`
  to leave it out), so the pruning's effect shows; and the ratios to
  Porcupine (hardest of Jepsen's etcd histories: 1.18 million steps in
  270 ms; all 102: 3.3 million steps in 0.70 s).
- (b) one register, `--big-ops` operations, 20 processes, unique written
  values: the O(n log n) path (`checkers.unique_register`) alone, and the
  whole checker with the "register" model. Target: under 10 s.
- (c) `--huge-ops` operations over 1,000 keys, unique written values, the
  "register" model partitioned by `op.key`: the fast path alone (history
  partitioned here) and the whole checker. Target: under 60 s and 2 GiB
  (peak RSS of this process, from getrusage). `--skip-huge` leaves it out.

- (d) end to end: part (a)'s histories written as Jepsen EDN files (one op
  map per line, as Jepsen's `history.edn`), then `harness check` on them as
  a user runs it, start-up and reading included: one process per file, and
  all files in one call; beside the bare start-up of Python (`python -c
  pass`, one process per file, measured in the same run), the reading
  alone and the search alone (both in this process), and Porcupine's 0.70 s
  for Jepsen's 102 etcd logs. Targets: all files in one call under 0.70 s;
  one process per file under 2x that. The exit codes are compared with the
  verdicts of the search in this process. `--skip-e2e` leaves it out.
- (e) key-value histories shaped like Porcupine's `kv/c50-ok` (from the MIT
  6.824 tests): `--kv-histories` generated histories of append/put/get by 50
  clients, about 1,700 operations over 10 keys (up to ~200 a key, a dozen
  open at once on one), all `ok`, and any of Porcupine's own files given
  with `--porcupine-kv`, checked with the "kv" model within `--kv-time-limit`
  (some generated histories are far harder than Porcupine's, for plain
  Wing & Gong + Lowe as well); beside the same checker with its pruning off
  (plain Wing & Gong + Lowe, Porcupine's algorithm; not with
  `--skip-plain`), in the same run, and Porcupine's figure for c50-ok on
  this kind of machine (160-240 ms; target: within 1x). `--skip-kv` leaves
  it out.

Run it from the repository root:

    python -m bench.checker                        # every part: 2-3 minutes
    python -m bench.checker --skip-huge --seed 7   # all but (c)

Figures are printed, never asserted. Generation is not timed; a check's time
includes pairing the history. Where `checkers.linearizable` is not
importable, the parts that need it are skipped with a note.
"""

from __future__ import annotations

import argparse
import heapq
import importlib
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter
from types import ModuleType
from typing import Any

import edn_format
from tabulate import tabulate

from bench.common import positive
from checkers.history import Op, complete, pair
from checkers.result import Result
from checkers.unique_register import check_unique_register

ETCD = "(a) etcd-style histories, cas-register"
BIG = "(b) one register, unique written values"
HUGE = "(c) many keys, unique written values, register model"
E2E = "(d) end to end: harness check on Jepsen EDN files, start-up and reading included"
KV = "(e) key-value histories like Porcupine's c50-ok, kv model"

PORCUPINE_HARDEST_STEPS = 1_180_000
PORCUPINE_HARDEST_SECONDS = 0.270
PORCUPINE_ALL_STEPS = 3_300_000
PORCUPINE_ALL_SECONDS = 0.70
PORCUPINE_HISTORIES = 102

# Porcupine's kv/c50-ok on this kind of machine: 160-240 ms a history.
PORCUPINE_KV_SECONDS = (0.160, 0.240)
KV_CLIENTS = 50
KV_OPS = 1_700
KV_KEYS = 10

BIG_TARGET_SECONDS = 10.0
HUGE_TARGET_SECONDS = 60.0
HUGE_TARGET_BYTES = 2 << 30
HUGE_KEYS = 1_000
MS = 1_000_000  # nanoseconds


# --------------------------------------------------------------- generation


@dataclass(frozen=True, kw_only=True, slots=True)
class Shape:
    """What `simulate` makes."""

    ops: int
    processes: int
    keys: int = 0  # 0: one register without a key; else keys 0..keys-1
    cas: bool = False  # mix in cas ops, with values [expected, new]
    unique: bool = False  # written values 1, 2, 3, ... instead of 0..values-1
    values: int = 5
    crash_read: float = 0.02  # chance a read ends in info
    crash_write: float = 0.05  # chance a write or cas ends in info
    read_timeout: str = "info"  # how a timed-out read ends: "info", or "fail" (Jepsen's etcd: reads are idempotent)


@dataclass(slots=True)
class _Spec:
    process: int
    f: str
    key: Any
    arg: Any
    start: int
    end: int
    effect: int  # the instant it takes effect; -1: never
    outcome: str
    result: Any = None


def simulate(rng: random.Random, shape: Shape) -> list[Op]:
    """A linearizable history of `shape.ops` operations on a register (one
    per key), made as described in the module docstring."""
    specs: list[_Spec] = []
    counter = 0
    per_process = [shape.ops // shape.processes + (w < shape.ops % shape.processes) for w in range(shape.processes)]
    fs = ("read", "write", "cas") if shape.cas else ("read", "write")
    for w, count in enumerate(per_process):
        t = rng.randrange(MS)
        process = w
        for _ in range(count):
            f = fs[rng.randrange(len(fs))]
            key = rng.randrange(shape.keys) if shape.keys else None
            arg: Any = None
            if f == "write":
                counter += 1
                arg = counter if shape.unique else rng.randrange(shape.values)
            elif f == "cas":
                arg = [rng.randrange(shape.values), rng.randrange(shape.values)]
            start = t + 1 + rng.randrange(MS // 2)
            duration = MS // 10 + rng.randrange(3 * MS)
            crash = rng.random() < (shape.crash_read if f == "read" else shape.crash_write)
            if crash and f == "read" and shape.read_timeout == "fail":
                end = start + 5 * MS + rng.randrange(5 * MS)  # a timeout: the read did nothing
                effect, outcome, crash = -1, "fail", False
            elif crash:
                end = start + 5 * MS + rng.randrange(5 * MS)  # a timeout
                effect = start + rng.randrange(12 * MS) if rng.random() < 0.5 else -1
                outcome = "info"
            else:
                end = start + duration
                effect = start + rng.randrange(duration)
                outcome = "ok"
            specs.append(_Spec(process=process, f=f, key=key, arg=arg, start=start, end=end,
                               effect=effect, outcome=outcome))
            if crash:
                process += shape.processes
            t = end
    return _history(specs)


def _history(specs: list[_Spec]) -> list[Op]:
    """Apply the ops that took effect in the order of their instants, fill in
    the results (a cas whose compare does not match fails; one that never
    took effect cannot report ok), and lay the ops out as invocations and
    completions in time order."""
    state: dict[Any, Any] = {}
    for s in sorted((s for s in specs if s.effect >= 0), key=lambda s: s.effect):
        current = state.get(s.key)
        if s.f == "read":
            s.result = current
        elif s.f == "write":
            state[s.key] = s.arg
        elif current == s.arg[0]:
            state[s.key] = s.arg[1]
        elif s.outcome == "ok":
            s.outcome = "fail"  # the compare did not match
    for s in specs:  # a cas that never took effect and still reports ok would be a lie
        if s.f == "cas" and s.effect < 0 and s.outcome == "ok":
            s.outcome = "fail"
    events: list[tuple[int, int, _Spec, bool]] = []
    for n, s in enumerate(specs):
        events.append((s.start, n, s, False))
        events.append((s.end, n, s, True))
    events.sort(key=lambda e: (e[0], e[1]))
    history: list[Op] = []
    for i, (time, _, s, done) in enumerate(events):
        if not done:
            history.append(Op(index=i, time=time, process=s.process, type="invoke", f=s.f, key=s.key, value=s.arg))
        else:
            value = s.result if s.f == "read" and s.outcome == "ok" else (
                None if s.f == "read" or s.outcome == "info" else s.arg)
            error = "timed-out" if s.outcome == "info" or (s.outcome == "fail" and s.f == "read") else None
            history.append(Op(index=i, time=time, process=s.process, type=s.outcome, f=s.f,  # type: ignore[arg-type]
                              key=s.key, value=value, error=error))
    return history


@dataclass(frozen=True, kw_only=True, slots=True)
class EtcdShape:
    """What `etcd_simulate` makes: Jepsen's etcd test in miniature. Times in
    milliseconds of simulated time."""

    completed: int = 80  # ops that end in ok or fail; crashed ones come on top
    workers: int = 5  # worker threads, one per node; process ids p, p+5, ... after each info
    values: int = 5  # values 0..values-1
    stagger: float = 100.0  # pause before each op: uniform in [0, stagger)
    latency: tuple[float, float] = (1.0, 10.0)  # an op that goes through
    timeout: float = 200.0  # the client's timeout
    healthy: tuple[float, float] = (200.0, 500.0)  # between partitions
    partition: tuple[float, float] = (1000.0, 3000.0)  # how long a partition lasts
    cut_off: int = 2  # nodes on the minority side of each partition
    election: tuple[float, float] = (200.0, 1000.0)  # no leader on the majority side
    blip: float = 0.2  # chance an op times out anyway (a slow disk, a lost packet)
    effect: float = 0.5  # chance a timed-out write or cas took effect anyway


def _etcd_schedule(rng: random.Random, shape: EtcdShape, until: float) -> list[tuple[float, float, float, frozenset[int]]]:
    """The nemesis: partitions (start, end, end of the election on the
    majority side, nodes cut off), with healthy periods between."""
    out = []
    t = rng.uniform(*shape.healthy)
    leader = rng.randrange(shape.workers)
    while t < until:
        end = t + rng.uniform(*shape.partition)
        cut = frozenset(rng.sample(range(shape.workers), shape.cut_off))
        election = t
        if leader in cut:  # the majority side elects a new leader first
            election = min(end, t + rng.uniform(*shape.election))
            leader = rng.choice([w for w in range(shape.workers) if w not in cut])
        out.append((t, end, election, cut))
        t = end + rng.uniform(*shape.healthy)
    return out


def etcd_simulate(rng: random.Random, shape: EtcdShape) -> list[Op]:
    """A linearizable history of a simulated etcd key under Jepsen's etcd
    test: `shape.workers` threads, one per node, each invoking reads, writes
    and cas (values 0..values-1; the key starts absent) one after another,
    a random pause apart. A nemesis partitions the nodes; a thread whose node
    is cut off, or on the majority side before it has elected a leader, or
    unlucky (`blip`), times out: a read then ends in `fail` (Jepsen's etcd
    client: a read did nothing), a write or cas in `info`, and the thread
    goes on as a new process. A timed-out write or cas took effect with
    probability `effect`, at any time from its invocation until the
    partition heals (so possibly after its `info`), or never; an op that went
    through took effect at one instant inside its interval. Results come from
    applying the ops in the order of those instants (a cas whose compare does
    not match fails), so the history is linearizable by construction."""
    horizon = 4.0 * shape.completed * (shape.stagger + shape.timeout) / shape.workers
    schedule = _etcd_schedule(rng, shape, horizon)

    def conditions(w: int, t: float) -> tuple[bool, float]:
        """Does an op of worker w invoked at t time out; until when may it take effect?"""
        for start, end, election, cut in schedule:
            if start <= t < end:
                return (w in cut or t < election), end
            if start > t:
                break
        return False, t + shape.timeout

    specs: list[_Spec] = []
    heap = [(rng.uniform(0, shape.stagger), w, w) for w in range(shape.workers)]
    heapq.heapify(heap)
    done = 0
    while done < shape.completed:
        t, w, process = heapq.heappop(heap)
        f = ("read", "write", "cas")[rng.randrange(3)]
        arg: Any = None
        if f == "write":
            arg = rng.randrange(shape.values)
        elif f == "cas":
            arg = [rng.randrange(shape.values), rng.randrange(shape.values)]
        cut, heal = conditions(w, t)
        start = int(t * MS)
        if cut or rng.random() < shape.blip:
            end = t + shape.timeout
            if f == "read":
                spec = _Spec(process=process, f=f, key=None, arg=arg, start=start, end=int(end * MS),
                             effect=-1, outcome="fail")
                done += 1
            else:
                effect = -1
                if rng.random() < shape.effect:
                    effect = int(rng.uniform(t, max(end, heal)) * MS)
                spec = _Spec(process=process, f=f, key=None, arg=arg, start=start, end=int(end * MS),
                             effect=effect, outcome="info")
                process += shape.workers
        else:
            end = t + rng.uniform(*shape.latency)
            spec = _Spec(process=process, f=f, key=None, arg=arg, start=start, end=int(end * MS),
                         effect=int(rng.uniform(t, end) * MS), outcome="ok")
            done += 1
        specs.append(spec)
        heapq.heappush(heap, (end + rng.uniform(0, shape.stagger), w, process))
    return _history(specs)


def corrupt(rng: random.Random, history: list[Op], values: int) -> list[Op]:
    """The same history with one `ok` read's value changed (it may still be
    linearizable by chance)."""
    reads = [i for i, op in enumerate(history) if op.f == "read" and op.type == "ok"]
    if not reads:
        return history
    i = rng.choice(reads)
    old = history[i]
    choices = [v for v in range(values) if v != old.value]
    out = list(history)
    out[i] = Op(index=old.index, time=old.time, process=old.process, type=old.type, f=old.f,
                key=old.key, value=rng.choice(choices))
    return out


def etcd_histories(seed: int, count: int, *, easy: bool = False) -> list[list[Op]]:
    """Part (a)'s histories: `etcd_simulate` with 70-90 completed ops each
    (`EtcdShape`'s defaults otherwise); about one in 20 gets one read's value
    changed (so some are invalid). `easy` gives the older, gentler shape
    (`simulate`: 70-90 operations in all, no partitions, so few crashed ops
    pile up)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        if easy:
            shape = Shape(ops=rng.randrange(70, 91), processes=5, cas=True, values=5,
                          crash_read=0.05, crash_write=0.25)
            h = simulate(rng, shape)
        else:
            h = etcd_simulate(rng, EtcdShape(completed=rng.randrange(70, 91)))
        if rng.random() < 0.05:
            h = corrupt(rng, h, 5)
        out.append(h)
    return out


def kv_simulate(rng: random.Random, *, clients: int = KV_CLIENTS, ops: int = KV_OPS, keys: int = KV_KEYS) -> list[Op]:
    """A linearizable history of a key-value store of strings, shaped like
    Porcupine's `kv/c50-ok` (from the MIT 6.824 tests): `clients` processes,
    each invoking append (half of the time), put (5%) or get on a random key
    one after another, `ops` in all;
    each takes effect at one instant inside its interval (5-30 ms, a pause
    of up to 5 ms between), so dozens overlap any one; an append adds
    `"x <client> <n> y"`, a put sets it; a missing key reads as ""."""
    per_client = [ops // clients + (c < ops % clients) for c in range(clients)]
    timeline: list[tuple[int, int, int, str, str, str]] = []  # (effect, start, end, f, key, arg) per op
    by_client: list[list[int]] = []
    for c, count in enumerate(per_client):
        t = rng.randrange(5 * MS)
        mine = []
        for n in range(count):
            r = rng.random()  # the mix of the MIT 6.824 tests that Porcupine's kv logs come from
            f = "append" if r < 0.5 else "put" if r < 0.55 else "get"
            start = t + rng.randrange(MS // 10)
            # Heavy-tailed, as in the 6.824 logs: most calls come back at
            # once, a few wait on a slow server for a while.
            end = start + (MS // 10 + rng.randrange(MS) if rng.random() < 0.97 else 5 * MS + rng.randrange(45 * MS))
            mine.append(len(timeline))
            timeline.append((rng.randrange(start, end), start, end, f, str(rng.randrange(keys)), f"x {c} {n} y"))
            t = end
        by_client.append(mine)
    store: dict[str, str] = {}
    results: dict[int, str] = {}
    for i in sorted(range(len(timeline)), key=lambda i: timeline[i][0]):
        _, _, _, f, key, arg = timeline[i]
        if f == "get":
            results[i] = store.get(key, "")
        elif f == "put":
            store[key] = arg
        else:
            store[key] = store.get(key, "") + arg
    events: list[tuple[int, int, int, bool]] = []  # (time, client, op, is completion)
    for c, mine in enumerate(by_client):
        for i in mine:
            events.append((timeline[i][1], c, i, False))
            events.append((timeline[i][2], c, i, True))
    events.sort()
    history: list[Op] = []
    for index, (time, c, i, done) in enumerate(events):
        _, _, _, f, key, arg = timeline[i]
        value = (results[i] if done else None) if f == "get" else arg
        history.append(Op(index=index, time=time, process=c, type="ok" if done else "invoke", f=f, key=key,
                          value=value))
    return history


def write_jepsen_edn(history: Sequence[Op], path: str) -> None:
    """`history` as Jepsen writes `history.edn`: one op map per line, keywords
    for type and f, with :time and :index (edn_format writes the values)."""
    kw = edn_format.Keyword
    with open(path, "w", encoding="utf-8") as f:
        for op in history:
            m: dict[Any, Any] = {kw("type"): kw(op.type), kw("f"): kw(op.f), kw("value"): op.value,
                                 kw("time"): op.time, kw("process"): op.process, kw("index"): op.index}
            if op.key is not None:
                m[kw("key")] = op.key
            f.write(edn_format.dumps(m) + "\n")


# ------------------------------------------------------------------ running


def load_linearizable() -> tuple[ModuleType | None, str | None]:
    """checkers.linearizable, or None and the reason it is not importable."""
    try:
        return importlib.import_module("checkers.linearizable"), None
    except ImportError as e:
        return None, f"checkers.linearizable is not importable ({e}): the parts that need it are skipped"


def _timed(fn: Callable[[], Result]) -> tuple[Result, float]:
    t0 = perf_counter()
    r = fn()
    return r, perf_counter() - t0


def _seconds(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def _rate(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"


def _verdicts(results: Sequence[Result]) -> str:
    counts = {"valid": 0, "invalid": 0, "unknown": 0}
    for r in results:
        counts["valid" if r.valid is True else "invalid" if r.valid is False else "unknown"] += 1
    return ", ".join(f"{n} {name}" for name, n in counts.items())


def _peak_rss() -> int:
    """Peak resident set size of this process, in bytes (ru_maxrss is KiB on Linux)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib if sys.platform == "darwin" else kib * 1024


@contextmanager
def _plain(lin: ModuleType) -> Iterator[None]:
    """The checker as plain Wing & Gong + Lowe (Porcupine's algorithm): its
    internal switch `_prune` off, for the comparison only."""
    old = lin._prune
    lin._prune = False
    try:
        yield
    finally:
        lin._prune = old


def _etcd_rows(label: str, results: list[tuple[Result, float]], capped: bool) -> tuple[list[list[str]], int, int]:
    steps = [int(r.counts.get("steps", 0)) for r, _ in results]
    times = [t for _, t in results]
    stopped = sum(r.valid == "unknown" for r, _ in results)
    total_steps, total_time = sum(steps), sum(times)
    hardest = max(range(len(results)), key=lambda i: (steps[i], times[i]))
    slowest = max(range(len(results)), key=lambda i: times[i])
    more = "+" if capped and stopped else ""
    rows = [
        [f"{label}, all {len(results)} histories", f"{total_steps:,}{more}", _seconds(total_time),
         _rate(total_steps, total_time)],
        [f"{label}, hardest (#{hardest}, most steps)",
         f"{steps[hardest]:,}{'+' if capped and results[hardest][0].valid == 'unknown' else ''}",
         _seconds(times[hardest]), _rate(steps[hardest], times[hardest])],
    ]
    if slowest != hardest:
        rows.append([f"{label}, slowest (#{slowest})", f"{steps[slowest]:,}", _seconds(times[slowest]),
                     _rate(steps[slowest], times[slowest])])
    return rows, hardest, slowest


def run_etcd(lin: ModuleType, args: argparse.Namespace) -> list[str]:
    histories = etcd_histories(args.seed, args.histories, easy=args.easy_etcd)
    results: list[tuple[Result, float]] = []
    for h in histories:
        results.append(_timed(lambda h=h: lin.check(h, "cas-register", time_limit=args.time_limit)))  # type: ignore[misc]
    ours, hardest, slowest = _etcd_rows("ours", results, capped=args.time_limit is not None)
    steps = [int(r.counts.get("steps", 0)) for r, _ in results]
    times = [t for _, t in results]
    total_steps, total_time = sum(steps), sum(times)
    ops = sum(sum(op.type == "invoke" for op in h) for h in histories)
    crashed = [sum(op.type == "info" for op in h) for h in histories]
    rows = list(ours)
    plain_lines: list[str] = []
    plain_steps: list[int] = []
    if not args.skip_plain and hasattr(lin, "_prune"):
        plain: list[tuple[Result, float]] = []
        with _plain(lin):
            for h in histories:
                plain.append(_timed(lambda h=h: lin.check(h, "cas-register",  # type: ignore[misc]
                                                          time_limit=args.plain_time_limit)))
        prows, phard, _ = _etcd_rows("plain WGL", plain, capped=True)
        rows += prows
        plain_steps = [int(r.counts.get("steps", 0)) for r, _ in plain]
        stopped = sum(r.valid == "unknown" for r, _ in plain)
        disagree = sum(p.valid != o.valid for (p, _), (o, _) in zip(plain, results, strict=True)
                       if "unknown" not in (p.valid, o.valid))
        plain_lines.append(
            f"plain WGL (the same checker, pruning off: every op a candidate in history order, memo on "
            f"(linearized set, state)): {stopped} of {len(histories)} stopped at the time limit of "
            f"{args.plain_time_limit} s (+: at least); verdicts that differ from ours: {disagree}")
        plain_lines.append(
            f"pruning: {sum(plain_steps) / max(1, total_steps):,.0f}x fewer steps in all, "
            f"{plain_steps[phard] / max(1, steps[phard]):,.0f}x fewer on plain WGL's hardest (#{phard}: "
            f"{plain_steps[phard]:,} vs {steps[phard]:,})")
    rows += [
        [f"Porcupine, all {PORCUPINE_HISTORIES} histories", f"{PORCUPINE_ALL_STEPS:,}", _seconds(PORCUPINE_ALL_SECONDS),
         _rate(PORCUPINE_ALL_STEPS, PORCUPINE_ALL_SECONDS)],
        ["Porcupine, hardest", f"{PORCUPINE_HARDEST_STEPS:,}", _seconds(PORCUPINE_HARDEST_SECONDS),
         _rate(PORCUPINE_HARDEST_STEPS, PORCUPINE_HARDEST_SECONDS)],
    ]
    scale = len(histories) / PORCUPINE_HISTORIES
    shape = "the older, gentler generator (--easy-etcd)" if args.easy_etcd else \
        "simulated etcd under partitions (EtcdShape)"
    lines = [
        ETCD,
        f"{len(histories)} histories from {shape}, {ops:,} operations in all; crashed (info, open to the end): "
        f"{sum(crashed) / len(histories):.1f} a history on average, at most {max(crashed)}; "
        f"verdicts: {_verdicts([r for r, _ in results])}",
        tabulate(rows, headers=["", "model steps", "time", "steps/s"], colalign=["left", "right", "right", "right"]),
        *plain_lines,
        f"ours: {total_time / len(histories) * 1000:.2f} ms a history on average, most of it fixed costs (pairing "
        f"the history, setting up the search); Porcupine: "
        f"{PORCUPINE_ALL_SECONDS / PORCUPINE_HISTORIES * 1000:.2f} ms",
        f"vs Porcupine, hardest history: {steps[hardest] / PORCUPINE_HARDEST_STEPS:.3f}x the steps, "
        f"{times[hardest] / PORCUPINE_HARDEST_SECONDS:.2f}x the time (slowest: "
        f"{times[slowest] / PORCUPINE_HARDEST_SECONDS:.2f}x)"
        + (f"; plain WGL's hardest: {max(plain_steps) / PORCUPINE_HARDEST_STEPS:.2f}x Porcupine's steps"
           if plain_steps else ""),
        f"vs Porcupine, all histories: {total_steps / PORCUPINE_ALL_STEPS:.3f}x the steps, "
        f"{total_time / PORCUPINE_ALL_SECONDS:.2f}x the time"
        + (f"; plain WGL: {sum(plain_steps) / PORCUPINE_ALL_STEPS:.2f}x Porcupine's steps" if plain_steps else "")
        + ("" if len(histories) == PORCUPINE_HISTORIES else
           f" (ours are {len(histories)} generated histories, Porcupine's {PORCUPINE_HISTORIES} from Jepsen)"),
        "target: at most 2x Porcupine's time (hardest history, and all of them): "
        + ("met" if times[slowest] <= 2 * PORCUPINE_HARDEST_SECONDS
           and total_time <= 2 * PORCUPINE_ALL_SECONDS * max(1.0, scale) else "NOT met"),
    ]
    return lines


def _harness_command() -> list[str]:
    """`harness` as a user runs it: the console script beside this Python."""
    script = os.path.join(os.path.dirname(sys.executable), "harness")
    return [script] if os.path.isfile(script) else [sys.executable, "-m", "harness"]


def _exit_code(r: Result) -> int:
    return 0 if r.valid is True else 1 if r.valid is False else 2


def run_e2e(lin: ModuleType, args: argparse.Namespace) -> list[str]:
    from harness.history import read_history

    histories = etcd_histories(args.seed, args.histories, easy=args.easy_etcd)
    n = len(histories)
    with tempfile.TemporaryDirectory(prefix="bench-checker-") as tmp:
        files = []
        for i, h in enumerate(histories):
            files.append(os.path.join(tmp, f"etcd_{i:03d}.edn"))
            write_jepsen_edn(h, files[-1])
        cmd = [*_harness_command(), "check", "--model", "cas-register"]
        # Bytecode cached, as an installed package has it, even where the
        # environment turns caching off (PYTHONDONTWRITEBYTECODE): in a
        # scratch prefix, filled by one run that is not timed.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        subprocess.run([*cmd, files[0]], **quiet)  # type: ignore[call-overload]
        t0 = perf_counter()
        for _ in files:
            subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)
        bare = perf_counter() - t0
        t0 = perf_counter()
        codes = [subprocess.run([*cmd, f], **quiet).returncode for f in files]  # type: ignore[call-overload]
        per_file = perf_counter() - t0
        t0 = perf_counter()
        one = subprocess.run([*cmd, *files], capture_output=True, text=True, env=env)
        one_call = perf_counter() - t0
        t0 = perf_counter()
        read = [read_history(f, "edn") for f in files]
        reading = perf_counter() - t0
    results = [_timed(lambda h=h: lin.check(h, "cas-register")) for h in read]  # type: ignore[misc]
    search = sum(t for _, t in results)
    expected = [_exit_code(r) for r, _ in results]
    worst = max(expected, key=(0, 2, 1).index)
    scale = max(1.0, n / PORCUPINE_HISTORIES)
    target_one, target_each = PORCUPINE_ALL_SECONDS * scale, 2 * PORCUPINE_ALL_SECONDS * scale

    def row(what: str, seconds: float) -> list[str]:
        return [what, _seconds(seconds), f"{seconds / n * 1000:.2f} ms", f"{seconds / PORCUPINE_ALL_SECONDS:.2f}x",
                f"{seconds / bare:.2f}x"]

    rows = [
        row(f"harness check, one process per file ({n} processes)", per_file),
        row(f"harness check, all {n} files in one call", one_call),
        row("python -c pass, one process per file (start-up alone)", bare),
        row("reading alone (read_history, in this process)", reading),
        row("search alone (linearizable.check, in this process)", search),
        [f"Porcupine, Jepsen's {PORCUPINE_HISTORIES} etcd logs", _seconds(PORCUPINE_ALL_SECONDS),
         f"{PORCUPINE_ALL_SECONDS / PORCUPINE_HISTORIES * 1000:.2f} ms", "1.00x", "-"],
    ]
    return [
        E2E,
        f"{n} histories of part (a) as Jepsen EDN files ({sum(len(h) for h in histories):,} lines); "
        f"command: harness {' '.join(cmd[-3:])} FILE...; bytecode cached (one run before, not timed)",
        tabulate(rows, headers=["", "time", "per file", "vs Porcupine", "vs start-up"],
                 colalign=["left", "right", "right", "right", "right"]),
        f"exit codes, one process per file: {'the same as' if codes == expected else 'NOT the same as'} the "
        f"verdicts of the search in this process; all in one call: exit {one.returncode} "
        f"({'the worst of them, as expected' if one.returncode == worst else f'expected {worst}'})",
        f"target: all files in one call under {target_one:.2f} s: {_seconds(one_call)} "
        f"({'met' if one_call < target_one else 'NOT met'}); one process per file under {target_each:.2f} s: "
        f"{_seconds(per_file)} ({'met' if per_file < target_each else 'NOT met'}; Python's bare start-up alone "
        f"takes {_seconds(bare)} for {n} processes)",
    ]


def _concurrency(history: Sequence[Op]) -> tuple[int, int]:
    """(most operations on one key, most open at once on one key)."""
    per_key: dict[Any, int] = {}
    open_: dict[Any, int] = {}
    most = 0
    for op in history:
        if op.type == "invoke":
            per_key[op.key] = per_key.get(op.key, 0) + 1
            open_[op.key] = open_.get(op.key, 0) + 1
            most = max(most, open_[op.key])
        else:
            open_[op.key] -= 1
    return max(per_key.values()), most


def run_kv(lin: ModuleType, args: argparse.Namespace) -> list[str]:
    from harness.history import read_history

    rng = random.Random(args.seed)
    named = [(f"generated #{i}", kv_simulate(rng)) for i in range(args.kv_histories)]
    named += [(os.path.basename(f), read_history(f, "porcupine-kv")) for f in args.porcupine_kv]
    limit = args.kv_time_limit
    rows = []
    ours: list[float] = []
    c50: float | None = None
    for name, h in named:
        # As harness check does: an invalid key decides (c50-bad: the others would take minutes).
        r, t = _timed(lambda h=h: lin.check(h, "kv", time_limit=limit, all_keys=False))  # type: ignore[misc]
        plain = ["-", "-"]
        if not args.skip_plain:
            with _plain(lin):
                rb, tb = _timed(lambda h=h: lin.check(h, "kv", time_limit=limit, all_keys=False))  # type: ignore[misc]
            plain = [f"{_seconds(tb)}{'+' if rb.valid == 'unknown' else ''}", f"{tb / t:.2f}x"]
            if "unknown" not in (r.valid, rb.valid) and r.valid != rb.valid:
                plain[0] += " (verdicts DIFFER)"
        per_key, concurrent = _concurrency(h)
        rows.append([name, f"{sum(op.type == 'invoke' for op in h):,}", f"{per_key}/{concurrent}", str(r.valid),
                     f"{int(r.counts.get('steps', 0)):,}", f"{_seconds(t)}{'+' if r.valid == 'unknown' else ''}",
                     *plain])
        if r.valid != "unknown":
            ours.append(t)
        if name == "c50-ok.txt":
            c50 = t
    lo, hi = PORCUPINE_KV_SECONDS
    lines = [
        KV,
        f"{args.kv_histories} generated histories ({KV_CLIENTS} clients, {KV_OPS:,} operations over {KV_KEYS} keys, "
        f"6.824's mix of append/put/get) and {len(args.porcupine_kv)} of Porcupine's files (--porcupine-kv); "
        f"time limit {limit} s a check",
        tabulate(rows, headers=["history", "ops", "per key/open", "valid", "model steps", "ours", "plain WGL",
                                "plain/ours"],
                 colalign=["left", "right", "right", "left", "right", "right", "right", "right"]),
        "plain WGL: the same checker with its pruning off (Porcupine's algorithm), the baseline of this run; "
        "+: stopped at the time limit",
    ]
    porcupine = f"Porcupine on c50-ok: {lo * 1000:.0f}-{hi * 1000:.0f} ms"
    if c50 is not None:
        lines.append(f"ours on Porcupine's c50-ok.txt: {_seconds(c50)}; {porcupine}: {c50 / hi:.1f}x-{c50 / lo:.1f}x "
                     f"its time; target: within 1x ({'met' if c50 <= hi else 'NOT met'})")
    if ours:
        mean = sum(ours) / len(ours)
        lines.append(f"ours, mean of the {len(ours)} decided: {_seconds(mean)}; {porcupine}: "
                     f"{mean / hi:.1f}x-{mean / lo:.1f}x its time")
    return lines


def _fast_path_by_key(history: list[Op]) -> Result:
    """pair + complete + the unique-register check per key, outside the checker."""
    parts: dict[Any, list[Any]] = {}
    for o in complete(pair(history)):
        parts.setdefault(o.key, []).append(o)
    invalid = None
    for ops in parts.values():
        r = check_unique_register(ops)
        if r is None:
            return Result(checker="linearizable", valid="unknown", reason="the fast path does not apply")
        if r.valid is not True and invalid is None:
            invalid = r
    return invalid or Result(checker="linearizable", valid=True, counts={"partitions": len(parts), "steps": 0})


def _large_rows(history: list[Op], lin: ModuleType | None, args: argparse.Namespace) -> tuple[list[list[Any]], float]:
    n = sum(op.type == "invoke" for op in history)
    rows: list[list[Any]] = []
    r, t = _timed(lambda: _fast_path_by_key(history))
    rows.append(["fast path alone (checkers.unique_register)", r.valid, _seconds(t), _rate(n, t)])
    best = t
    if lin is not None:
        r, t = _timed(lambda: lin.check(history, "register", time_limit=args.time_limit))
        rows.append(['checkers.linearizable.check(h, "register")', r.valid, _seconds(t), _rate(n, t)])
        if r.reason:
            rows[-1][1] = f"{r.valid} ({r.reason})"
        best = t
    return rows, best


def run_large(title: str, shape: Shape, seed: int, lin: ModuleType | None, args: argparse.Namespace,
              target: float) -> list[str]:
    t0 = perf_counter()
    history = simulate(random.Random(seed), shape)
    made = perf_counter() - t0
    rows, best = _large_rows(history, lin, args)
    keys = f"{shape.keys:,} keys" if shape.keys else "one key"
    lines = [
        title,
        f"{shape.ops:,} operations ({len(history):,} events), {shape.processes} processes, {keys}; "
        f"generated in {_seconds(made)} (not timed below)",
        tabulate(rows, headers=["check", "valid", "time", "ops/s"], colalign=["left", "left", "right", "right"]),
    ]
    what = "the whole checker" if lin is not None else "the fast path (the whole checker was skipped)"
    lines.append(f"target: under {target:.0f} s, {what}: {_seconds(best)} ({'met' if best < target else 'NOT met'})")
    return lines


# --------------------------------------------------------------------- main


def header(args: argparse.Namespace, lin: ModuleType | None) -> str:
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    lines = [
        "linearizability checker benchmark: checkers.linearizable on generated histories",
        f"python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.platform()}; {cpus} CPUs ({usable} usable)",
        f"seed {args.seed}; histories {args.histories}; big ops {args.big_ops:,}; huge ops "
        + ("skipped" if args.skip_huge else f"{args.huge_ops:,}")
        + f"; time limit per check {args.time_limit if args.time_limit is not None else 'none'}",
        f"checkers.linearizable: {'loaded' if lin is not None else 'not importable'}",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.checker",
        description="Time checkers.linearizable on generated etcd-style and large histories; "
        "prints model steps, times and ratios to Porcupine's figures.",
    )
    p.add_argument("--seed", type=int, default=1, help="seed for every generated history (default 1)")
    p.add_argument("--histories", type=positive, default=PORCUPINE_HISTORIES,
                   help=f"etcd-style histories in part (a) (default {PORCUPINE_HISTORIES})")
    p.add_argument("--big-ops", type=positive, default=100_000, help="operations in part (b) (default 100,000)")
    p.add_argument("--huge-ops", type=positive, default=1_000_000, help="operations in part (c) (default 1,000,000)")
    p.add_argument("--time-limit", type=float, default=None, help="seconds per check before 'unknown' (default none)")
    p.add_argument("--easy-etcd", action="store_true",
                   help="part (a) with the older, gentler generator (few crashed ops pile up)")
    p.add_argument("--skip-plain", action="store_true",
                   help="part (a) without the plain-WGL comparison run (pruning off)")
    p.add_argument("--plain-time-limit", type=float, default=30.0,
                   help="seconds per history for the plain-WGL comparison run (default 30)")
    p.add_argument("--skip-huge", action="store_true", help="leave out part (c)")
    p.add_argument("--skip-e2e", action="store_true", help="leave out part (d), harness check end to end")
    p.add_argument("--kv-histories", type=int, default=3, help="generated key-value histories in part (e) (default 3)")
    p.add_argument("--kv-time-limit", type=float, default=30.0,
                   help="seconds per check in part (e) (default 30: some generated histories are far harder "
                        "than Porcupine's)")
    p.add_argument("--porcupine-kv", action="append", default=[], metavar="FILE",
                   help="also check this Porcupine kv log in part (e), e.g. its test_data/kv/c50-ok.txt")
    p.add_argument("--skip-kv", action="store_true", help="leave out part (e)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    lin, note = load_linearizable()
    print(header(args, lin), flush=True)
    if note:
        print(f"note: {note}", flush=True)
    print(flush=True)
    if lin is not None:
        print("\n".join(run_etcd(lin, args)), flush=True)
    else:
        print(f"{ETCD}\nskipped: checkers.linearizable is not importable", flush=True)
    print(flush=True)
    big = Shape(ops=args.big_ops, processes=20, unique=True)
    print("\n".join(run_large(BIG, big, args.seed, lin, args, BIG_TARGET_SECONDS)), flush=True)
    if not args.skip_huge:
        print(flush=True)
        huge = Shape(ops=args.huge_ops, processes=20, keys=HUGE_KEYS, unique=True)
        lines = run_large(HUGE, huge, args.seed, lin, args, HUGE_TARGET_SECONDS)
        rss = _peak_rss()
        verdict = "met" if rss < HUGE_TARGET_BYTES else "NOT met"
        lines.append(f"target: memory under 2 GiB: peak RSS of this process {rss / 2**30:.2f} GiB ({verdict})")
        print("\n".join(lines), flush=True)
    if not args.skip_e2e:
        print(flush=True)
        print("\n".join(run_e2e(lin, args)) if lin is not None else f"{E2E}\nskipped: checkers.linearizable is "
              "not importable", flush=True)
    if not args.skip_kv:
        print(flush=True)
        print("\n".join(run_kv(lin, args)) if lin is not None else f"{KV}\nskipped: checkers.linearizable is "
              "not importable", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
