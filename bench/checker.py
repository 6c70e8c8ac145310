"""Linearizability checker benchmark: `checkers.linearizable` on generated
histories, next to Porcupine's published figures.

Every history is made from the seed by simulating a real concurrent register
(`simulate`): each process runs its operations one after another, each takes
effect at one instant between its invocation and its completion, and the
results are computed by applying the operations in the order of those
instants, so a history is linearizable by construction. A crashed operation
(`info`, the process continuing under a new id, as in Jepsen) takes effect
with probability 1/2, at a time that may fall after its `info` completion.

Three parts, each printed as a table:

- (a) etcd-style histories, as in Jepsen's etcd tests that Porcupine ships:
  `--histories` histories of about 80 completed operations (`ok` or `fail`)
  plus the crashed ones, 5 worker threads that take a new process id after
  every `info`, reads, writes and cas on one key with values 0-4 (the key
  starts absent: None); a quarter of writes and cas time out (`info`, and stay
  concurrent with everything after them), timed-out reads end in `fail`;
  about one in 20 gets one read's value changed (so some are invalid).
  `--easy-etcd` gives the older generator (70-90 operations in all). Checked with `check(history, "cas-register")`: total
  model steps, wall time, steps/s, the hardest history, and ratios to
  Porcupine (hardest: 1.18 million steps in 270 ms; 102 histories: 3.3
  million steps in 0.70 s).
- (b) one register, `--big-ops` operations, 20 processes, unique written
  values: the O(n log n) path (`checkers.unique_register`) alone, and the
  whole checker with the "register" model. Target: under 10 s.
- (c) `--huge-ops` operations over 1,000 keys, unique written values, the
  "register" model partitioned by `op.key`: the fast path alone (history
  partitioned here) and the whole checker. Target: under 60 s and 2 GiB
  (peak RSS of this process, from getrusage). `--skip-huge` leaves it out.

Run it from the repository root:

    python -m bench.checker                        # all three parts: 1-2 minutes
    python -m bench.checker --skip-huge --seed 7   # (a) and (b) only

Figures are printed, never asserted. Generation is not timed; a check's time
includes pairing the history. Where `checkers.linearizable` is not
importable, the parts that need it are skipped with a note.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import random
import resource
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter
from types import ModuleType
from typing import Any

from tabulate import tabulate

from bench.common import positive
from checkers.history import Op, complete, pair
from checkers.result import Result
from checkers.unique_register import check_unique_register

ETCD = "(a) etcd-style histories, cas-register"
BIG = "(b) one register, unique written values"
HUGE = "(c) many keys, unique written values, register model"

PORCUPINE_HARDEST_STEPS = 1_180_000
PORCUPINE_HARDEST_SECONDS = 0.270
PORCUPINE_ALL_STEPS = 3_300_000
PORCUPINE_ALL_SECONDS = 0.70
PORCUPINE_HISTORIES = 102

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
            value = s.result if s.f == "read" and s.outcome == "ok" else (None if s.f == "read" else s.arg)
            history.append(Op(index=i, time=time, process=s.process, type=s.outcome, f=s.f,  # type: ignore[arg-type]
                              key=s.key, value=value))
    return history


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
    """Part (a)'s histories. By default shaped like Jepsen's etcd test (the
    logs Porcupine ships): 5 worker threads, each taking a new process id
    after every `info`; reads, writes and cas on one key with values 0-4;
    about 80 completed operations (`ok` or `fail`) per history, plus the
    crashed ones: a write or cas times out (`info`) 25% of the time, and a
    crashed op stays concurrent with everything after it, so dozens pile up;
    a timed-out read ends in `fail` (it did nothing). `easy` gives the older,
    gentler shape (70-90 operations in all, 5% of reads crash as `info`)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        if easy:
            shape = Shape(ops=rng.randrange(70, 91), processes=5, cas=True, values=5,
                          crash_read=0.05, crash_write=0.25)
        else:
            # reads are a third of the ops and never end in info: to have
            # ~80 completed ops, invoke ~80 / (1 - 2/3 * 0.25) of them.
            shape = Shape(ops=rng.randrange(84, 109), processes=5, cas=True, values=5,
                          crash_read=0.25, crash_write=0.25, read_timeout="fail")
        h = simulate(rng, shape)
        if rng.random() < 0.05:
            h = corrupt(rng, h, shape.values)
        out.append(h)
    return out


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


def run_etcd(lin: ModuleType, args: argparse.Namespace) -> list[str]:
    histories = etcd_histories(args.seed, args.histories, easy=args.easy_etcd)
    results: list[tuple[Result, float]] = []
    for h in histories:
        results.append(_timed(lambda h=h: lin.check(h, "cas-register", time_limit=args.time_limit)))  # type: ignore[misc]
    steps = [r.counts.get("steps", 0) for r, _ in results]
    times = [t for _, t in results]
    total_steps, total_time = sum(steps), sum(times)
    hardest = max(range(len(results)), key=lambda i: (steps[i], times[i]))
    slowest = max(range(len(results)), key=lambda i: times[i])
    ops = sum(sum(op.type == "invoke" for op in h) for h in histories)
    rows = [
        [f"ours, all {len(histories)} histories", f"{total_steps:,}", _seconds(total_time), _rate(total_steps, total_time)],
        [f"ours, hardest (#{hardest}, most steps)", f"{steps[hardest]:,}", _seconds(times[hardest]),
         _rate(steps[hardest], times[hardest])],
        [f"ours, slowest (#{slowest})", f"{steps[slowest]:,}", _seconds(times[slowest]), _rate(steps[slowest], times[slowest])],
        [f"Porcupine, all {PORCUPINE_HISTORIES} histories", f"{PORCUPINE_ALL_STEPS:,}", _seconds(PORCUPINE_ALL_SECONDS),
         _rate(PORCUPINE_ALL_STEPS, PORCUPINE_ALL_SECONDS)],
        ["Porcupine, hardest", f"{PORCUPINE_HARDEST_STEPS:,}", _seconds(PORCUPINE_HARDEST_SECONDS),
         _rate(PORCUPINE_HARDEST_STEPS, PORCUPINE_HARDEST_SECONDS)],
    ]
    lines = [
        ETCD,
        f"{len(histories)} histories, {ops:,} operations in all; verdicts: {_verdicts([r for r, _ in results])}",
        tabulate(rows, headers=["", "model steps", "time", "steps/s"], colalign=["left", "right", "right", "right"]),
        f"vs Porcupine, hardest history: {steps[hardest] / PORCUPINE_HARDEST_STEPS:.2f}x the steps, "
        f"{times[hardest] / PORCUPINE_HARDEST_SECONDS:.2f}x the time (slowest: "
        f"{times[slowest] / PORCUPINE_HARDEST_SECONDS:.2f}x)",
        f"vs Porcupine, all histories: {total_steps / PORCUPINE_ALL_STEPS:.2f}x the steps, "
        f"{total_time / PORCUPINE_ALL_SECONDS:.2f}x the time"
        + ("" if len(histories) == PORCUPINE_HISTORIES else
           f" (ours are {len(histories)} generated histories, Porcupine's {PORCUPINE_HISTORIES} from Jepsen)"),
        "target: the same order of steps in at most 2x Porcupine's time: "
        + ("met" if times[slowest] <= 2 * PORCUPINE_HARDEST_SECONDS and total_time <= 2 * PORCUPINE_ALL_SECONDS
           * max(1.0, len(histories) / PORCUPINE_HISTORIES) else "NOT met"),
    ]
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
    p.add_argument("--skip-huge", action="store_true", help="leave out part (c)")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
