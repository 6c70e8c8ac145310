"""harness.report.plots: the report's three plots as inline SVG, from
hand-made and generated histories and fault intervals."""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from checkers.history import Op
from harness.report.plots import OUTCOME_EDGE, OUTCOME_FILL, Plot, render_plots

S = 1_000_000_000
MS = 1_000_000
SLUGS = ["latency", "latency-quantiles", "throughput"]
SVG = "{http://www.w3.org/2000/svg}"


@dataclass(frozen=True, kw_only=True)
class Fault:
    kind: str
    label: str
    start: int
    end: int | None


def history(spec: list[tuple[int, str, str, float, float | None]]) -> list[Op]:
    """Ops from (process, f, outcome, invoke s, completion s or None)."""
    events: list[tuple[float, int, int, str, str]] = []  # (time, order made, ...)
    for process, f, outcome, start, end in spec:
        events.append((start, len(events), process, "invoke", f))
        if end is not None:
            events.append((end, len(events), process, outcome, f))
    events.sort()
    return [Op(index=i, time=int(t * S), process=p, type=ty, f=f)  # type: ignore[arg-type]
            for i, (t, _, p, ty, f) in enumerate(events)]


def synthetic(n: int, seed: int = 7, processes: int = 8) -> list[Op]:
    """n operations by `processes` sequential clients: 90% ok, some fail and
    info (info ones at a 1 s timeout, a few never completed)."""
    rng = random.Random(seed)
    spec: list[tuple[int, str, str, float, float | None]] = []
    clock = [0.0] * processes
    ids = list(range(processes))
    for k in range(n):
        p = k % processes
        start = clock[p] + rng.uniform(0, 0.002)
        r = rng.random()
        outcome = "ok" if r < 0.9 else "fail" if r < 0.96 else "info"
        latency = 1.0 if outcome == "info" else rng.lognormvariate(-6, 0.8)
        end = None if outcome == "info" and rng.random() < 0.1 else start + latency
        spec.append((ids[p], rng.choice(["read", "write"]), outcome, start, end))
        clock[p] = start + latency
        if outcome == "info":
            ids[p] += processes
    return history(spec)


SMALL = history([
    (0, "write", "ok", 0.10, 0.12),
    (1, "read", "ok", 0.15, 0.16),
    (2, "read", "fail", 0.50, 0.52),
    (0, "write", "info", 0.60, 1.60),
    (1, "read", "ok", 1.00, 1.30),
    (3, "write", "info", 2.00, None),
    (1, "write", "ok", 2.20, 2.21),
    (2, "read", "ok", 3.00, 3.40),
])
FAULTS = [
    Fault(kind="partition", label="partition n1,n2 | n3,n4,n5", start=int(0.5 * S), end=int(2.5 * S)),
    Fault(kind="kill", label="kill n3", start=int(1.0 * S), end=int(1.2 * S)),
    Fault(kind="clock", label="clock n2 +250ms", start=int(2.9 * S), end=None),
]


def parse(plot: Plot) -> ET.Element:
    """The plot's SVG as XML: well-formed, inline, sized by its viewBox."""
    assert plot.svg.startswith("<svg"), plot.svg[:80]
    assert "<?xml" not in plot.svg and "DOCTYPE" not in plot.svg
    root = ET.fromstring(plot.svg)
    assert root.tag == SVG + "svg"
    assert root.get("viewBox") and root.get("width") == "100%" and root.get("height") is None
    return root


def texts(root: ET.Element) -> str:
    """All text of the SVG (text elements and tooltips), joined."""
    return "\n".join("".join(e.itertext()) for e in root.iter() if e.tag in (SVG + "text", SVG + "title"))


def test_three_plots_with_fault_labels_axis_titles_and_legend() -> None:
    plots = render_plots(SMALL, FAULTS)
    assert [p.slug for p in plots] == SLUGS
    assert [p.title for p in plots] == ["Latency of every operation", "Latency quantiles", "Throughput"]
    for plot in plots:
        root = parse(plot)
        words = texts(root)
        for fault in FAULTS:
            assert fault.label in words, (plot.slug, fault.label)
        assert "faults" in words
        assert "time since the test started (s)" in words
        for kind in ("partition", "kill", "clock"):  # legend entries of the faults' kinds
            assert re.search(rf"^\s*{kind}\s*$", words, flags=re.M), (plot.slug, kind)
        assert "clock: clock n2 +250ms (2.900 s to the end)" in words  # a fault's tooltip
        assert plot.svg.count("<image") == 0  # a few points stay vector
    latency, quantiles, throughput = (texts(parse(p)) for p in plots)
    assert "latency (ms)" in latency and "latency (ms)" in quantiles
    assert "throughput (operations/s)" in throughput
    assert "info: drawn at its timeout" in latency
    assert "read: filled" in latency and "write: hollow" in latency  # two fs: told apart by fill
    for q in ("p50", "p95", "p99", "max"):
        assert q in quantiles
    assert "ok operations only" in (plots[1].note or "")
    assert "never completed" in (plots[0].note or "") and "never completed" in (plots[2].note or "")


def test_outcome_colours_appear() -> None:
    latency, _, throughput = render_plots(SMALL, FAULTS)
    for outcome in ("ok", "fail", "info"):
        assert OUTCOME_FILL[outcome].lower() in latency.svg.lower(), outcome
        assert OUTCOME_EDGE[outcome].lower() in latency.svg.lower(), outcome
        assert OUTCOME_EDGE[outcome].lower() in throughput.svg.lower(), outcome


def test_ids_are_unique_across_the_plots_of_a_page() -> None:
    ids: list[str] = []
    for plot in render_plots(SMALL, FAULTS):
        root = parse(plot)
        own = [e.get("id") or "" for e in root.iter() if e.get("id")]
        assert all(i.startswith(plot.slug + "-") for i in own)
        refs = re.findall(r'href="#([^"]+)"|url\(#([^)]+)\)', plot.svg)
        assert {a or b for a, b in refs} <= set(own)  # every reference resolves inside the plot
        assert f"svg.plot-{plot.slug} *{{" in plot.svg  # matplotlib's style rule kept to the plot
        ids += own
    assert len(ids) == len(set(ids))


def test_a_large_history_is_rasterized_and_the_svg_stays_small() -> None:
    plots = render_plots(synthetic(20_000), FAULTS)
    latency = plots[0]
    assert "rasterized" in (latency.note or "") and "20,000" in (latency.note or "")
    assert latency.svg.count("<image") >= 1
    parse(latency)
    for plot in plots:
        assert len(plot.svg.encode()) < 2_000_000, (plot.slug, len(plot.svg))


def test_an_empty_history_and_one_without_client_ops_say_so() -> None:
    nemesis_only = [
        Op(index=0, time=0, process="nemesis", type="info", f="start-partition"),
        Op(index=1, time=5 * S, process="nemesis", type="info", f="start-partition"),
    ]
    for h in ([], nemesis_only):
        plots = render_plots(h, FAULTS)
        assert [p.slug for p in plots] == SLUGS
        for plot in plots:
            assert "no client operations" in texts(parse(plot))
            assert plot.note == "No client operations."


def test_times_never_recorded_say_so() -> None:
    zeros = [Op(index=op.index, time=0, process=op.process, type=op.type, f=op.f) for op in SMALL]
    indexes = [Op(index=op.index, time=op.index, process=op.process, type=op.type, f=op.f)
               for op in SMALL]
    for h in (zeros, indexes):
        for plot in render_plots(h, FAULTS):
            assert "no times recorded" in texts(parse(plot))
            assert (plot.note or "").startswith("No times recorded")


def test_a_history_that_cannot_be_paired_says_why() -> None:
    bad = [Op(index=0, time=0, process=0, type="ok", f="read")]
    for plot in render_plots(bad, ()):
        assert "cannot be paired" in texts(parse(plot))


def test_no_ok_operations_and_no_faults() -> None:
    h = history([(0, "read", "fail", 0.1, 0.2), (1, "write", "info", 0.3, None)])
    latency, quantiles, throughput = render_plots(h, ())
    assert "no ok operations" in texts(parse(quantiles))
    assert "No ok operations" in (quantiles.note or "")
    for plot in (latency, throughput):
        assert "faults" not in texts(parse(plot))


def test_user_strings_are_escaped_and_never_mathtext() -> None:
    evil = "<script>alert('$x$')</script> & id=\"x\" url(#x)"
    h = history([(0, evil, "ok", 0.1, 0.2), (1, "read", "ok", 0.3, 0.5)])
    faults = [Fault(kind=evil, label=evil, start=0, end=1 * S)]
    for plot in render_plots(h, faults):
        words = texts(parse(plot))
        assert evil in words  # the label, whole, in the strip and its tooltip
        assert "<script>" not in plot.svg


def test_overlapping_and_narrow_faults_get_lanes_and_short_labels() -> None:
    long = "partition " + " | ".join(f"n{i}" for i in range(40))
    faults = [Fault(kind="partition", label=f"{long} #{i}", start=int(i * 0.05 * S), end=int(3 * S))
              for i in range(8)]
    faults.append(Fault(kind="pause", label="pause n1", start=int(1.5 * S), end=int(1.5 * S)))
    latency = render_plots(SMALL, faults)[0]
    root = parse(latency)
    shown = ["".join(e.itertext()) for g in root.iter(SVG + "g")
             if (g.get("id") or "").endswith("-label") for e in g.iter(SVG + "text")]
    assert any(s.endswith("…") for s in shown)  # long labels are shortened
    assert "pause n1" in shown  # a zero-length fault still shows its label
    assert all(f.label in texts(root) for f in faults)  # whole in the tooltips


def test_times_far_from_zero_are_drawn_from_the_first_operation() -> None:
    epoch = 1_700_000_000 * S
    h = [Op(index=op.index, time=op.time + epoch, process=op.process, type=op.type, f=op.f)
         for op in SMALL]
    for plot in render_plots(h, ()):
        assert "time since the first operation (s)" in texts(parse(plot))


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Op], list[Fault]]:
    n = draw(st.integers(0, 12))
    spec: list[tuple[int, str, str, float, float | None]] = []
    clock = [0.0] * 4  # per client: when its last operation ended
    ids = list(range(4))  # per client: its process id, new after an info
    for _ in range(n):
        c = draw(st.integers(0, 3))
        start = clock[c] + draw(st.floats(0, 2))
        latency = draw(st.floats(0, 1))
        outcome = draw(st.sampled_from(["ok", "fail", "info"]))
        f = draw(st.sampled_from(["read", "write", "cas", "add"]))
        end = None if outcome == "info" and draw(st.booleans()) else start + latency
        spec.append((ids[c], f, outcome, start, end))
        clock[c] = start + latency
        if outcome == "info":
            ids[c] += 4
    faults = draw(st.lists(st.builds(
        Fault,
        kind=st.sampled_from(["partition", "kill", "pause", "clock", "packet", "other"]),
        label=st.text(max_size=30),
        start=st.integers(-S, 20 * S),
        end=st.none() | st.integers(-S, 20 * S),
    ), max_size=6))
    return history(spec), faults


@settings(max_examples=8)
@given(histories())
def test_random_small_histories_never_crash(case: tuple[list[Op], list[Fault]]) -> None:
    h, faults = case
    plots = render_plots(h, faults)
    assert [p.slug for p in plots] == SLUGS
    for plot in plots:
        parse(plot)
