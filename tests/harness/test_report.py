"""A run's report: the faults read back from the history, anomaly sentences
that name the node and the fault in force, `report.html` (self-contained,
every anomaly linked to its operations and `history.jsonl` lines), the text
summary, `harness report`, and `harness check` of a run directory."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from checkers.history import Op
from harness.cli import cli
from harness.history import read_jsonl
from harness.report import page, text
from harness.report.context import RunHistory, describe
from harness.report.faults import intervals
from tests.harness.run_dirs import S, make_run, stale_read_history


def nemesis(index: int, t: float, type: str, f: str, value: Any = None) -> Op:
    return Op(index=index, time=int(t * S), process="nemesis", type=type, f=f, value=value)  # type: ignore[arg-type]


def faults_of(*ops: tuple[float, str, str, Any], nodes: tuple[str, ...] = ("n1", "n2", "n3", "n4", "n5")) -> list[Any]:
    history = [nemesis(i, t, type, f, value) for i, (t, type, f, value) in enumerate(ops)]
    return intervals(history, nodes=nodes)


# ------------------------------------------------------------------ faults


def test_a_partition_into_groups_is_labelled_with_its_groups() -> None:
    grudge = {"n1": ["n3", "n4", "n5"], "n2": ["n3", "n4", "n5"], "n3": ["n1", "n2"], "n4": ["n1", "n2"],
              "n5": ["n1", "n2"]}
    (f,) = faults_of((1, "invoke", "start-partition", None), (1.1, "info", "start-partition",
                     {"shape": "halves", "grudge": grudge}), (3, "invoke", "stop-partition", None),
                     (3.2, "info", "stop-partition", {"healed": "halves"}))
    assert f.label == "partition halves: n1 n2 | n3 n4 n5"
    assert (f.start, f.end) == (1 * S, int(3.2 * S)) and f.ops == (0, 1, 2, 3)
    assert f.cut["n1"] == ("n3", "n4", "n5") and f.effect("n4") == "cut off from n1 n2"


def test_a_bridge_is_said_node_by_node_since_no_groups_exist() -> None:
    grudge = {"n2": ["n3", "n5"], "n3": ["n2", "n4"], "n4": ["n3", "n5"], "n5": ["n2", "n4"]}
    (f,) = faults_of((1, "invoke", "start-partition", None),
                     (1, "info", "start-partition", {"shape": "bridge", "grudge": grudge}))
    assert f.label.startswith("partition bridge: n2 cut from n3 n5; n3 cut from n2 n4")
    assert f.end is None, "never stopped: in force to the end"
    assert f.effect("n1") is None


def test_kills_clocks_and_plug_in_faults_become_intervals() -> None:
    found = faults_of((1, "invoke", "kill", None), (1.1, "info", "kill", {"nodes": ["n2"]}),
                      (2, "invoke", "restart", None), (2.5, "info", "restart", {"nodes": ["n2"]}),
                      (3, "invoke", "bump-clock", None), (3.1, "info", "bump-clock", {"n1": 12.5, "n3": -0.25}),
                      (4, "invoke", "reset-clock", None), (4.1, "info", "reset-clock", {"n1": 0.0}),
                      (5, "invoke", "reset-clock", None), (5.1, "info", "reset-clock", {"n1": 0.0}),
                      (6, "invoke", "start-freeze", None), (6.1, "info", "start-freeze", {"nodes": ["n4"]}),
                      (7, "invoke", "stop-freeze", None), (7.1, "info", "stop-freeze", None),
                      (8, "invoke", "wiggle", None), (8.1, "info", "wiggle", "n5"))
    assert [(f.kind, f.label) for f in found] == [
        ("kill", "kill n2"), ("clock", "clock n1 +12.5 s, n3 -0.25 s"), ("freeze", "freeze n4"),
        ("wiggle", "wiggle n5")]
    kill, clock, freeze, wiggle = found
    assert kill.end == int(2.5 * S) and clock.end == int(4.1 * S) and freeze.end == int(7.1 * S)
    assert wiggle.start == 8 * S and wiggle.end == int(8.1 * S), "an unknown f is an instant"
    assert clock.effect("n1") == "clock +12.5 s" and kill.effect("n2") == "killed"


def test_a_failed_start_says_so() -> None:
    (f,) = faults_of((1, "invoke", "pause", None), (1.1, "info", "pause", {"nodes": ["n1"], "error": "no such pid"}))
    assert f.label == "pause n1 (failed: no such pid)" and f.error == "no such pid"


# ------------------------------------------------------------------ sentences


def test_a_stale_read_names_the_node_the_fault_and_the_write_it_missed(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    record = page.load_run(run_dir)
    (anomaly,) = [a for r in page.results_of(record.results) for a in r.anomalies]
    clause, named = describe(anomaly, RunHistory(record.history, record.faults))
    assert clause.startswith("n1 answered; n1 was cut off from n2 n3 (partition halves, since 0.30 s before)")
    assert "'1.1', was written by process 1 via n2, acknowledged at 1.22 s (history.jsonl line 5)" in clause
    assert named == [4, 5]
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    assert json.loads(lines[anomaly.ops[0]])["f"] == "read", "anomaly ops are history.jsonl indexes"


def test_no_fault_in_force_says_which_healed_last() -> None:
    history = [Op(index=0, time=0, process="nemesis", type="invoke", f="kill"),
               Op(index=1, time=S, process="nemesis", type="info", f="kill", value={"nodes": ["n2"]}),
               Op(index=2, time=2 * S, process="nemesis", type="invoke", f="restart"),
               Op(index=3, time=2 * S, process="nemesis", type="info", f="restart", value={"nodes": ["n2"]}),
               Op(index=4, time=3 * S, process=0, type="invoke", f="read", key="k", node="n1"),
               Op(index=5, time=3 * S + 5, process=0, type="ok", f="read", key="k", value=["x"], node="n1")]
    from checkers.result import Anomaly

    clause, _ = describe(Anomaly(type="phantom", ops=(4, 5), explanation="."), RunHistory(history, intervals(history)))
    assert clause == "n1 answered; no fault in force (the last, kill n2, healed 1.00 s before)"


# ------------------------------------------------------------------ report.html


def test_the_report_shows_the_anomaly_linked_to_its_lines_and_is_self_contained(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    path = page.write_report(run_dir)
    html = path.read_text()
    assert 'id="verdict">INVALID<' in html
    assert "n1 was cut off from n2 n3" in html
    link = re.search(r'data-ops="([\d,]+)"', html)
    assert link and link.group(1) == "4,5,6,7", "the read, and the write it missed"
    assert "history.jsonl lines 5, 6, 7, 8" in html
    for tag in re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", html):
        assert not re.search(r"(?:src|href)=\"(?:https?:)?//", tag), tag
    data = json.loads(re.search(r'<script type="application/json" id="timeline-data">(.*?)</script>', html,
                                re.S).group(1))  # type: ignore[union-attr]
    assert data["timed"] and len(data["ops"]["i"]) == 8, "3 client ops + 3 final reads + 2 nemesis ops"
    assert data["faults"][0]["label"] == "partition halves: n1 | n2 n3"
    assert "partition halves: n1 | n2 n3" in html.split('id="fault-table"')[1]
    assert 'class="counterexample"' in html
    for heading in ("system", "settings", "promise checked", "workload", "faults", "seed", "duration"):
        assert f"<dt>{heading}</dt>" in html
    assert "n=3 r=1 resolution=lww w=1" in html


def test_many_anomalies_show_ten_then_n_more(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    anomalies = [{"type": "phantom", "ops": [6, 7], "explanation": f"phantom number {n}", "details": {}}
                 for n in range(page.LISTED + 30)]
    results["checkers"]["linearizable"]["anomalies"] = anomalies
    html = page.render(page.load_run(run_dir, results=results))
    assert f"({page.LISTED + 30:,})" in html
    assert f"<summary>{page.LISTED - page.SHOWN:,} more</summary>" in html
    assert "and 30 more in results.json" in html
    assert html.count('class="show"') == page.LISTED
    out = text.summary(page.load_run(run_dir, results=results))
    assert f"… {page.LISTED + 30 - 3:,} more in report.html" in out


def test_a_run_stopped_before_its_check_is_checked_for_its_report(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, results=False)
    result = CliRunner().invoke(cli, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    html = (run_dir / "report.html").read_text()
    assert "checked for this report: results.json was missing" in html and 'id="verdict">INVALID<' in html


def test_a_history_without_times_gets_an_event_order_axis(tmp_path: Path) -> None:
    history = stale_read_history()
    for o in history:
        o["time"] = o["index"]
    run_dir = make_run(tmp_path, history)
    html = page.write_report(run_dir).read_text()
    assert '"timed":false' in html and "(no times recorded)" in html


# ------------------------------------------------------------------ text


def test_the_text_summary_has_the_tables_and_says_how_many_more(tmp_path: Path) -> None:
    record = page.load_run(make_run(tmp_path))
    out = text.summary(record)
    for heading in ("checker", "operation", "p99 ms", "fault", "start s"):
        assert heading in out
    assert "n1 answered; n1 was cut off from n2 n3" in out
    assert "more in report.html" not in out, "all anomalies shown"


def test_harness_report_text_and_bad_directories(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    result = CliRunner().invoke(cli, ["report", str(run_dir), "--text"])
    assert result.exit_code == 0 and "linearizable/nonlinearizable" in result.output
    assert not (run_dir / "report.html").exists(), "--text writes nothing"
    bad = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert bad.exit_code == 254 and "not a run directory" in bad.output


# ------------------------------------------------------------------ harness check of a run


def sibling_run(tmp_path: Path) -> Path:
    """A dvv run whose read returns two siblings: valid for its promise
    (siblings), not a plain register."""
    ops = []
    for i, (t, p, type, f, value, node) in enumerate([
            (0.1, 0, "invoke", "write", "0.1", "n1"), (0.2, 1, "invoke", "write", "1.1", "n2"),
            (0.3, 0, "ok", "write", "0.1", "n1"), (0.4, 1, "ok", "write", "1.1", "n2"),
            (0.5, 0, "invoke", "read", None, "n1"), (0.6, 0, "ok", "read", ["0.1", "1.1"], "n1")]):
        ops.append({"index": i, "time": int(t * S), "process": p, "type": type, "f": f, "key": "k",
                    "value": value, "node": node})
    for n in range(2):
        ops.append({"index": len(ops), "time": int((1 + n) * S), "process": 2000, "type": "invoke", "f": "read",
                    "key": "k", "value": None, "node": "n1", "final": True})
        ops.append({"index": len(ops), "time": int((1.1 + n) * S), "process": 2000, "type": "ok", "f": "read",
                    "key": "k", "value": ["0.1", "1.1"], "node": "n1", "final": True})
    claims = [{"name": "siblings", "params": {"n": 3, "w": 2, "r": 2, "quorum": "sloppy", "read_repair": "async"},
               "why": "dvv", "asked": False}]
    return make_run(tmp_path, ops, nemesis=[], promise={"claims": claims}, results=False)


def test_check_of_a_history_jsonl_beside_its_test_json_uses_the_runs_promise(tmp_path: Path) -> None:
    run_dir = sibling_run(tmp_path)
    result = CliRunner().invoke(cli, ["check", str(run_dir / "history.jsonl")])
    assert result.exit_code == 0, result.output
    assert "checked: siblings (promised by kvnode" in result.output


def test_check_of_a_run_honours_its_flags_and_writes_the_report(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = make_run(tmp_path)
    from checkers import linearizable

    seen: list[dict[str, Any]] = []
    real = linearizable.check

    def spy(history: Any, model: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(history, model, **kwargs)

    monkeypatch.setattr(linearizable, "check", spy)
    out = tmp_path / "out.html"
    result = CliRunner().invoke(cli, ["check", str(run_dir), "--time-limit", "7", "--memory-limit", "64",
                                      "--html", str(out)])
    assert result.exit_code == 1, result.output
    assert seen == [{"time_limit": 7.0, "memory_limit": 64 * 1024 * 1024}]
    assert 'id="verdict">INVALID<' in out.read_text()
    assert "n1 answered; n1 was cut off from n2 n3" in result.output
    refused = CliRunner().invoke(cli, ["check", str(run_dir), "--initial", "3"])
    assert refused.exit_code == 254 and "--model" in refused.output


def test_anomaly_indexes_are_history_jsonl_lines_in_the_stored_results(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    history = read_jsonl(run_dir / "history.jsonl")
    results = json.loads((run_dir / "results.json").read_text())
    (a,) = results["checkers"]["linearizable"]["anomalies"]
    read = history[a["details"]["op"]]
    assert read.f == "read" and read.type == "invoke" and read.value is None and history[a["ops"][-1]].value == ["0.1"]


def test_a_skewed_node_is_named_with_its_offset() -> None:
    history = [Op(index=0, time=0, process="nemesis", type="invoke", f="bump-clock"),
               Op(index=1, time=S, process="nemesis", type="info", f="bump-clock", value={"n1": -14.4, "n2": 3.0}),
               Op(index=2, time=2 * S, process=0, type="invoke", f="write", key="k", value="a", node="n1"),
               Op(index=3, time=2 * S + 5, process=0, type="ok", f="write", key="k", value="a", node="n1")]
    from checkers.result import Anomaly

    clause, _ = describe(Anomaly(type="lost-causal", ops=(2, 3), explanation="."),
                         RunHistory(history, intervals(history)))
    assert clause == "n1 answered; n1's clock was off by -14.4 s (since 2.00 s before; clock n1 -14.4 s, n2 +3 s)"


def test_what_the_system_says_of_each_node_is_a_table(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    (run_dir / "nodes.json").write_text(json.dumps({"n1": {"ring share": "33.6%"}, "n2": {"ring share": "33.2%"}}))
    html = page.write_report(run_dir).read_text()
    table = html.split('id="node-table"')[1].split("</table>")[0]
    assert "<th>ring share</th>" in table and "<td>n2</td><td>33.2%</td>" in table
