"""The run's summary for a terminal, as `harness run` ends and as `harness
report RUN_DIR --text` prints it: the settings, the verdict table, latency
quantiles by operation, the faults, and the first anomalies as sentences
naming the node and the fault in force, with how many more the report holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from tabulate import tabulate

from checkers.result import Result
from harness import results as results_mod
from harness.report.context import RunHistory
from harness.report.page import RunRecord, anomaly_view, header, results_of

PER_CHECKER = 3  # sentences of one checker
IN_ALL = 6  # sentences in all


def summary(run: RunRecord, *, report: str | None = "report.html") -> str:
    results = results_of(run.results)
    out: list[str] = []
    wanted = {"system", "backend", "settings", "promise checked", "workload", "faults", "seed", "duration"}
    out.append(tabulate([(k, v) for k, v in header(run) if k in wanted], tablefmt="plain"))
    out.append("")
    out.append(results_mod.table(results))
    for name, why in (run.results.get("not_checked") or {}).items():
        out.append(f"not checked: {name}: {why}")
    stats = next((r for r in results if r.checker == "stats"), None)
    latency = stats.details.get("latency_ms") if stats is not None else None
    if latency:
        out.append("")
        rows = [(f, q.get("count", 0), *(q.get(k) for k in ("p50", "p95", "p99", "max"))) for f, q in latency.items()]
        out.append(tabulate(rows, headers=("operation", "ok", "p50 ms", "p95 ms", "p99 ms", "max ms"),
                            floatfmt=".1f", intfmt=","))
    if run.faults:
        out.append("")
        rows2 = [(f.kind, " ".join(f.nodes) or "-", f"{f.start / 1e9:.2f}",
                  "-" if f.end is None else f"{f.end / 1e9:.2f}", _cut(f.label, 70)) for f in run.faults]
        out.append(tabulate(rows2, headers=("fault", "nodes", "start s", "end s", "what")))
    sentences = first_sentences(run, results)
    if sentences:
        out.append("")
        out += sentences
    total = sum(len(r.anomalies) for r in results if r.valid is False)
    shown = sum(1 for s in sentences if not s.startswith(("    ", "  unknown")))
    if total > shown:
        where = f" in {report}" if report else ""
        out.append(f"  … {total - shown:,} more{where}")
    return "\n".join(out)


def first_sentences(run: RunRecord, results: Sequence[Result] | None = None) -> list[str]:
    """The first anomalies of the checkers that found the history invalid,
    each with its node and fault, and the reason of each that could not
    decide."""
    results = results if results is not None else results_of(run.results)
    history = RunHistory(run.history, run.faults)
    out: list[str] = []
    count = 0
    for r in results:
        if r.valid == "unknown" and r.reason:
            out.append(f"  unknown: {r.checker}: {r.reason}")
        if r.valid is not False:
            continue
        for n, a in enumerate(r.anomalies[:PER_CHECKER]):
            if count >= IN_ALL:
                break
            view = anomaly_view(f"{r.checker}-{n}", a, history, run.raw_lines)
            out.append(f"  {r.checker}/{a.type}: {a.explanation}")
            if view.context:
                out.append(f"    {view.context}; history.jsonl {view.line_text}")
            count += 1
    return out


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"
