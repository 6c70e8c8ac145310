"""Report benchmark: `report.html` of a large run, as its user meets it.

    python -m bench.report                      # 100,000 operations: about a minute
    python -m bench.report --ops 5000 --repeat 1 --no-browser   # quick

A run directory is made in a temporary store (not timed): `test.json`, a
synthetic `history.jsonl` and the `results.json` that the project's own
checkers give it (`harness.runner.check_run`), as a real run leaves them.
The history (`make_run`) is a register workload on a simulated store: the
real `workloads.register` workers (unique values, read-modify-writes with
`obs`, keys retiring by generation) on `--workers` clients, one node each
(round robin over `--nodes`), at `--rate` operations a second; each
operation takes effect at one instant between its invocation and its
completion, so the history is linearizable, but for the reads planted stale.
`--partitions` partitions (halves, or one node isolated) cut the run; half of
the operations sent to the cut-off side time out (`info`, a write maybe
taking effect until the partition heals, the worker going on as a new
process), and `--stale` reads answered by the cut-off side, spread over the
partitions and one a key, return an old value after a newer write was
acknowledged: real non-linearizable reads, each one anomaly of the
linearizability checker. A few reads and writes fail or time out anyway. Final reads of every key on every node come last. `--ops` counts
every client operation, final reads included.

Then, each `--repeat` times (the median is printed):

- `harness report RUN_DIR` as a subprocess (`python -m harness`: start-up,
  reading the run and writing the page), against `harness check RUN_DIR`
  (the run's checkers over the same history, start-up included); the size of
  `report.html` against `history.jsonl`. In this process, once:
  `load_run` and `render` apart, to say where the time goes.
- In headless Chromium (Debian's `chromium` and `chromedriver`), the page
  opened from disk: first paint, first contentful paint and the load event
  (the timeline is drawn by then) from the Performance API, against a
  trivial page of the same size (a heading and an unparsed script block);
  one frame of the whole run (every operation drawn), against as many bars
  drawn on the same canvas with `fillRect` alone; and the timeline
  scrolled from the start to the end one `--screen`-second screen a frame
  (`window.harnessTimeline.sweep(1)`), against as many animation frames
  that draw nothing.

Targets (the issue's): the report written in under 10 s, under 20 MB, first
paint under 2 s. Figures are printed, never asserted. Without selenium or a
browser that starts here, the browser part is skipped with a note.
"""

from __future__ import annotations

import argparse
import datetime
import heapq
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from bench.common import positive, version

TARGET_REPORT_S = 10.0
TARGET_BYTES = 20_000_000
TARGET_PAINT_S = 2.0

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BROWSER_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000")

MS = 1_000_000  # nanoseconds
S = 1_000_000_000
NEMESIS_LAG = 2 * MS  # from a nemesis op's invocation to its info


# --------------------------------------------------------------- the run


@dataclass(frozen=True, kw_only=True, slots=True)
class RunShape:
    """What `make_run` makes."""

    ops: int  # client operations, final reads included
    workers: int = 10
    nodes: int = 5
    rate: float = 1000.0  # operations a second over all workers
    partitions: int = 4
    stale: int = 5  # stale reads planted, spread over the partitions
    latency_ms: float = 2.0  # median of an operation that goes through
    op_timeout: float = 1.0  # seconds: an operation with no answer is `info` then
    cut_timeouts: float = 0.5  # chance an operation sent to the cut-off side times out
    fail: float = 0.003  # chance an operation fails anyway (it did not happen)
    blip: float = 0.001  # chance an operation times out anyway
    name: str = "register-report"


@dataclass(frozen=True, kw_only=True, slots=True)
class PlantedRun:
    """A run directory `make_run` wrote, and what was planted in it."""

    dir: Path
    ops: int  # client operations (invocations), final reads included
    events: int  # lines of history.jsonl
    stale: tuple[int, ...]  # history indexes of the stale reads' invocations
    partitions: tuple[tuple[int, int], ...]  # (start, end) in ns
    duration_s: float


@dataclass(slots=True)
class _Op:
    worker: int
    process: int
    node: str
    f: str
    key: Any
    value: Any
    extra: dict[str, Any]
    start: int
    end: int
    outcome: str
    effect: int  # ns; -1: never
    error: str | None = None
    result: Any = None
    stale: bool = False
    index: int = -1


@dataclass(slots=True)
class _Partition:
    start: int
    end: int
    shape: str
    grudge: dict[str, list[str]]
    cut: frozenset[str]  # the smaller side
    stale: int  # stale reads still to plant
    ops: list[int] = field(default_factory=list)


def _final_reads_estimate(shape: RunShape, workload_ops: int) -> int:
    from workloads.base import WorkloadOptions

    keys = WorkloadOptions(concurrency=shape.workers).keys()
    per_worker = math.ceil(workload_ops / shape.workers)
    return math.ceil(per_worker / keys.ops_per_generation) * keys.active * shape.nodes


def _partitions(shape: RunShape, rng: random.Random, nodes: list[str], end: int) -> list[_Partition]:
    from harness.nemesis.partition import SHAPES, grudge_value

    out = []
    slot = end / max(1, shape.partitions)
    for p in range(shape.partitions):
        start = int(slot * p + slot * rng.uniform(0.2, 0.35))
        length = int(slot * rng.uniform(0.3, 0.5))
        kind = ("halves", "isolate-one")[p % 2]
        grudge = SHAPES[kind](nodes, rng)
        sides: dict[frozenset[str], None] = {}
        for node in nodes:
            sides[frozenset({node} | set(nodes) - grudge[node])] = None
        cut = min(sides, key=len)
        stale = shape.stale // shape.partitions + (p < shape.stale % shape.partitions)
        out.append(_Partition(start, start + length, kind, grudge_value(grudge), cut, stale))
    return out


def make_run(store: Path, shape: RunShape, seed: int = 1, *, stamp: str = "20240101T120000") -> PlantedRun:
    """Write `store/<shape.name>/<stamp>/` with test.json, history.jsonl and
    results.json (see the module docstring). Fewer stale reads than asked
    are planted when the partitions are too short to hold them (each goes to
    a read of the cut-off side, on a key of its own, after two writes of that
    key were acknowledged one after the other): `PlantedRun.stale` says."""
    from contract.ops import Completion
    from harness import results as results_mod
    from harness import store as store_mod
    from harness.history import HistoryWriter
    from harness.runner import check_run
    from workloads.base import WorkloadOptions, final_read
    from workloads.register import RegisterWorkload

    rng = random.Random(seed)
    run_dir = store / shape.name / stamp
    run_dir.mkdir(parents=True)
    nodes = [f"n{i + 1}" for i in range(shape.nodes)]
    workload_ops = shape.ops
    for _ in range(4):  # the final reads depend on the keys used, which depend on the ops
        workload_ops = max(shape.workers, shape.ops - _final_reads_estimate(shape, workload_ops))
    end_of_workload = int(workload_ops / shape.rate * S)
    partitions = _partitions(shape, rng, nodes, end_of_workload)
    workload = RegisterWorkload(WorkloadOptions(concurrency=shape.workers, deletes=0.0))  # writes and reads only
    gens = [workload.worker(w, random.Random(f"{seed}:ops:{w}")) for w in range(shape.workers)]
    think = max(0.0, shape.workers / shape.rate - shape.latency_ms / 1000) * S
    writer = HistoryWriter(run_dir / "history.jsonl")
    index = 0
    state: dict[Any, Any] = {}
    acked: dict[Any, list[_Op]] = {}  # key -> ok writes, in completion order
    stale: list[int] = []
    stale_keys: set[Any] = set()
    # events: (time, seq, kind, payload); kinds: 0 nemesis, 1 start, 2 effect, 3 done
    events: list[tuple[int, int, int, Any]] = []
    seq = 0

    def push(t: int, kind: int, payload: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, payload))

    def record(t: int, process: Any, type_: str, f: str, key: Any, value: Any, node: str | None,
               error: str | None = None, extra: dict[str, Any] | None = None) -> int:
        nonlocal index
        writer.write_fields(index, t, process, type_, f, key, value, node, error, extra)  # type: ignore[arg-type]
        index += 1
        return index - 1

    for p in partitions:
        push(p.start, 0, ("start-partition", p))
        push(p.end, 0, ("stop-partition", p))
    for w in range(shape.workers):
        push(int(rng.uniform(0, think + 1)), 1, (w, w))

    def cut_partition(node: str, t: int) -> _Partition | None:
        return next((p for p in partitions if p.start <= t < p.end and node in p.cut), None)

    def plant(op: _Op, t: int) -> bool:
        """Make `op` (a read) return the value of a write acknowledged before
        another write of its key was invoked, that one acknowledged before now."""
        if op.key in stale_keys:  # the checker reports one anomaly a key: one stale read a key
            return False
        writes = acked.get(op.key) or []
        newer = next((w for w in reversed(writes) if w.end < t), None)
        older = None if newer is None else next((w for w in reversed(writes) if w.end < newer.start), None)
        if older is None:
            return False
        op.result, op.stale = [older.value], True
        stale_keys.add(op.key)
        return True

    invoked = 0
    last = 0
    while events:
        t, _, kind, payload = heapq.heappop(events)
        last = t
        if kind == 0:
            f, p = payload
            record(t, "nemesis", "invoke", f, None, None, None)
            what = {"shape": p.shape, "grudge": p.grudge} if f == "start-partition" else {"healed": p.shape}
            p.ops.append(record(t + NEMESIS_LAG, "nemesis", "info", f, None, what, None))
        elif kind == 1:
            w, process = payload
            if invoked >= workload_ops:
                continue
            invoked += 1
            inv = gens[w].next()
            node = nodes[w % shape.nodes]
            op = _Op(worker=w, process=process, node=node, f=inv.f, key=inv.key, value=inv.value,
                     extra=dict(inv.extra), start=t, end=t, outcome="ok", effect=-1)
            cut = cut_partition(node, t)
            latency = int(rng.lognormvariate(math.log(shape.latency_ms), 0.6) * MS)
            x = rng.random()
            if cut is not None and op.f == "read" and cut.stale > 0 and plant(op, t):
                cut.stale -= 1
                op.end = t + latency
            elif (cut is not None and x < shape.cut_timeouts) or x > 1 - shape.blip:
                op.outcome, op.error, op.end = "info", "timeout", t + int(shape.op_timeout * S)
                if op.f == "write" and rng.random() < 0.5:
                    until = cut.end if cut is not None else op.end
                    op.effect = rng.randrange(t, max(until, t + 1))
            elif x < shape.fail:
                op.outcome, op.end = "fail", t + latency
                op.error = "unavailable" if op.f == "read" else "not enough replicas"
            else:
                op.end = t + latency
                op.effect = rng.randrange(t, op.end + 1)
            op.index = record(t, process, "invoke", op.f, op.key, op.value, node, None, op.extra or None)
            if op.stale:
                stale.append(op.index)
            if op.effect >= 0:
                push(op.effect, 2, op)
            push(op.end, 3, op)
        elif kind == 2:
            op = payload
            if op.f == "write":
                state[op.key] = op.value
            elif not op.stale:
                op.result = [state[op.key]] if op.key in state else []
        else:
            op = payload
            if op.outcome == "ok":
                value = op.result if op.f == "read" else op.value
                if op.f == "write":
                    acked.setdefault(op.key, []).append(op)
            else:
                value = None if op.f == "read" else op.value
            record(t, op.process, op.outcome, op.f, op.key, value, op.node, op.error, op.extra or None)
            gens[op.worker].completed(_invocation(op), Completion(op.outcome, value, error=op.error))
            process = op.process + shape.workers if op.outcome == "info" else op.process
            push(t + int(rng.expovariate(1 / think)) if think else t + 1, 1, (op.worker, process))
    # the final reads: after healing, every key used on every node, one process a node
    keys = workload.keys.used_keys()
    finals: list[tuple[int, int, str, _Op]] = []
    for n, node in enumerate(nodes):
        t = last + S + n * 50_000
        for key in keys:
            latency = int(rng.lognormvariate(math.log(shape.latency_ms), 0.6) * MS)
            read = _Op(worker=-1, process=shape.workers * 1000 + 1 + n, node=node, f="read", key=key, value=None,
                       extra=dict(final_read(key).extra), start=t, end=t + latency, outcome="ok", effect=-1,
                       result=[state[key]] if key in state else [])
            finals += [(read.start, len(finals), "invoke", read), (read.end, len(finals) + 1, "ok", read)]
            t = read.end + 100_000
    for t, _, type_, read in sorted(finals, key=lambda e: e[:2]):
        record(t, read.process, type_, "read", read.key, read.result if type_ == "ok" else None, read.node, None,
               read.extra)
        last = t
    writer.close()
    duration = last / S
    test = {
        "name": shape.name, "system": "kvnode", "system_name": "kvnode", "backend": "local",
        "nodes": shape.nodes, "workload": "register", "nemesis": ["partition"],
        "nemesis_interval": round(duration / max(1, shape.partitions) / 2, 1), "seed": seed,
        "concurrency": shape.workers, "rate": shape.rate, "time_limit": round(end_of_workload / S, 1),
        "op_timeout": shape.op_timeout,
        "system_settings": {"n": 3, "w": 1, "r": 1, "resolution": "lww", "quorum": "sloppy",
                            "read_repair": "async"},
        "promise": {"claims": [{"name": "linearizable", "params": {}, "why": "", "asked": True}]},
    }
    store_mod.write_json(run_dir / "test.json", test)
    checked, promise, not_checked = check_run(run_dir)
    faults = {"start-partition": len(partitions), "stop-partition": len(partitions)}
    summary = results_mod.as_dict(checked, run=str(run_dir), seed=seed, faults=faults, system="kvnode",
                                  promise=promise, not_checked=not_checked, started=_started(stamp),
                                  duration_s=round(duration, 3))
    store_mod.write_json(run_dir / "results.json", summary)
    return PlantedRun(dir=run_dir, ops=invoked + len(keys) * len(nodes), events=index, stale=tuple(stale),
                      partitions=tuple((p.start, p.end) for p in partitions), duration_s=duration)


def _started(stamp: str) -> str:
    """results.json's start, in UTC, from the run directory's name."""
    when = datetime.datetime.strptime(stamp[:15], "%Y%m%dT%H%M%S").replace(tzinfo=datetime.UTC)
    return when.isoformat(timespec="seconds")


def _invocation(op: _Op) -> Any:
    from contract.ops import Invocation

    return Invocation(op.f, op.key, op.value, extra=op.extra)


# --------------------------------------------------------------- the browser


def browser_problem() -> str | None:
    """Why no headless Chromium can be driven here, or None (not tried yet)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for what, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not os.access(path, os.X_OK):
            return f"{what} is not installed at {path} (Debian: apt-get install chromium chromium-driver)"
    return None


def start_browser() -> Any:
    """A headless Chromium driven by Debian's chromedriver (a selenium
    WebDriver); the caller quits it. Raises what selenium raises when it
    cannot start."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in BROWSER_ARGS:
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for tests
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


_PAINTS = """
const done = arguments[arguments.length - 1];
function look() {
  const paint = {};
  for (const e of performance.getEntriesByType("paint")) paint[e.name] = e.startTime;
  const nav = performance.getEntriesByType("navigation")[0];
  if (paint["first-contentful-paint"] !== undefined && nav && nav.loadEventEnd > 0)
    done({fp: paint["first-paint"], fcp: paint["first-contentful-paint"], load: nav.loadEventEnd});
  else setTimeout(look, 20);
}
look();
"""

_SWEEP = """
const screen = arguments[0], done = arguments[arguments.length - 1];
const T = window.harnessTimeline;
const end = JSON.parse(document.getElementById("timeline-data").textContent).end;
T.reset();
T.sweep(1).then(whole => {
  const drawnWhole = T.drawn();
  // as many bars on the same canvas, fillRect alone: the least a frame of them costs
  const ctx = document.getElementById("timeline").getContext("2d");
  let t0 = performance.now();
  for (let i = 0; i < drawnWhole; i++) {
    ctx.fillStyle = i & 1 ? "#6DB6FE" : "#FFAA26";
    ctx.fillRect(110 + (i * 7) % 1000, 40 + (i % 10) * 22, 2, 14);
  }
  const bars = performance.now() - t0;
  T.reset();
  const v = T.view();
  T.zoom(screen / (v[1] - v[0]));
  const w = T.view(), span = w[1] - w[0];
  const frames = Math.floor(Math.max(end, 1) / span) + 1;
  T.sweep(1).then(ms => {
    // as many animation frames that draw nothing (sweep draws its first frame at once)
    t0 = performance.now();
    let k = 1;
    function idle() {
      if (k++ >= frames) done({whole, drawnWhole, bars, ms, frames, idle: performance.now() - t0, span});
      else requestAnimationFrame(idle);
    }
    idle();
  });
});
"""


def trivial_page(path: Path, size: int) -> Path:
    """A page of `size` bytes that shows one heading: the rest is a script
    block of a type the browser does not run."""
    head = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>trivial</title></head>'
            '<body><h1>A trivial page</h1><script type="text/plain">')
    tail = "</script></body></html>\n"
    pad = max(0, size - len(head) - len(tail))
    path.write_text(head + "x" * pad + tail, encoding="utf-8")
    return path


def paint_times(driver: Any, page: Path) -> dict[str, float]:
    """Open `page` from disk; its first paint, first contentful paint and
    load event end, in ms since navigation started."""
    driver.get(page.resolve().as_uri())
    driver.set_script_timeout(60)
    return dict(driver.execute_async_script(_PAINTS))


def sweep_times(driver: Any, screen_ms: float) -> dict[str, float]:
    """On the open report: one frame of the whole run, then the run
    scrolled end to end in screens of `screen_ms`, then as many idle frames."""
    driver.set_script_timeout(600)
    return dict(driver.execute_async_script(_SWEEP, screen_ms))


# --------------------------------------------------------------- measuring


def _timed_cli(args: Sequence[str]) -> float:
    """Seconds `harness ARGS` takes, start-up included; its verdict (exit 0,
    1 or 2) does not matter."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 1, 2):
        raise RuntimeError(f"harness {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return seconds


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def _s(x: float) -> str:
    return f"{x:.2f} s"


def _ms(x: float) -> str:
    return f"{x:,.0f} ms" if x >= 100 else f"{x:.1f} ms"


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def _target(ok: bool, text: str) -> str:
    return f"{text}: {'met' if ok else 'NOT met'}"


def measure_files(run: PlantedRun, repeat: int) -> tuple[list[list[str]], list[str]]:
    from harness.report import page

    report = [_timed_cli(["report", str(run.dir)]) for _ in range(repeat)]
    check = [_timed_cli(["check", str(run.dir)]) for _ in range(repeat)]
    size = (run.dir / "report.html").stat().st_size
    history = (run.dir / "history.jsonl").stat().st_size
    rows = [
        ["harness report RUN_DIR", _s(_median(report)), "harness check RUN_DIR", _s(_median(check)),
         _ratio(_median(report), _median(check)),
         _target(_median(report) < TARGET_REPORT_S, f"under {TARGET_REPORT_S:.0f} s")],
        ["report.html", _mb(size), "history.jsonl", _mb(history), _ratio(size, history),
         _target(size < TARGET_BYTES, f"under {TARGET_BYTES / 1e6:.0f} MB")],
    ]
    t0 = time.perf_counter()
    record = page.load_run(run.dir)
    loaded = time.perf_counter() - t0
    html = page.render(record)
    rendered = time.perf_counter() - t0 - loaded
    notes = [f"where the report's time goes (in this process, once): load_run {_s(loaded)}, "
             f"render {_s(rendered)} ({len(html.encode()) / 1e6:.1f} MB)"]
    return rows, notes


def measure_browser(run: PlantedRun, repeat: int, screen_s: float, work: Path) -> tuple[list[list[str]], list[str]]:
    report = run.dir / "report.html"
    trivial = trivial_page(work / "trivial.html", report.stat().st_size)
    driver = start_browser()
    try:
        versions = driver.capabilities.get("browserVersion", "?")
        pages: dict[str, list[dict[str, float]]] = {"report": [], "trivial": []}
        for _ in range(repeat):
            pages["trivial"].append(paint_times(driver, trivial))
            pages["report"].append(paint_times(driver, report))
        sweeps = [sweep_times(driver, screen_s * 1000)]
        for _ in range(repeat - 1):
            paint_times(driver, report)
            sweeps.append(sweep_times(driver, screen_s * 1000))
    finally:
        driver.quit()

    def med(which: str, key: str) -> float:
        return _median([p[key] for p in pages[which]])

    rows = []
    for key, label in (("fp", "first paint"), ("fcp", "first contentful paint"),
                       ("load", "load event (timeline drawn)")):
        a, b = med("report", key), med("trivial", key)
        target = _target(a < TARGET_PAINT_S * 1000, f"under {TARGET_PAINT_S:.0f} s") if key == "fp" else ""
        rows.append([f"report.html: {label}", _ms(a), "trivial page, same size", _ms(b), _ratio(a, b), target])
    whole, bars = _median([s["whole"] for s in sweeps]), _median([s["bars"] for s in sweeps])
    drawn = int(sweeps[0]["drawnWhole"])
    rows.append([f"one frame of the whole run ({drawn:,} ops drawn)", _ms(whole), "as many bars, fillRect alone",
                 _ms(bars), _ratio(whole, bars), ""])
    ms, idle = _median([s["ms"] for s in sweeps]), _median([s["idle"] for s in sweeps])
    frames = int(sweeps[0]["frames"])
    rows.append([f"scroll end to end, {screen_s:g} s screens ({frames:,} frames)", _ms(ms),
                 "as many frames drawing nothing", _ms(idle), _ratio(ms, idle), ""])
    notes = [f"chromium {versions}, headless, window 1400x1000; median of {repeat}"]
    return rows, notes


# --------------------------------------------------------------------- main


def header(args: argparse.Namespace) -> str:
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    return "\n".join([
        "report benchmark: harness report and report.html in headless Chromium",
        f"python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}; "
        f"{cpus} CPUs ({usable} usable); selenium {version('selenium')}",
        f"seed {args.seed}; {args.ops:,} operations, {args.workers} workers, {args.nodes} nodes, "
        f"{args.rate:g} ops/s, {args.partitions} partitions, {args.stale} stale reads; repeat {args.repeat}",
    ])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Time `harness report` on a large synthetic run, and report.html's first paint and "
        "timeline scrolling in headless Chromium; prints each figure beside a baseline measured in the same run.",
    )
    p.add_argument("--ops", type=positive, default=100_000, help="client operations (default 100,000)")
    p.add_argument("--workers", type=positive, default=10, help="client workers (default 10)")
    p.add_argument("--nodes", type=positive, default=5, help="nodes (default 5)")
    p.add_argument("--rate", type=float, default=1000.0, help="operations a second (default 1000)")
    p.add_argument("--partitions", type=positive, default=4, help="partitions in the run (default 4)")
    p.add_argument("--stale", type=positive, default=5, help="stale reads planted (default 5)")
    p.add_argument("--seed", type=int, default=1, help="seed of the run (default 1)")
    p.add_argument("--repeat", type=positive, default=3, help="measure each figure this many times (default 3)")
    p.add_argument("--screen", type=float, default=1.0,
                   help="seconds of the run on one screen while scrolling (default 1)")
    p.add_argument("--no-browser", action="store_true", help="leave out the browser part")
    p.add_argument("--dir", type=Path, default=None, help="where the temporary store goes (default: TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the store (its path is printed)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(header(args), flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-report-", dir=args.dir))
    try:
        shape = RunShape(ops=args.ops, workers=args.workers, nodes=args.nodes, rate=args.rate,
                         partitions=args.partitions, stale=args.stale)
        t0 = time.perf_counter()
        run = make_run(work / "store", shape, args.seed)
        made = time.perf_counter() - t0
        results = json.loads((run.dir / "results.json").read_text())
        print(f"run: {run.ops:,} operations ({run.events:,} history lines), {run.duration_s:.1f} s of history, "
              f"verdict {results['valid']}, {len(run.stale)} stale reads planted (of {args.stale}); "
              f"made and checked in {_s(made)} (not timed below)", flush=True)
        print(flush=True)
        rows, notes = measure_files(run, args.repeat)
        problem = None if not args.no_browser else "--no-browser"
        problem = problem or browser_problem()
        if problem is None:
            try:
                more, more_notes = measure_browser(run, args.repeat, args.screen, work)
                rows += more
                notes += more_notes
            except Exception as e:  # a browser that does not start here
                problem = f"the browser did not start: {type(e).__name__}: {str(e).strip().splitlines()[0]}"
        if problem is not None:
            notes.append(f"browser part skipped: {problem}")
        print(tabulate(rows, headers=["figure", "value", "baseline", "baseline value", "ratio", "target"],
                       colalign=["left", "right", "left", "right", "right", "left"]), flush=True)
        for note in notes:
            print(f"note: {note}", flush=True)
        if args.keep:
            print(f"kept: {run.dir}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
