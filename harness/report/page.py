"""`report.html`: one self-contained page per run (inline CSS, JS and SVG; it
opens from disk with no network) that says what was run, what was found and
why: the header (system, settings, promise, workload, faults, seed,
duration, verdict), each checker's verdict, every anomaly explained with the
node and the fault in force and linked to its operations in the timeline and
to its `history.jsonl` lines, the timeline itself (timeline.js), the plots,
the faults node by node, and a linearizability counterexample when there is
one.

`write_report(run_dir)` reads the run's `test.json`, `history.jsonl` and
`results.json` (checking the history again if the run stopped before it was
judged) and writes `run_dir/report.html`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from checkers import text
from checkers.history import Op
from checkers.result import Anomaly, Result
from harness.history import read_jsonl
from harness.report import faults as faults_mod
from harness.report.context import RunHistory, describe
from harness.report.faults import FaultInterval

SHOWN = 10  # anomalies of one type listed before "N more"
LISTED = 500  # anomalies of one type in the page at all (the rest: results.json)
RAW_LINES = 12  # history lines shown under one anomaly
_READS = frozenset({"read", "get", "r", "final-read"})


@dataclass
class RunRecord:
    """What a stored run left: its configuration, results and history."""

    dir: Path
    test: dict[str, Any]
    results: dict[str, Any]
    history: list[Op]
    raw_lines: list[str]
    faults: list[FaultInterval] = field(default_factory=list)
    checked_now: bool = False  # results.json was missing: checked for the report

    @property
    def nodes(self) -> list[str]:
        names = {op.node for op in self.history if op.node is not None}
        for f in self.faults:
            names.update(f.nodes)
        return sorted(names, key=faults_mod.node_order)


def load_run(run_dir: Path, *, results: dict[str, Any] | None = None,
             history: list[Op] | None = None) -> RunRecord:
    """Read a run directory of the store (its results and history unless
    given). Raises OSError or ValueError (with the file named) when it holds
    no readable run."""
    test = _read_json(run_dir / "test.json")
    path = run_dir / "history.jsonl"
    if history is None:
        history = read_jsonl(path)
    raw_lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    checked_now = False
    try:
        if results is None:
            results = _read_json(run_dir / "results.json")
    except FileNotFoundError:
        from harness import results as results_mod
        from harness.runner import check_run

        checked, promise, not_checked = check_run(run_dir, history)
        results = json.loads(json.dumps(results_mod.as_dict(checked, promise=promise, not_checked=not_checked),
                                        default=str))
        checked_now = True
    pairs = _fault_pairs(test.get("nemesis") or ())
    run = RunRecord(run_dir, test, results, history, raw_lines, checked_now=checked_now)
    run.faults = faults_mod.intervals(history, pairs)
    return run


def _fault_pairs(names: Sequence[str]) -> dict[str, str]:
    """start f -> stop f of the run's plug-in faults (built-ins are known)."""
    from harness import registry

    out: dict[str, str] = {}
    for name in names:
        try:
            cls = registry.load("nemeses", str(name))
        except Exception:  # a plug-in no longer installed: its ops are instants
            continue
        start, stop = getattr(cls, "start_f", None), getattr(cls, "stop_f", None)
        if isinstance(start, str) and isinstance(stop, str):
            out[start] = stop
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def results_of(data: Mapping[str, Any]) -> list[Result]:
    """results.json's checkers as `Result`s."""
    out = []
    for name, r in (data.get("checkers") or {}).items():
        anomalies = tuple(Anomaly(type=str(a.get("type")), ops=tuple(a.get("ops") or ()),
                                  explanation=str(a.get("explanation", "")), details=dict(a.get("details") or {}))
                          for a in r.get("anomalies") or ())
        out.append(Result(checker=str(r.get("checker", name)), valid=r.get("valid"), anomalies=anomalies,
                          counts=dict(r.get("counts") or {}), reason=r.get("reason"),
                          details=dict(r.get("details") or {})))
    return out


# ---------------------------------------------------------------- the page


def write_report(run_dir: Path, run: RunRecord | None = None) -> Path:
    run = run or load_run(run_dir)
    out = run_dir / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(render(run), encoding="utf-8")
    tmp.replace(out)
    return out


def render(run: RunRecord) -> str:
    from harness.report.plots import render_plots

    results = results_of(run.results)
    history_view = RunHistory(run.history, run.faults)
    groups = _groups(results, history_view, run.raw_lines)
    plots = render_plots(run.history, run.faults)
    counterexample = _counterexample(results, run.history)
    return _template().render(
        title=_title(run),
        verdict=_verdict(run.results.get("valid")),
        header=header(run),
        checkers=[_checker_row(r) for r in results],
        promise_lines=_promise_lines(run),
        groups=groups,
        unknown=any(r.valid == "unknown" for r in results),
        by_design=_by_design(results, history_view, run.raw_lines),
        plots=plots,
        latency=_latency(results),
        fault_rows=_fault_rows(run),
        node_info=_node_info(run),
        counterexample=counterexample,
        **_timeline(run),
    )


def _template() -> jinja2.Template:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    return env.from_string(_asset("report.html.j2"))


def _asset(name: str) -> str:
    return resources.files("harness.report").joinpath("templates", name).read_text(encoding="utf-8")


def _title(run: RunRecord) -> str:
    name = run.test.get("name") or f"{run.test.get('system', 'run')}-{run.test.get('workload', '')}"
    return f"{name} · {run.dir.name}"


@dataclass(frozen=True)
class _Verdict:
    text: str
    css: str


def _verdict(valid: Any) -> _Verdict:
    if valid is True:
        return _Verdict("valid", "v-valid")
    if valid is False:
        return _Verdict("INVALID", "v-invalid")
    return _Verdict("unknown", "v-unknown")


def header(run: RunRecord) -> list[tuple[str, str]]:
    """The run in a few lines: what ran where, with which settings, promise,
    workload, faults and seed, for how long, and the verdict."""
    t, r = run.test, run.results
    system = str(t.get("system_name") or t.get("system") or "?")
    if t.get("system") and t.get("system") != system:
        system += f" ({t['system']})"
    settings = t.get("system_settings") or t.get("system_options") or {}
    promise = r.get("promise") or t.get("promise") or {}
    claims = []
    for c in promise.get("claims") or ():
        params = ", ".join(f"{k}={v}" for k, v in (c.get("params") or {}).items())
        claims.append(f"{c.get('name')}{f' ({params})' if params else ''}{' [asked for]' if c.get('asked') else ''}")
    nemesis = ", ".join(t.get("nemesis") or ()) or "none"
    if t.get("nemesis"):
        nemesis += f" (every ~{t.get('nemesis_interval', '?')} s)"
    rows = [
        ("system", system),
        ("backend", f"{t.get('backend', '?')}, {t.get('nodes', len(run.nodes))} nodes ({' '.join(run.nodes)})"),
        ("settings", " ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"),
        ("promise checked", "; ".join(claims) or "nothing"),
        ("workload", f"{t.get('workload', '?')}: {t.get('concurrency', '?')} workers, {t.get('rate', '?')} ops/s, "
                     f"{t.get('time_limit', '?')} s"),
        ("faults", nemesis),
        ("seed", str(t.get("seed"))),
        ("started", str(r.get("started") or run.dir.name)),
        ("duration", _duration(run)),
        ("verdict", _verdict(r.get("valid")).text + (" (checked for this report: results.json was missing)"
                                                     if run.checked_now else "")),
    ]
    return rows


def _duration(run: RunRecord) -> str:
    d = run.results.get("duration_s")
    if isinstance(d, int | float):
        return f"{d:.1f} s"
    return f"{run.history[-1].time / 1e9:.1f} s of history" if run.history else "-"


def _checker_row(r: Result) -> dict[str, Any]:
    types: dict[str, int] = {}
    for a in r.anomalies:
        types[a.type] = types.get(a.type, 0) + 1
    note = ""
    if r.valid == "unknown" and r.reason:
        note = r.reason
    elif r.details.get("not_checked"):
        note = "not checked: " + ", ".join(sorted(r.details["not_checked"]))
    return {"name": r.checker, "claim": r.details.get("claim", "-"), "verdict": _verdict(r.valid),
            "counts": ", ".join(f"{t}: {n:,}" for t, n in sorted(types.items())) or "-", "note": note}


def _promise_lines(run: RunRecord) -> list[str]:
    out = []
    for name, why in (run.results.get("not_checked") or {}).items():
        out.append(f"not checked: {name}: {why}")
    return out


@dataclass
class _AnomalyView:
    id: str
    explanation: str
    context: str
    ops: list[int]
    line_text: str
    raw: str


@dataclass
class _Group:
    checker: str
    type: str
    total: int
    shown: list[_AnomalyView]
    more: list[_AnomalyView]
    unlisted: int


def anomaly_view(ident: str, a: Anomaly, run: RunHistory, raw_lines: Sequence[str]) -> _AnomalyView:
    context, named = describe(a, run)
    ops = sorted(set(a.ops) | set(named))
    numbers = [i + 1 for i in ops]
    line_text = ("line " if len(numbers) == 1 else "lines ") + ", ".join(map(str, numbers[:8])) + \
        (f" … ({len(numbers)} in all)" if len(numbers) > 8 else "")
    raw = "\n".join(f"{i + 1}: {raw_lines[i]}" if 0 <= i < len(raw_lines) else f"{i + 1}: (not in the file)"
                    for i in ops[:RAW_LINES])
    if len(ops) > RAW_LINES:
        raw += f"\n… {len(ops) - RAW_LINES} more"
    return _AnomalyView(ident, a.explanation, context, ops, line_text, raw)


def _groups(results: Sequence[Result], run: RunHistory, raw_lines: Sequence[str]) -> list[_Group]:
    groups: list[_Group] = []
    for r in results:
        by_type: dict[str, list[Anomaly]] = {}
        for a in r.anomalies:
            by_type.setdefault(a.type, []).append(a)
        for kind, items in by_type.items():
            views = [anomaly_view(f"{r.checker}-{kind}-{n}", a, run, raw_lines)
                     for n, a in enumerate(items[:LISTED])]
            groups.append(_Group(r.checker, kind, len(items), views[:SHOWN], views[SHOWN:],
                                 max(0, len(items) - LISTED)))
    return groups


def _by_design(results: Sequence[Result], run: RunHistory, raw_lines: Sequence[str]) -> dict[str, Any] | None:
    """Writes that last-write-wins lost to a concurrent write, as it does by
    design: listed apart, never as anomalies."""
    for r in results:
        listed = r.details.get("lost_concurrent")
        if not listed:
            continue
        total = r.counts.get("lost_concurrent", len(listed))
        items = [anomaly_view(f"by-design-{n}", Anomaly(type="lost-concurrent", ops=tuple(x.get("ops") or ()),
                                                        explanation=str(x.get("explanation", ""))), run, raw_lines)
                 for n, x in enumerate(listed)]
        return {"title": f"{total:,} writes lost to a concurrent write, as last-write-wins does by design "
                         f"(not anomalies; {len(items)} listed)", "entries": items}
    return None


def _node_info(run: RunRecord) -> dict[str, Any] | None:
    """What the system said of each node after start-up (nodes.json), as a
    table: one row per node, one column per fact."""
    try:
        data = json.loads((run.dir / "nodes.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not data:
        return None
    columns: list[str] = []
    for info in data.values():
        for k in info if isinstance(info, dict) else ():
            if k not in columns:
                columns.append(k)
    rows = [[node, *(str(info.get(c, "")) if isinstance(info, dict) else "" for c in columns)]
            for node, info in data.items()]
    return {"headers": ["node", *columns], "rows": rows}


def _latency(results: Sequence[Result]) -> dict[str, Any] | None:
    stats = next((r for r in results if r.checker == "stats"), None)
    table = stats.details.get("latency_ms") if stats is not None else None
    if not table:
        return None
    headers = ["operation", "count", "p50", "p95", "p99", "max"]
    rows = [[f, f"{q.get('count', 0):,}", *(f"{q.get(k, 0):.1f}" for k in ("p50", "p95", "p99", "max"))]
            for f, q in table.items()]
    return {"headers": headers, "rows": rows}


def _secs(ns: int | None) -> str:
    return "never healed" if ns is None else f"{ns / 1e9:.2f} s"


def _fault_rows(run: RunRecord) -> list[dict[str, Any]]:
    rows = []
    for f in run.faults:
        cells = []
        for node in run.nodes:
            effect = f.effect(node)
            css = {"partition": "cut", "kill": "killed", "pause": "paused", "clock": "skewed",
                   "packet": "packet"}.get(f.kind, "") if effect else ""
            cells.append({"css": css, "text": effect or ""})
        rows.append({"label": f.label, "start": _secs(f.start), "end": _secs(f.end), "cells": cells})
    return rows


def _counterexample(results: Sequence[Result], history: Sequence[Op]) -> str | None:
    lin = next((r for r in results if r.valid is False and any(a.type == "nonlinearizable" for a in r.anomalies)),
               None)
    if lin is None:
        return None
    from harness.report.linearizability import render_counterexample

    return render_counterexample(lin, history, title=f"{lin.checker}: counterexample", max_ops=400)


# ---------------------------------------------------------------- the timeline


def _timeline(run: RunRecord) -> dict[str, Any]:
    """The timeline's data as columns (timeline.js reads them), and the
    choices of its filters."""
    history = run.history
    concurrency = run.test.get("concurrency")
    workers = int(concurrency) if isinstance(concurrency, int) and concurrency > 0 else None
    timed = bool(history) and any(op.time != op.index for op in history) and history[-1].time > 0
    keys: dict[Any, int] = {}
    nodes: dict[str, int] = {n: i for i, n in enumerate(run.nodes)}
    fs: dict[str, int] = {}
    processes: set[Any] = set()
    cols: dict[str, list[Any]] = {c: [] for c in ("lane", "p", "s", "e", "o", "f", "k", "n", "i", "c", "v")}
    lanes: dict[Any, int] = {}
    pending: dict[Any, Op] = {}
    outcome = {"ok": 0, "info": 1, "fail": 2}

    def lane_of(process: Any) -> Any:
        if process == "nemesis":
            return "nemesis"
        if workers is not None and isinstance(process, int) and process < workers * 1000:
            return process % workers  # a crashed process's worker continues as process + concurrency
        return process

    def add(inv: Op, comp: Op | None) -> None:
        lane = lane_of(inv.process)
        cols["lane"].append(lane)
        cols["p"].append(inv.process if isinstance(inv.process, int) else -1)
        cols["s"].append(round(inv.time / 1e6, 3) if timed else inv.index)
        cols["e"].append(-1 if comp is None else (round(comp.time / 1e6, 3) if timed else comp.index))
        cols["o"].append(3 if comp is None else outcome.get(comp.type, 1))
        cols["f"].append(fs.setdefault(str(inv.f), len(fs)))
        try:
            cols["k"].append(-1 if inv.key is None else keys.setdefault(inv.key, len(keys)))
        except TypeError:
            cols["k"].append(keys.setdefault(repr(inv.key), len(keys)))
        node = (comp.node if comp is not None and comp.node else None) or inv.node
        cols["n"].append(nodes.setdefault(node, len(nodes)) if node is not None else -1)
        cols["i"].append(inv.index)
        cols["c"].append(-1 if comp is None else comp.index)
        cols["v"].append(_op_label(inv, comp))
        if isinstance(inv.process, int):
            processes.add(inv.process)

    for op in history:
        if op.type == "invoke":
            pending[op.process] = op
            continue
        inv = pending.pop(op.process, None)
        add(inv or op, op)
    for inv in pending.values():
        add(inv, None)
    order = sorted(range(len(cols["i"])), key=lambda j: cols["i"][j])
    for c in cols:
        cols[c] = [cols[c][j] for j in order]
    lane_names = sorted({x for x in cols["lane"] if x != "nemesis"}, key=lambda x: (isinstance(x, str), x))
    for x in lane_names:
        lanes[x] = len(lanes)
    labels = [(f"worker {x}" if workers is not None and isinstance(x, int) and x < workers else f"process {x}")
              for x in lane_names]
    if "nemesis" in cols["lane"] or run.faults:
        lanes["nemesis"] = len(lanes)
        labels.append("nemesis")
    cols["lane"] = [lanes[x] for x in cols["lane"]]
    fault_data, rows = _fault_bands(run.faults, timed)
    data = {
        "timed": timed, "end": round(history[-1].time / 1e6, 3) if timed and history else len(history),
        "lastIndex": history[-1].index if history else 0, "lanes": labels,
        "keys": [_key_text(k) for k in keys], "nodes": list(nodes), "fs": list(fs),
        "ops": cols, "faults": fault_data, "faultRows": rows,
    }
    blob = json.dumps(data, separators=(",", ":"), default=str)
    # inside <script>: no "</" may end the element early
    blob = blob.replace("</", "<\\/")
    return {"timeline_json": blob, "timeline_js": _asset("timeline.js"), "keys": data["keys"],
            "nodes": list(nodes), "processes": sorted(processes), "timed": timed}


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) else repr(key)


def _op_label(inv: Op, comp: Op | None) -> str:
    if inv.process == "nemesis":
        value = comp.value if comp is not None else None
        return text.short(value, 60) if value is not None else ""
    value = comp.value if comp is not None and comp.type == "ok" and (inv.f in _READS or inv.value is None) \
        else inv.value
    label = text.short(value, 40)
    if comp is not None and comp.error:
        label += f" ({text.short(comp.error, 30)})"
    return label


def _fault_bands(faults: Sequence[FaultInterval], timed: bool) -> tuple[list[dict[str, Any]], int]:
    """Fault intervals for the timeline, each in a label row of its own where
    they overlap."""
    ends: list[int] = []  # per row: where its last band ends
    out = []
    for f in faults:
        end = f.end if f.end is not None else 2**62
        row = next((i for i, e in enumerate(ends) if e < f.start), len(ends))
        if row == len(ends):
            ends.append(end)
        else:
            ends[row] = end
        i0 = f.ops[0] if f.ops else 0
        i1 = f.ops[-1] if f.ops and f.end is not None else -1
        out.append({"kind": f.kind, "label": f.label, "row": row,
                    "s": round(f.start / 1e6, 3) if timed else i0,
                    "e": -1 if f.end is None else (round(f.end / 1e6, 3) if timed else i1),
                    "i0": i0, "i1": i1})
    return out, max(1, len(ends))
