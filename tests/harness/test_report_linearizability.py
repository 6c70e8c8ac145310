"""harness.report.linearizability: the HTML counterexample page and the text
summary, rendered from hand-made results that follow the checker's contract."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from checkers.history import Op
from checkers.result import Anomaly, Result
from harness.report.linearizability import render_counterexample, render_text

T0 = 5_000_000_000  # the history's clock when the first op was invoked
MS = 1_000_000
EVIL = "<script>alert(1)</script>"


def _op(index: int, process: int | str, f: str, value: Any, result: Any, start_ms: float,
        end_ms: float | None, outcome: str = "ok") -> dict[str, Any]:
    return {
        "index": index, "process": process, "f": f, "value": value, "result": result,
        "outcome": outcome, "start": T0 + int(start_ms * MS),
        "end": None if end_ms is None else T0 + int(end_ms * MS),
    }


def invalid_result() -> Result:
    """A cas-register where process 2 reads 5, which nobody wrote."""
    ops = [
        _op(0, 0, "write", 1, None, 0, 10),
        _op(2, 1, "read", None, 1, 12, 20),
        _op(4, 2, "cas", [1, 4], None, 15, 30),
        _op(6, 3, "write", 3, None, 18, None, "info"),
        _op(8, 0, "read", None, 4, 32, 40),
        _op(10, 1, "write", 2, None, 35, 45),
        _op(12, 2, "read", None, 5, 47, 55),
        _op(14, 0, "write", EVIL, None, 50, 60),
    ]
    explanation = "read of 5 by process 2 at 0.047 s: the register can only hold 2 or 3 here"
    anomaly = Anomaly(
        type="nonlinearizable", ops=(12,), explanation=explanation,
        details={"key": None, "op": 12, "prefix": [0, 2, 4, 8, 10], "states": ["2", "3"],
                 "concurrent": [6, 14], "operations": ops},
    )
    return Result(checker="linearizable", valid=False, anomalies=(anomaly,), counts={"operations": 8})


def _svgs(page: str) -> list[ET.Element]:
    """Every inline <svg> of the page, parsed as XML (so also well-formed)."""
    return [ET.fromstring(m) for m in re.findall(r"<svg\b.*?</svg>", page, flags=re.S)]


def test_invalid_page_draws_one_lane_per_process_and_the_failing_op() -> None:
    page = render_counterexample(invalid_result())
    assert page.startswith("<!DOCTYPE html>")
    assert '<svg class="timeline"' in page
    timeline = [s for s in _svgs(page) if s.get("class") == "timeline"]
    assert len(timeline) == 1
    (column,) = [s for s in _svgs(page) if s.get("class") == "lanes"]
    lanes = [t.text for t in column.iter("text") if t.get("class") == "lane-label"]
    assert lanes == ["process 0", "process 1", "process 2", "process 3"]
    assert "NOT linearizable" in page
    assert "the register can only hold 2 or 3 here" in page
    assert "read → 5" in page and "cas 1→4 ✓" in page and "write 3" in page
    # The failing bar is red, the concurrent ones outlined, the info one open.
    classes = [r.get("class", "").split() for r in timeline[0].iter("rect") if r.get("class")]
    assert sum("fail" in c for c in classes) == 1
    assert sum("conc" in c for c in classes) == 2
    assert sum("open" in c for c in classes) == 1
    # Five linearization points, numbered 1..5, joined by one line.
    points = [t.text for t in timeline[0].iter("text") if t.text in {"1", "2", "3", "4", "5"}]
    assert points == ["1", "2", "3", "4", "5"]
    assert page.count("<polyline") == 1
    # Hover text gives times relative to the first op, in seconds.
    assert "invoked 0.047000 s · completed 0.055000 s" in page


def test_page_is_self_contained() -> None:
    page = render_counterexample(invalid_result())
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "src=" not in page and "@import" not in page
    assert "url(" not in page.replace("url(#hatch-", "")


def test_user_text_is_escaped() -> None:
    base = invalid_result()
    anomaly = base.anomalies[0]
    details = dict(anomaly.details, key=EVIL, states=[EVIL])
    details["operations"] = [dict(o, process=EVIL) if o["index"] == 14 else o for o in details["operations"]]
    evil = Result(
        checker=EVIL, valid=False, counts={},
        anomalies=(Anomaly(type="nonlinearizable", ops=(12,), explanation=EVIL, details=details),),
    )
    page = render_counterexample(evil, title=EVIL)
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # the page's own
    _svgs(page)  # still well-formed


def test_valid_and_unknown_results_render() -> None:
    history = [
        Op(index=0, time=T0, process=0, type="invoke", f="write", value=1),
        Op(index=1, time=T0 + MS, process=0, type="ok", f="write", value=1),
        Op(index=2, time=T0 + 2 * MS, process=1, type="invoke", f="read"),
        Op(index=3, time=T0 + 3 * MS, process=1, type="ok", f="read", value=1),
    ]
    valid = render_counterexample(Result(checker="linearizable", valid=True, counts={"steps": 12}), history)
    assert "linearizable</span>" in valid and "NOT" not in valid
    assert "steps: 12" in valid and "operations in the history: 2" in valid and "processes: 2" in valid
    assert "<svg" not in valid

    unknown = Result(checker="linearizable", valid="unknown", reason="time limit of 5 s reached")
    page = render_counterexample(unknown)
    assert "unknown" in page and "time limit of 5 s reached" in page
    assert "unknown" in render_text(unknown) and "time limit of 5 s reached" in render_text(unknown)


def test_operations_are_rebuilt_from_the_history_when_missing() -> None:
    history = [
        Op(index=0, time=T0, process=0, type="invoke", f="write", key="x", value=1),
        Op(index=1, time=T0 + MS, process=1, type="invoke", f="read", key="x"),
        Op(index=2, time=T0 + 2 * MS, process=0, type="ok", f="write", key="x", value=1),
        Op(index=3, time=T0 + 3 * MS, process=1, type="ok", f="read", key="x", value=7),
        Op(index=4, time=T0 + 4 * MS, process=2, type="invoke", f="write", key="y", value=9),
    ]
    anomaly = Anomaly(type="nonlinearizable", ops=(1,), explanation="read of 7 by process 1",
                      details={"key": "x", "op": 1, "prefix": [0], "states": ["1"], "concurrent": [0]})
    page = render_counterexample(Result(checker="linearizable", valid=False, anomalies=(anomaly,)), history)
    assert "read → 7" in page and "write 1" in page
    assert "process 2" not in page  # another key's operation


def test_large_partitions_are_windowed_around_the_failing_op() -> None:
    n = 3000
    ops = [_op(i, i % 10, "write", i, None, i, i + 5) for i in range(n)]
    fail = 2000
    ops[fail] = _op(fail, fail % 10, "read", None, -1, fail, fail + 5)
    anomaly = Anomaly(
        type="nonlinearizable", ops=(fail,), explanation="read of -1",
        details={"key": None, "op": fail, "prefix": list(range(fail)), "states": [str(fail - 1)],
                 "concurrent": list(range(fail - 5, fail)) + list(range(fail + 1, fail + 6)),
                 "operations": ops},
    )
    page = render_counterexample(Result(checker="linearizable", valid=False, anomalies=(anomaly,)), max_ops=1000)
    assert "Showing 1,000 of 3,000 operations" in page
    assert page.count('<g class="op">') == 1000
    assert "read → -1" in page
    assert ">2000</text>" in page and ">1501</text>" in page and ">1500</text>" not in page


def test_render_text_summarises() -> None:
    text = render_text(invalid_result())
    assert text.startswith("linearizable: INVALID: not linearizable\n")
    assert "read of 5 by process 2 at 0.047 s: the register can only hold 2 or 3 here" in text
    assert "longest linearizable prefix: 5 operations" in text
    assert "states before it: 2, 3" in text
    assert "op 12 (process 2, read → 5)" in text
    assert render_text(Result(checker="linearizable", valid=True)) == "linearizable: valid\n"
