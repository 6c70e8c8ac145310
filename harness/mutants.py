"""`harness ci --mutants DIR`: mutation testing of the harness itself.

A mutant is a patch that plants one realistic bug in the reference node
(`ci/mutants/*.patch`). Its header, plain lines before the first `diff`,
says what it is::

    Mutant: ack-before-w
    Class: quorum counting on writes
    Breaks: the coordinator acknowledges a put before W replicas stored it ...
    Shows as: stale-read, lost-write
    Rows: strict-partition, sync-repair

`Rows` names rows of the matrix (`DIR/matrix.toml` unless `--matrix` says
otherwise) that must catch it. Each mutant is applied to a scratch copy of
the `kvnode` package, and every row it names runs over K seeds with the
nodes running that copy (a run's processes start in the copy's directory,
with it first on `PYTHONPATH`). A run *catches* the mutant when a checker
finds it invalid. The unmutated code runs the same rows and seeds from a
scratch copy of its own: the false-alarm baseline, which must never be
flagged.

The detection table has a line per mutant (and the baseline): its rows, the
runs that caught it k/K (and the seeds in which any of its rows caught it),
the run time until the first catch (the runs before it, in row and seed
order, plus the one that caught), and the anomaly types found. In
JUnit a mutant that no run caught is a failure, and so is a flagged baseline
run. The nodes run on the local or netns backend (both start processes on
this machine's file system); rows for other backends are skipped with the
reason.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness.errors import ConfigError, RunError
from harness.matrix import Matrix, Row

BASELINE = "unmutated"
HEADER_FIELDS = ("mutant", "class", "breaks", "shows as", "rows")
BACKENDS = ("local", "netns")  # where a node runs the scratch copy of this machine's files
SENTENCES = 3


class MutantError(ConfigError):
    """A mutant that cannot be used (no header, an unknown row, a patch that
    does not apply): exit 254, one line naming the file."""


@dataclass(frozen=True)
class Mutant:
    name: str
    path: Path
    kind: str  # the header's `Class`
    breaks: str
    shows: tuple[str, ...]  # anomaly types expected to show it
    rows: tuple[str, ...]
    patch: str  # the whole file; git apply skips the header


def parse(path: Path) -> Mutant:
    """The mutant in `path`; MutantError if its header lacks a field."""
    text = path.read_text(encoding="utf-8")
    head, sep, _ = text.partition("\ndiff ")
    if not sep and not text.startswith("diff "):
        raise MutantError(f"{path}: no diff in it (a mutant is a header, then `git diff` output)")
    fields: dict[str, str] = {}
    last = None
    for line in ("" if text.startswith("diff ") else head).splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip().lower() in HEADER_FIELDS:
            last = key.strip().lower()
            fields[last] = value.strip()
        elif last is not None and line.startswith((" ", "\t")) and line.strip():
            fields[last] += " " + line.strip()  # a continued header line
    missing = [f for f in HEADER_FIELDS if not fields.get(f)]
    if missing:
        raise MutantError(f"{path}: the header lacks {', '.join(repr(m.title()) for m in missing)} "
                          f"(lines `Name: value` before the diff: {', '.join(f.title() for f in HEADER_FIELDS)})")

    def items(value: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in value.split(",") if x.strip())

    return Mutant(name=fields["mutant"], path=path, kind=fields["class"], breaks=fields["breaks"],
                  shows=items(fields["shows as"]), rows=items(fields["rows"]), patch=text)


def load(directory: Path, matrix: Matrix, names: Sequence[str] = ()) -> list[Mutant]:
    """The mutants of `directory` (`*.patch`, by file name), or those named;
    MutantError for a bad header, two mutants of one name, or a row that
    `matrix` lacks."""
    if not directory.is_dir():
        raise MutantError(f"--mutants {directory}: no such directory")
    mutants = [parse(p) for p in sorted(directory.glob("*.patch"))]
    if not mutants:
        raise MutantError(f"--mutants {directory}: no *.patch files in it")
    rows = {r.name for r in matrix.rows}
    seen: dict[str, Path] = {}
    for m in mutants:
        if m.name in seen:
            raise MutantError(f"{m.path}: mutant {m.name!r} is also {seen[m.name]}")
        seen[m.name] = m.path
        unknown = [r for r in m.rows if r not in rows]
        if unknown:
            raise MutantError(f"{m.path}: row {unknown[0]!r} is not in {matrix.path} "
                              f"(rows: {', '.join(sorted(rows))})")
    if names:
        missing = [n for n in names if n not in seen]
        if missing:
            raise MutantError(f"--mutant {missing[0]}: no such mutant in {directory} "
                              f"(mutants: {', '.join(seen)})")
        mutants = [m for m in mutants if m.name in names]
    return mutants


def source() -> Path:
    """The directory holding the `kvnode` package this harness runs."""
    import kvnode

    return Path(kvnode.__file__).resolve().parent.parent


def make_copy(mutant: Mutant | None, into: Path) -> Path:
    """A copy of the `kvnode` package in `into` (which becomes the code
    directory of the runs), with `mutant` applied; MutantError with git's
    message if it does not apply."""
    into.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source() / "kvnode", into / "kvnode",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if mutant is not None:
        done = subprocess.run(["git", "apply", "--whitespace=nowarn", "-"], input=mutant.patch, text=True,
                              cwd=into, capture_output=True)
        if done.returncode != 0:
            raise MutantError(f"{mutant.path}: does not apply to {source() / 'kvnode'}: "
                              f"{done.stderr.strip().splitlines()[0] if done.stderr.strip() else 'git apply failed'}")
    return into


@dataclass
class MutantRun:
    row: str
    seed: int
    status: str  # "caught", "missed" (valid), "unknown", "skip", "error"
    run_dir: str | None = None
    anomalies: list[str] = field(default_factory=list)  # "checker/type"
    sentences: list[str] = field(default_factory=list)
    seconds: float = 0.0
    reason: str = ""


@dataclass
class MutantResult:
    mutant: Mutant | None  # None: the unmutated baseline
    runs: list[MutantRun] = field(default_factory=list)

    @property
    def name(self) -> str:
        return BASELINE if self.mutant is None else self.mutant.name

    def judged(self) -> list[MutantRun]:
        return [r for r in self.runs if r.status in ("caught", "missed", "unknown")]

    def caught(self) -> int:
        return sum(r.status == "caught" for r in self.runs)

    def seeds_caught(self) -> tuple[int, int]:
        """(k, K): of the K seeds with a judged run, the k in which some row
        caught it (a seeded run of the mutant's whole matrix)."""
        seeds = {r.seed for r in self.judged()}
        return sum(any(r.seed == s and r.status == "caught" for r in self.runs) for s in seeds), len(seeds)

    def first_catch(self) -> float | None:
        """Seconds of runs, in row and seed order, until the first that caught."""
        spent = 0.0
        for r in self.runs:
            spent += r.seconds
            if r.status == "caught":
                return spent
        return None

    @property
    def ok(self) -> bool:
        """A mutant is killed by some run; the baseline is never flagged.
        Either way, no run may error."""
        if any(r.status == "error" for r in self.runs):
            return False
        if self.mutant is None:
            return self.caught() == 0
        return self.caught() > 0

    def anomaly_types(self) -> list[str]:
        return sorted({a for r in self.runs for a in r.anomalies})


@dataclass(frozen=True)
class Task:
    mutant: str
    code_dir: str
    row: Row
    seed: int
    store: str


def run_task(task: Task) -> MutantRun:
    """One row and seed on one copy of the code (in a worker process: it
    moves the process into the copy, so that nodes started by `python -m
    kvnode` import it)."""
    from harness import runner

    os.chdir(task.code_dir)
    path = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    os.environ["PYTHONPATH"] = os.pathsep.join([task.code_dir, *(p for p in path if p and p != task.code_dir)])
    row, seed = task.row, task.seed
    backend = row.run.get("backend", "local")
    if backend not in BACKENDS:
        return MutantRun(row.name, seed, "skip", reason=f"mutants run on {' or '.join(BACKENDS)}, not {backend}")
    config = runner.RunConfig(**row.run, seed=seed, store=task.store, name=f"mutant-{task.mutant}.{row.name}")
    try:
        prepared = runner.prepare(config)
    except ConfigError as e:
        return MutantRun(row.name, seed, "skip", reason=str(e))
    t0 = time.monotonic()
    try:
        outcome = runner.run(prepared, live=False, echo=lambda line: None)  # the table says what matters
    except RunError as e:
        return MutantRun(row.name, seed, "error", seconds=round(time.monotonic() - t0, 1), reason=str(e))
    anomalies = sorted({f"{r.checker}/{a.type}" for r in outcome.results if r.valid is False for a in r.anomalies})
    sentences = [f"{r.checker}/{a.type}: {a.explanation}" for r in outcome.results if r.valid is False
                 for a in r.anomalies[:SENTENCES]][:SENTENCES]
    status = "caught" if outcome.valid is False else "missed" if outcome.valid is True else "unknown"
    return MutantRun(row.name, seed, status, str(outcome.run_dir), anomalies, sentences,
                     round(time.monotonic() - t0, 1))


@contextmanager
def copies(mutants: Sequence[Mutant], root: Path | None = None) -> Iterator[dict[str, Path]]:
    """A scratch copy per mutant and one unmutated (name -> code dir),
    removed on the way out."""
    scratch = Path(tempfile.mkdtemp(prefix="harness-mutants-", dir=root))
    try:
        dirs = {BASELINE: make_copy(None, scratch / BASELINE)}
        for m in mutants:
            dirs[m.name] = make_copy(m, scratch / m.name)
        yield dirs
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_mutants(mutants: Sequence[Mutant], matrix: Matrix, store: str, *, jobs: int = 1, baseline: bool = True,
                done: Callable[[str, MutantRun], None] = lambda name, run: None) -> list[MutantResult]:
    """Every mutant's rows over their seeds, and the baseline over every row
    some mutant names; results in the mutants' order, baseline first. Runs
    go `jobs` at a time, each in a worker process. Ctrl-C stops: what ran
    is returned."""
    rows = {r.name: r for r in matrix.rows}
    store = str(Path(store).resolve())
    plan: list[tuple[Mutant | None, Row]] = []
    if baseline:
        used = [name for name in rows if any(name in m.rows for m in mutants)]
        plan += [(None, rows[name]) for name in used]
    plan += [(m, rows[name]) for m in mutants for name in m.rows]
    results = {BASELINE: MutantResult(None)} if baseline else {}
    results.update({m.name: MutantResult(m) for m in mutants})
    with copies(mutants) as dirs:
        tasks = [Task(BASELINE if m is None else m.name, str(dirs[BASELINE if m is None else m.name]), row, seed,
                      store) for m, row in plan for seed in row.seeds]
        order = {(t.mutant, t.row.name, t.seed): i for i, t in enumerate(tasks)}
        for task, run in _run_all(tasks, jobs):
            results[task.mutant].runs.append(run)
            done(task.mutant, run)
    for name, result in results.items():
        result.runs.sort(key=lambda r: order.get((name, r.row, r.seed), 0))
    return list(results.values())


def _child(task: Task, conn: Connection) -> None:
    # Out of the terminal's process group: a Ctrl-C reaches the parent
    # alone, which passes on exactly one SIGINT. A second one would stop
    # this run's heal and teardown halfway (asyncio.run raises at once).
    os.setpgrp()
    try:
        run = run_task(task)
    except BaseException as e:  # Ctrl-C (the run healed and stopped) or a bug: this run is an error
        run = MutantRun(task.row.name, task.seed, "error", reason=f"{type(e).__name__}: {e}"[:500])
    conn.send(run)
    conn.close()


def _run_all(tasks: Sequence[Task], jobs: int) -> Iterator[tuple[Task, MutantRun]]:
    """Each task in a fresh process of its own (a run leaves nothing behind,
    a cwd or imported modules, for the next), `jobs` at a time, as they end.
    Ctrl-C: each run going on is interrupted (it heals and stops its nodes)
    and waited for; the tasks not started are left out."""
    context = multiprocessing.get_context("spawn")
    pending = list(tasks)
    running: dict[Connection, tuple[Task, BaseProcess]] = {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                task = pending.pop(0)
                receive, send = context.Pipe(duplex=False)
                process: BaseProcess = context.Process(target=_child, args=(task, send), daemon=False)
                process.start()
                send.close()
                running[receive] = (task, process)
            for conn in wait(list(running)):
                assert isinstance(conn, Connection)
                task, process = running.pop(conn)
                try:
                    run = conn.recv()
                except EOFError:  # the worker died without a word
                    process.join()
                    run = MutantRun(task.row.name, task.seed, "error",
                                    reason=f"the run's process ended with status {process.exitcode}")
                conn.close()
                process.join()
                yield task, run
    except KeyboardInterrupt:
        for _, process in running.values():
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGINT)
        for conn, (_, process) in running.items():
            process.join(timeout=120)
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()


def table(results: Sequence[MutantResult]) -> str:
    """The detection table: one line per mutant (the baseline first); long
    cells wrap, so that it fits a terminal."""
    lines = []
    for r in results:
        judged = r.judged()
        rows = ", ".join(dict.fromkeys(run.row for run in r.runs)) or "-"
        k, seeds = r.seeds_caught()
        if r.mutant is None:
            what, verdict = f"flagged {r.caught()}/{len(judged)}", "ok" if r.ok else "FALSE ALARM"
            rows = f"{len(dict.fromkeys(run.row for run in r.runs))} rows"
        else:
            what, verdict = f"caught {r.caught()}/{len(judged)}", "killed" if r.ok else "SURVIVED"
        what += f"\n(seeds {k}/{seeds})"
        first = r.first_catch()
        errors = sum(run.status == "error" for run in r.runs)
        if errors:
            verdict = f"{errors} ERROR{'S' if errors > 1 else ''}"
        lines.append((r.name, rows, what, "-" if first is None else f"{first:.0f} s",
                      ", ".join(r.anomaly_types()) or "-", verdict))
    return tabulate(lines, headers=("mutant", "rows", "runs", "until first catch", "anomaly types", "result"),
                    maxcolwidths=[None, 28, None, 9, 44, None])


def per_row(results: Sequence[MutantResult]) -> str:
    """Caught k/K per mutant and row, for the closing notes and the bench."""
    lines = []
    for r in results:
        by_row: dict[str, list[MutantRun]] = {}
        for run in r.judged():
            by_row.setdefault(run.row, []).append(run)
        for row, runs in by_row.items():
            lines.append((r.name, row, f"{sum(x.status == 'caught' for x in runs)}/{len(runs)}"))
    return tabulate(lines, headers=("mutant", "row", "caught"))


def junit(results: Sequence[MutantResult], directory: Path) -> str:
    """JUnit XML: one test case per mutant (and the baseline)."""
    failures = sum(not r.ok and not any(x.status == "error" for x in r.runs) for r in results)
    errors = sum(any(x.status == "error" for x in r.runs) for r in results)
    seconds = sum(x.seconds for r in results for x in r.runs)
    suite = ET.Element("testsuite", name=f"harness ci --mutants {directory}", tests=str(len(results)),
                       failures=str(failures), errors=str(errors), skipped="0", time=f"{seconds:.1f}")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname="harness.ci.mutants", name=r.name,
                             time=f"{sum(x.seconds for x in r.runs):.1f}")
        text = details(r)
        if any(x.status == "error" for x in r.runs):
            el = ET.SubElement(case, "error", type="error",
                               message=next(x.reason for x in r.runs if x.status == "error")[:500])
            el.text = text
        elif not r.ok:
            message = (f"the unmutated code was flagged in {r.caught()} run(s)" if r.mutant is None
                       else f"no run caught it ({len(r.judged())} runs)")
            el = ET.SubElement(case, "failure", type="false-alarm" if r.mutant is None else "survived",
                               message=message)
            el.text = text
        out = ET.SubElement(case, "system-out")
        out.text = text
    root = ET.Element("testsuites", name="harness ci --mutants", tests=suite.get("tests", "0"),
                      failures=str(failures), errors=str(errors), skipped="0", time=suite.get("time", "0"))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def details(r: MutantResult) -> str:
    lines = [f"{r.name}: {r.mutant.breaks}" if r.mutant else f"{BASELINE}: the false-alarm baseline"]
    for x in r.runs:
        lines.append(f"{x.row} seed {x.seed}: {x.status} in {x.seconds:.0f} s"
                     + (f"; report {Path(x.run_dir) / 'report.html'}" if x.run_dir else "")
                     + (f"; {x.reason}" if x.reason else ""))
        lines += [f"  {s}" for s in x.sentences]
    return "\n".join(lines)


def summary_of(results: Sequence[MutantResult]) -> dict[str, Any]:
    """The results as JSON (for `--json` and the benchmark)."""
    return {r.name: {"caught": r.caught(), "runs": len(r.judged()), "seeds_caught": r.seeds_caught()[0],
                     "seeds": r.seeds_caught()[1], "first_catch_s": r.first_catch(),
                     "anomalies": r.anomaly_types(), "ok": r.ok,
                     "per_run": [vars(x) for x in r.runs]} for r in results}
