"""harness.report.linearizability: the HTML counterexample page and the text
summary, rendered from hand-made results that follow the checker's contract."""

from __future__ import annotations

import itertools
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from checkers import linearizable
from checkers.history import Op, complete, pair
from checkers.result import Anomaly, Result
from checkers.unique_register import check_unique_register
from harness.history import read_history
from harness.report.linearizability import (
    _BAR,
    _CHAR,
    _LANE,
    _TOP,
    render_counterexample,
    render_text,
)

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


def realistic_history(*, n_ops: int = 120, processes: int = 5, seed: int = 3, times: str = "ns") -> list[Op]:
    """A cas-register run as its clients saw it: operations overlap, each
    takes effect somewhere between its invocation and its completion, some
    cas fail, some writes crash (`info`, and the worker goes on as process +
    `processes`); at the end a read returns 99, which nobody wrote. `times`:
    "ns" (0.1-0.3 ms between events), "index" (time = index, as the
    Porcupine and EDN readers give) or "equal" (every op at the same time)."""
    rng = random.Random(seed)
    state = 0
    current = list(range(processes))  # worker -> its process id
    pending: dict[int, list[Any]] = {}  # worker -> [f, value, completion (type, value) once applied]
    log: list[tuple[int, int, str, str, Any]] = []  # (time, process, type, f, value)
    t = 0
    invoked = 0
    while invoked < n_ops or pending:
        w = rng.randrange(processes)
        t += rng.randint(1, 3) * 100_000
        if w not in pending:
            if invoked < n_ops:
                f = rng.choice(["read", "write", "write", "cas"])
                value = None if f == "read" else rng.randint(1, 5) if f == "write" else [rng.randint(0, 5), rng.randint(1, 5)]
                pending[w] = [f, value, None]
                log.append((t, current[w], "invoke", f, value))
                invoked += 1
        elif pending[w][2] is None:  # the operation takes effect now
            f, value, _ = pending[w]
            if f == "read":
                pending[w][2] = ("ok", state)
            elif f == "write":
                state = value
                pending[w][2] = ("ok", value)
            elif state == value[0]:
                state = value[1]
                pending[w][2] = ("ok", value)
            else:
                pending[w][2] = ("fail", value)
        else:
            f, value, (type_, out) = pending.pop(w)
            p = current[w]
            if f == "write" and rng.random() < 0.08:
                type_, current[w] = "info", p + processes
            log.append((t, p, type_, f, out))
    log.append((t + 100_000, current[0], "invoke", "read", None))
    log.append((t + 300_000, current[0], "ok", "read", 99))
    return [
        Op(index=i, time={"ns": T0 + tm, "index": i, "equal": T0}[times], process=p, type=ty, f=f, value=v)  # type: ignore[arg-type]
        for i, (tm, p, ty, f, v) in enumerate(log)
    ]


def _svgs(page: str) -> list[ET.Element]:
    """Every inline <svg> of the page, parsed as XML (so also well-formed)."""
    return [ET.fromstring(m) for m in re.findall(r"<svg\b.*?</svg>", page, flags=re.S)]


def _timeline(page: str) -> ET.Element:
    (timeline,) = [s for s in _svgs(page) if s.get("class") == "timeline"]
    return timeline


def _bars(page: str) -> dict[int, tuple[ET.Element, ET.Element | None, str]]:
    """op index -> (its bar's rect, its label's text element, its tooltip)."""
    out = {}
    for g in _timeline(page).iter("g"):
        if g.get("class") != "op":
            continue
        rect = next(r for r in g.iter("rect") if r.get("class"))
        text = next(g.iter("text"), None)
        title = g.findtext("title") or ""
        out[int(title.split()[1])] = (rect, text, title)
    return out


def _lane_labels(page: str) -> list[str]:
    (column,) = [s for s in _svgs(page) if s.get("class") == "lanes"]
    return [t.text or "" for t in column.iter("text") if t.get("class") == "lane-label"]


def _tick_labels(page: str) -> list[str]:
    return [t.text or "" for g in _timeline(page).iter("g") if g.get("class") == "tick" for t in g.iter("text")]


def _visible(page: str) -> str:
    """The page's text without its tooltips."""
    return re.sub(r"<title>.*?</title>", "", page, flags=re.S)


def test_invalid_page_draws_one_lane_per_process_and_the_failing_op() -> None:
    page = render_counterexample(invalid_result())
    assert page.startswith("<!DOCTYPE html>")
    assert '<svg class="timeline"' in page
    timeline = [s for s in _svgs(page) if s.get("class") == "timeline"]
    assert len(timeline) == 1
    (column,) = [s for s in _svgs(page) if s.get("class") == "lanes"]
    lanes = [t.text for t in column.iter("text") if t.get("class") == "lane-label"]
    # The failing op's process on top, then those of the ops concurrent with
    # it or linearized just before it, nearest first; the crashed one last.
    assert lanes == ["process 2", "process 0", "process 1", "process 3"]
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
    assert len(_bars(page)) == 1000
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


# --- labels are readable without hovering -------------------------------------------


def test_every_bar_label_fits_in_its_bar() -> None:
    history = realistic_history()
    result = linearizable.check(history, "cas-register", initial=0)
    assert result.valid is False
    page = render_counterexample(result, history)
    bars = _bars(page)
    assert len(bars) >= 80
    for index, (rect, text, title) in bars.items():
        full = title.splitlines()[0].split(" · ", 2)[2]  # "op 12 · process 2 · read → 5"
        assert text is not None and text.text == full, index
        x, w, tx = float(rect.get("x", 0)), float(rect.get("width", 0)), float(text.get("x", 0))
        assert x <= tx and tx + len(full) * _CHAR <= x + w, (index, full, w)


def test_a_label_too_long_for_a_bar_is_cut_there_and_shown_in_full_on_the_page() -> None:
    long = "v" * 120
    base = invalid_result()
    details = dict(base.anomalies[0].details)
    details["operations"] = [dict(o, value=long) if o["index"] == 14 else o for o in details["operations"]]
    result = Result(checker="linearizable", valid=False,
                    anomalies=(Anomaly(type="nonlinearizable", ops=(12,), explanation="x", details=details),))
    page = render_counterexample(result)
    rect, text, _ = _bars(page)[14]
    assert text is not None and text.text is not None and text.text.endswith("…")
    assert float(text.get("x", 0)) + len(text.text) * _CHAR <= float(rect.get("x", 0)) + float(rect.get("width", 0))
    assert f"write {long}" in _visible(page)


# --- ticks without times ------------------------------------------------------------


@pytest.mark.parametrize(("times", "with_history"), [("index", True), ("index", False), ("equal", True),
                                                     ("equal", False)])
def test_ticks_name_operations_when_the_history_has_no_times(times: str, with_history: bool) -> None:
    history = realistic_history(times=times)
    result = linearizable.check(history, "cas-register", initial=0)
    assert result.valid is False
    page = render_counterexample(result, history if with_history else None)
    ticks = _tick_labels(page)
    assert len(ticks) >= 5
    assert all(re.fullmatch(r"op \d+", t) for t in ticks), ticks
    assert len(set(ticks)) == len(ticks)
    assert "0.000000 s" not in page  # nor in the tooltips


def test_ticks_of_an_edn_history_without_times() -> None:
    data = Path(__file__).parent.parent / "data" / "histories"
    for name in ("register-invalid.edn", "mutex.edn"):
        history = read_history(data / name)
        ops = pair(history)
        anomaly = Anomaly(type="nonlinearizable", ops=(ops[-1].invoke.index,), explanation="x", details={
            "key": None, "op": ops[-1].invoke.index, "prefix": [], "states": [], "concurrent": []})
        page = render_counterexample(Result(checker="linearizable", valid=False, anomalies=(anomaly,)), history)
        ticks = _tick_labels(page)
        assert ticks and all(re.fullmatch(r"op \d+", t) for t in ticks), (name, ticks)


def test_tick_seconds_have_the_digits_to_tell_neighbours_apart() -> None:
    history = realistic_history()  # 0.1-0.3 ms between events
    page = render_counterexample(linearizable.check(history, "cas-register", initial=0), history)
    ticks = _tick_labels(page)
    assert len(ticks) >= 5 and all(t.endswith(" s") for t in ticks)
    assert all(a != b for a, b in itertools.pairwise(ticks)), ticks


# --- the view opens on the failing operation ---------------------------------------


def test_the_failing_operation_is_in_the_top_lanes_under_many_crashed_processes() -> None:
    # Processes 0..39 each invoke a write and crash; much later processes
    # 40..44 write in turn, and process 43 reads a value nobody wrote.
    events: list[tuple[int, str, str, Any]] = [(p, "invoke", "write", 1000 + p) for p in range(40)]
    for k in range(200):
        events += [(40 + k % 5, "invoke", "write", k), (40 + k % 5, "ok", "write", k)]
    events += [(43, "invoke", "read", None), (43, "ok", "read", -7)]
    history = [Op(index=i, time=T0 + i * MS, process=p, type=ty, f=f, value=v)  # type: ignore[arg-type]
               for i, (p, ty, f, v) in enumerate(events)]
    result = linearizable.check(history, "register", initial=0)
    assert result.valid is False and result.anomalies[0].details["op"] == 440
    page = render_counterexample(result, history)
    lanes = _lane_labels(page)
    assert len(lanes) == 45
    assert lanes[0] == "process 43"
    assert set(lanes[:5]) == {f"process {p}" for p in range(40, 45)}
    rect = _bars(page)[440][0]
    assert "fail" in rect.get("class", "")
    lane = (float(rect.get("y", 0)) + _BAR / 2 - _TOP) / _LANE - 0.5
    assert lane < 1
    # and it opens scrolled to it: the script reads where the failing op is
    assert float(_timeline(page).get("data-fail-x", 0)) == pytest.approx(float(rect.get("x", 0)), abs=0.1)


# --- what the anomaly names is drawn -------------------------------------------------


def test_an_operation_the_anomaly_names_far_outside_the_window_is_drawn() -> None:
    # write 1 completes at the start; 2,999 writes later a read returns the
    # initial value: the explanation names op 0, 5,998 history lines earlier.
    events: list[tuple[int, str, str, Any]] = [(0, "invoke", "write", 1), (0, "ok", "write", 1)]
    for k in range(2, 3000):
        events += [(1 + k % 4, "invoke", "write", k), (1 + k % 4, "ok", "write", k)]
    events += [(9, "invoke", "read", None), (9, "ok", "read", 0)]
    history = [Op(index=i, time=T0 + i * MS, process=p, type=ty, f=f, value=v)  # type: ignore[arg-type]
               for i, (p, ty, f, v) in enumerate(events)]
    result = check_unique_register(complete(pair(history)), 0)
    assert result.valid is False
    (anomaly,) = result.anomalies
    assert 0 in anomaly.ops and "op 0 " in anomaly.explanation
    page = render_counterexample(result, history, max_ops=200)
    bars = _bars(page)
    assert 0 in bars and bars[0][1] is not None and bars[0][1].text == "write 1"
    assert "fail" in bars[anomaly.details["op"]][0].get("class", "")
    assert len(bars) <= 202
    assert "named" in bars[0][0].get("class", "").split()  # outlined as named
    assert "op 0, process 0: write 1" in _visible(page)  # said beside the picture too
    assert "failing operation (0.000 s" not in page  # the window's span is the window's own
    gaps = [g for g in _timeline(page).iter("g") if g.get("class") == "gap"]
    assert [g.findtext("text") for g in gaps] == ["2,799 ops"]  # ops 1..2799 left out


def test_the_details_operations_are_drawn_even_outside_the_window() -> None:
    n, fail = 3000, 2900
    ops = [_op(i, i % 10, "write", i, None, i, i + 5) for i in range(n)]
    ops[fail] = _op(fail, fail % 10, "read", None, -1, fail, fail + 5)
    ops[7] = _op(7, 11, "write", 7, None, 7, None, "info")  # crashed long before: concurrent
    anomaly = Anomaly(
        type="nonlinearizable", ops=(fail, fail + 1, 12), explanation="read of -1 (op 20 wrote it?)",
        details={"key": None, "op": fail, "prefix": list(range(50)), "states": ["49"],
                 "concurrent": [7, fail - 1], "operations": ops},
    )
    page = render_counterexample(Result(checker="linearizable", valid=False, anomalies=(anomaly,)), max_ops=100)
    bars = _bars(page)
    # anomaly.ops (12; fail + 1 is the completion, not an op), the explanation's
    # op 20, the last of the prefix (49), the concurrent ones (7, fail - 1)
    assert {fail, 12, 20, 49, 7, fail - 1} <= set(bars)
    assert ">50</text>" in page  # 49 is the 50th in the linearization
    assert "open" in bars[7][0].get("class", "")


# --- large histories, embedding ------------------------------------------------------


def test_a_100000_operation_history_is_windowed() -> None:
    n = 100_000
    ops = [_op(i, i % 10, "write", i, None, i * 0.5, i * 0.5 + 3) for i in range(n)]
    fail = 90_000
    ops[fail] = _op(fail, fail % 10, "read", None, -1, fail * 0.5, fail * 0.5 + 3)
    anomaly = Anomaly(
        type="nonlinearizable", ops=(fail, 3), explanation="read of -1",
        details={"key": None, "op": fail, "prefix": list(range(fail)), "states": [str(fail - 1)],
                 "concurrent": list(range(fail - 5, fail)) + list(range(fail + 1, fail + 6)), "operations": ops},
    )
    page = render_counterexample(Result(checker="linearizable", valid=False, anomalies=(anomaly,)))
    bars = _bars(page)
    assert 1000 <= len(bars) <= 1010 and {fail, 3} <= set(bars)
    assert "Showing 1,00" in page and "of 100,000 operations" in page


def test_page_does_not_need_to_be_top_level() -> None:
    page = render_counterexample(invalid_result())
    script = page[page.index("<script>"):]
    assert "top." not in script and "parent." not in script and "location" not in script
    assert page.rstrip().endswith("</html>")
