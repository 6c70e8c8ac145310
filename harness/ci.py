"""`harness ci`: run a matrix of configurations (harness/matrix.py) and hold
each to its expected verdicts: the table, JUnit XML for CI systems, and an
exit status that fails the build on any mismatch.

A row that must be found tries its seeds in order and passes on the first
run that meets its expectations; any other row must meet them on every
seed. A row the system or the backend refuses is skipped with the reason;
a row that cannot run (a node that will not start) is an error. Every run
stays in the store with its report.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness.errors import ConfigError, RunError
from harness.matrix import Matrix, Row

SENTENCES = 5  # anomaly sentences kept per attempt, for the table and JUnit


@dataclass
class Attempt:
    seed: int
    run_dir: str | None
    valid: Any
    verdicts: dict[str, Any]
    anomalies: dict[str, list[str]]  # checker -> anomaly types found (sorted)
    sentences: list[str]
    seconds: float
    met: bool


@dataclass
class RowResult:
    row: Row
    status: str  # "pass", "fail", "skip", "error", "interrupted"
    attempts: list[Attempt] = field(default_factory=list)
    reason: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("pass", "skip")

    def actual(self) -> str:
        if not self.attempts:
            return self.status
        def one(a: Attempt) -> str:
            return "valid" if a.valid is True else "INVALID" if a.valid is False else str(a.valid)
        return ", ".join(one(a) for a in self.attempts)

    def found(self) -> str:
        types = sorted({t for a in self.attempts for ts in a.anomalies.values() for t in ts})
        return ", ".join(types) or "-"

    def detection(self) -> str:
        if self.status in ("skip", "error", "interrupted"):
            return self.reason
        n = len(self.attempts)
        if self.row.must_be_found:
            hit = next((i for i, a in enumerate(self.attempts, 1) if a.met), None)
            return (f"found on seed {self.attempts[hit - 1].seed} (run {hit} of up to {len(self.row.seeds)})"
                    if hit else f"not found in {n} run{'s' if n != 1 else ''}")
        met = sum(a.met for a in self.attempts)
        return f"{met}/{n} runs as expected"


def run_row(row: Row, store: str, echo: Callable[[str], None] = lambda s: None) -> RowResult:
    """Run one row's seeds (stopping at the first detection of a row that
    must be found) and judge it."""
    from harness import runner

    started = time.monotonic()
    result = RowResult(row, "pass")
    for seed in row.seeds:
        config = runner.RunConfig(**row.run, seed=seed, store=store, name=row.name)
        try:
            prepared = runner.prepare(config)
        except ConfigError as e:
            result.status, result.reason = "skip", str(e)
            break
        t0 = time.monotonic()
        try:
            outcome = runner.run(prepared, live=False, echo=echo)
        except runner.Interrupted as e:
            result.status, result.reason = "interrupted", str(e)
            break
        except RunError as e:
            result.status, result.reason = "error", f"seed {seed}: {e}"
            break
        anomalies = {r.checker: sorted({a.type for a in r.anomalies}) for r in outcome.results}
        verdicts = {r.checker: r.valid for r in outcome.results}
        met = row.met(outcome.valid, verdicts, {c: set(t) for c, t in anomalies.items()})
        sentences = [f"{r.checker}/{a.type}: {a.explanation}" for r in outcome.results if r.valid is False
                     for a in r.anomalies[:SENTENCES]][:SENTENCES]
        result.attempts.append(Attempt(seed, str(outcome.run_dir), outcome.valid, verdicts, anomalies, sentences,
                                       round(time.monotonic() - t0, 1), met))
        echo(f"{row.name}: seed {seed}: {'as expected' if met else 'NOT as expected'} ({outcome.run_dir})")
        if row.must_be_found and met:
            break
        if not row.must_be_found and not met:
            break  # one false verdict fails a row that must hold on every seed
    if result.status == "pass":
        ok = any(a.met for a in result.attempts) if row.must_be_found else all(a.met for a in result.attempts)
        result.status = "pass" if ok and result.attempts else "fail"
    result.seconds = round(time.monotonic() - started, 1)
    return result


def run_matrix(matrix: Matrix, store: str, *, jobs: int = 1, echo: Callable[[str], None] = lambda s: None,
               done: Callable[[RowResult], None] = lambda r: None) -> list[RowResult]:
    """Every row, `jobs` at a time (in processes of their own). Ctrl-C stops:
    the runs going on heal and stop, and the rows finished are returned
    (those not run are left out)."""
    results: list[RowResult] = []
    if jobs <= 1:
        try:
            for row in matrix.rows:
                result = run_row(row, store, echo)
                results.append(result)
                done(result)
                if result.status == "interrupted":
                    break
        except KeyboardInterrupt:
            pass
        return results
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(run_row, _own_subnet(row, i), store): row for i, row in enumerate(matrix.rows)}
        try:
            for future in concurrent.futures.as_completed(futures):
                result = future.result()
                results.append(result)
                done(result)
        except KeyboardInterrupt:
            for f in futures:
                f.cancel()
    order = {r.name: i for i, r in enumerate(matrix.rows)}
    return sorted(results, key=lambda r: order[r.row.name])


def _own_subnet(row: Row, i: int) -> Row:
    """Rows run at once on netns or docker each get a subnet of their own."""
    if row.run.get("backend") in ("netns", "docker") and "subnet" not in row.run:
        return Row(row.name, {**row.run, "subnet": f"10.77.{100 + i % 150}.0/24"}, row.seeds, row.overall,
                   row.checkers)
    return row


def table(results: Sequence[RowResult]) -> str:
    rows = [(r.row.name, r.row.expected(), r.actual(), r.found(), r.detection(), f"{r.seconds:.0f} s",
             {"pass": "ok", "fail": "MISMATCH", "skip": "skipped", "error": "ERROR",
              "interrupted": "interrupted"}[r.status]) for r in results]
    return tabulate(rows, headers=("row", "expected", "actual", "anomalies found", "detection", "time", "result"))


def junit(results: Sequence[RowResult], matrix: Matrix) -> str:
    """JUnit XML: one test case per row, in one test suite for the matrix."""
    failures = sum(r.status == "fail" for r in results)
    errors = sum(r.status in ("error", "interrupted") for r in results)
    skipped = sum(r.status == "skip" for r in results)
    suite = ET.Element("testsuite", name=f"harness ci: {matrix.path.name}", tests=str(len(results)),
                       failures=str(failures), errors=str(errors), skipped=str(skipped),
                       time=f"{sum(r.seconds for r in results):.1f}")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"harness.ci.{matrix.path.stem}", name=r.row.name,
                             time=f"{r.seconds:.1f}")
        text = details(r)
        if r.status == "fail":
            what = "not found" if r.row.must_be_found else "not as expected"
            el = ET.SubElement(case, "failure", message=f"expected {r.row.expected()}, got {r.actual()}: {what}",
                               type="mismatch")
            el.text = text
        elif r.status in ("error", "interrupted"):
            el = ET.SubElement(case, "error", message=r.reason, type=r.status)
            el.text = text
        elif r.status == "skip":
            ET.SubElement(case, "skipped", message=r.reason)
        if r.status != "skip":
            out = ET.SubElement(case, "system-out")
            out.text = text
    root = ET.Element("testsuites", name="harness ci", tests=suite.get("tests", "0"), failures=str(failures),
                      errors=str(errors), skipped=str(skipped), time=suite.get("time", "0"))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def details(r: RowResult) -> str:
    lines = [f"row {r.row.name}: expected {r.row.expected()}; {r.detection()}"]
    for a in r.attempts:
        verdicts = ", ".join(f"{c} {'valid' if v is True else 'INVALID' if v is False else v}"
                             for c, v in a.verdicts.items())
        lines.append(f"seed {a.seed}: {verdicts}; {'as expected' if a.met else 'NOT as expected'}; "
                     f"report {Path(a.run_dir) / 'report.html' if a.run_dir else '-'}")
        lines += [f"  {s}" for s in a.sentences]
    if r.reason and r.status != "pass":
        lines.append(r.reason)
    return "\n".join(lines)
