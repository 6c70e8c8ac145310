"""The plots of a run's HTML report, as inline SVG strings (`render_plots`).

Three plots of the client operations of a history, each with the run's fault
intervals shaded and labelled:

1. `latency`: every operation's latency against its invocation time (log
   scale), coloured and shaped by outcome (Jepsen's colours, with darker
   edges so that points show on white; circle ok, cross fail, triangle info).
   An `info` operation has no latency: it is drawn at the time it was given
   up on (its timeout), or at the top edge when it never completed. With two
   or three kinds of operation (`f`), the marker's fill tells them apart.
   Past `_VECTOR_POINTS` points, the points are drawn as one embedded image
   (rasterized) so that the page stays small; the note says so.
2. `latency-quantiles`: p50, p95, p99 and max latency of the `ok` operations
   per time bucket (by invocation time), one line style per `f` when there
   are at most three.
3. `throughput`: completions per second per outcome, per time bucket (by
   completion time).

Fault intervals (`FaultSpan`: kind, label, start, end, as
`harness.report.faults.FaultInterval` has them) are light bands on
every plot, coloured by kind (Okabe-Ito, safe for colour-blind readers), and
bars in a strip above the plot carry their labels, in as many lanes as
overlapping labels need (at most `_MAX_LANES`; a label without room is
shortened with an ellipsis). Hovering a bar or label shows the whole label
and its times.

Each SVG has no XML prolog, a viewBox and `width="100%"`, text kept as text
(`svg.fonttype: none`), and ids prefixed by the plot's slug so that several
plots can share one page. matplotlib is imported only when plots are drawn,
through `Figure` (no pyplot, no GUI backend); its rc settings are global, so
the drawing holds a lock.

An empty history, one without client operations, one whose times were never
recorded (all equal, or imported with the index as the time) or one that
cannot be paired still yields the three plots: each is a one-line SVG saying
why, and its note says the same.
"""

from __future__ import annotations

import html
import io
import math
import re
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from checkers.history import HistoryError, Op, Operation, pair

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import FillStyleType, LineStyleType

__all__ = ["FaultSpan", "Plot", "render_plots"]


class FaultSpan(Protocol):
    """One fault of the run as the report shows it: a `kind` ("partition",
    "kill", "pause", "clock", "packet", ...), a short `label`, and its
    `start` and `end` in nanoseconds since the test started (`end` None:
    until the end of the history)."""

    @property
    def kind(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int | None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class Plot:
    title: str
    slug: str  # unique on the page: the SVG's ids start with it
    svg: str  # an inline <svg> element, without XML prolog or DOCTYPE
    note: str | None = None  # what the reader should know: sampling, buckets, why empty


_TITLES = {
    "latency": "Latency of every operation",
    "latency-quantiles": "Latency quantiles",
    "throughput": "Throughput",
}

_VECTOR_POINTS = 5_000  # more points than this are rasterized into one image
_RASTER_DPI = 120
_MIN_LATENCY_MS = 1e-3  # zero or negative latencies are drawn here, on the log scale
_BUCKETS = 80  # about this many time buckets for quantiles and throughput

OUTCOMES = ("ok", "fail", "info")
# Jepsen's colours as fill, a darker variant of each for edges and lines.
OUTCOME_FILL = {"ok": "#6DB6FE", "fail": "#FEB5DA", "info": "#FFAA26"}
OUTCOME_EDGE = {"ok": "#2166AC", "fail": "#C51B7D", "info": "#B35806"}
_OUTCOME_MARKER = {"ok": "o", "fail": "X", "info": "^"}
_OUTCOME_LINE: dict[str, LineStyleType] = {"ok": "-", "fail": "--", "info": ":"}
_INFO_LABEL = "info: drawn at its timeout"
_NEVER_LABEL = "\n(never completed: top edge)"
_F_FILL: tuple[FillStyleType, ...] = ("full", "none", "bottom")  # marker fill per f, most frequent f first
_F_FILL_NAME = {"full": "filled", "none": "hollow", "bottom": "half filled"}
_F_LINE: tuple[LineStyleType, ...] = ("-", "--", ":")

# Okabe-Ito, by fault kind.
FAULT_COLOURS = {
    "partition": "#E69F00",
    "kill": "#D55E00",
    "pause": "#CC79A7",
    "clock": "#009E73",
    "packet": "#56B4E9",
}
_OTHER_FAULT = "#999999"

# Paul Tol's bright scheme, by quantile.
_QUANTILES = (
    ("p50", 0.50, "#4477AA", "o"),
    ("p95", 0.95, "#228833", "s"),
    ("p99", 0.99, "#EE6677", "D"),
    ("max", 1.00, "#AA3377", "^"),
)

# Fixed layout, in inches: the axes' width is known before drawing, so the
# fault labels can be fitted to it.
_FIG_W = 11.0
_LEFT = 0.85
_LEGEND_W = 2.6
_AX_W = _FIG_W - _LEFT - _LEGEND_W
_TOP = 0.12
_BOTTOM = 0.55
_MAIN_H = 3.4
_LANE_H = 0.21
_STRIP_GAP = 0.06
_MAX_LANES = 4
_FONT = 9.0
_LABEL_FONT = 7.5
_CHAR_W = 0.6  # average character width, in ems, of the labels' sans-serif font

_RC: Any = {
    "svg.fonttype": "none",  # text stays text: smaller, searchable, selectable
    "svg.hashsalt": "harness-report",  # deterministic ids
    "font.size": _FONT,
    "font.family": "sans-serif",
    "axes.titlesize": _FONT,
    "axes.labelsize": _FONT,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "path.simplify": True,
}
_LOCK = threading.Lock()  # rc_context changes matplotlib's global settings


def render_plots(history: Sequence[Op], faults: Sequence[FaultSpan] = ()) -> list[Plot]:
    """The report's plots of `history`'s client operations, with `faults`
    shaded: latency, latency quantiles and throughput, in that order.
    Never raises for a history it cannot plot: each plot then says why."""
    try:
        operations = pair(history)
    except HistoryError as e:
        return _placeholders(f"the history cannot be paired: {e}")
    if not operations:
        return _placeholders("no client operations")
    if _no_times(history, operations):
        return _placeholders("no times recorded: every operation has the same time, or its index as its time")
    ops = _columns(operations)
    frame = _frame(ops, faults)
    from matplotlib import rc_context

    with _LOCK, rc_context(_RC):
        return [
            _latency_plot(ops, frame),
            _quantile_plot(ops, frame),
            _throughput_plot(ops, frame),
        ]


# --- the data ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class _Ops:
    """The client operations as columns, times in ns as in the history."""

    invoked: np.ndarray  # float64 ns
    completed: np.ndarray  # float64 ns, NaN if never completed
    outcome: np.ndarray  # int8 index into OUTCOMES
    f: np.ndarray  # int32 index into fs
    fs: tuple[str, ...]  # most frequent first

    @property
    def latency_ms(self) -> np.ndarray:
        """NaN where never completed; at least _MIN_LATENCY_MS otherwise."""
        lat = (self.completed - self.invoked) / 1e6
        return np.where(np.isnan(lat), lat, np.maximum(lat, _MIN_LATENCY_MS))


def _no_times(history: Sequence[Op], operations: Sequence[Operation]) -> bool:
    times = [o.invoke.time for o in operations]
    times += [o.completion.time for o in operations if o.completion is not None]
    if min(times) == max(times):
        return True
    return all(op.time == op.index for op in history)


def _columns(operations: Sequence[Operation]) -> _Ops:
    n = len(operations)
    code = {name: i for i, name in enumerate(OUTCOMES)}
    info = code["info"]
    names: dict[Any, int] = {}
    invoked = np.fromiter((o.invoke.time for o in operations), np.float64, n)
    completed = np.fromiter(
        (math.nan if o.completion is None else o.completion.time for o in operations), np.float64, n)
    outcome = np.fromiter((code.get(o.outcome, info) for o in operations), np.int8, n)
    f = np.fromiter((names.setdefault(o.f, len(names)) for o in operations), np.int32, n)
    counts = np.bincount(f, minlength=len(names))
    by_count = sorted(names, key=lambda name: (-counts[names[name]], str(name)))
    remap = np.empty(len(names), np.int32)
    for new, name in enumerate(by_count):
        remap[names[name]] = new
    return _Ops(invoked=invoked, completed=completed, outcome=outcome, f=remap[f],
                fs=tuple(_clean(name) for name in by_count))


@dataclass(kw_only=True, slots=True)
class _Band:
    kind: str
    label: str  # as shown: shortened to its room, "" when there is none
    title: str  # the tooltip: kind, whole label, times
    x0: float  # seconds on the plot's axis
    x1: float
    lane: int = 0


@dataclass(kw_only=True, slots=True)
class _Frame:
    """What the three plots share: the time axis, its buckets, the faults."""

    origin: float  # ns at x = 0
    xlabel: str
    x_lo: float  # seconds
    x_hi: float
    bucket: float  # seconds
    bands: list[_Band] = field(default_factory=list)
    lanes: int = 0

    def seconds(self, ns: np.ndarray) -> np.ndarray:
        return (ns - self.origin) / 1e9

    @property
    def xlim(self) -> tuple[float, float]:
        return self.x_lo, self.x_hi + 0.01 * (self.x_hi - self.x_lo)

    def edges(self) -> np.ndarray:
        n = max(1, math.ceil((self.x_hi - self.x_lo) / self.bucket - 1e-9))
        return self.x_lo + self.bucket * np.arange(n + 1)

    def bucket_of(self, seconds: np.ndarray, nbuckets: int) -> np.ndarray:
        b = np.floor((seconds - self.x_lo) / self.bucket).astype(np.int64)
        return np.clip(b, 0, nbuckets - 1)


def _frame(ops: _Ops, faults: Sequence[FaultSpan]) -> _Frame:
    done = ops.completed[~np.isnan(ops.completed)]
    t_min = float(ops.invoked.min())
    t_max = float(max(ops.invoked.max(), done.max() if done.size else -math.inf))
    span = t_max - t_min
    # Times are ns since the test started; a file whose clock starts far
    # from 0 (an epoch, say) is drawn from its first operation instead.
    if 0 <= t_min <= 10 * span:
        origin, xlabel = 0.0, "time since the test started (s)"
    else:
        origin, xlabel = t_min, "time since the first operation (s)"
    x_lo = min(0.0, (t_min - origin) / 1e9)
    x_hi = (t_max - origin) / 1e9
    spans: list[tuple[FaultSpan, float, float | None]] = []
    for fault in faults:
        x0 = (float(fault.start) - origin) / 1e9
        x1 = None if fault.end is None else (float(fault.end) - origin) / 1e9
        spans.append((fault, x0, x1))
        if x0 >= x_lo:
            x_hi = max(x_hi, x0, x1 if x1 is not None else x0)
    frame = _Frame(origin=origin, xlabel=xlabel, x_lo=x_lo, x_hi=x_hi,
                   bucket=_nice((x_hi - x_lo) / _BUCKETS))
    frame.bands = _bands(spans, frame)
    frame.lanes = 1 + max((b.lane for b in frame.bands), default=-1)
    return frame


def _nice(x: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is at least x."""
    if not x > 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        if m * power >= x * (1 - 1e-9):
            return m * power
    return 10 * power


def _bands(spans: list[tuple[FaultSpan, float, float | None]], frame: _Frame) -> list[_Band]:
    """Clip the faults to the axis and give each label a lane of the strip:
    a lane is free once the previous label in it has ended; when no lane is
    free and `_MAX_LANES` are in use, the lane that frees up first is taken
    and its previous label shortened."""
    lo, hi = frame.xlim
    per_inch = (hi - lo) / _AX_W
    char = _LABEL_FONT * _CHAR_W / 72 * per_inch  # one character, in seconds
    pad = 0.5 * char
    bands: list[_Band] = []
    for fault, x0, x1 in spans:
        end = frame.x_hi if x1 is None else x1
        if end < lo or x0 > hi:
            continue
        label, kind = _clean(fault.label), _clean(fault.kind)
        until = "the end" if x1 is None else f"{x1:.3f} s"
        bands.append(_Band(kind=kind, label=label, x0=max(x0, lo), x1=min(max(end, x0), hi),
                           title=f"{kind}: {label} ({x0:.3f} s to {until})"))
    bands.sort(key=lambda b: (b.x0, -b.x1))
    lanes: list[tuple[float, float]] = []  # per lane: where its label ends, where its bar ends
    for b in bands:
        wants = b.x0 + pad + char * len(b.label)
        free = [i for i, (text_end, _) in enumerate(lanes) if text_end <= b.x0]
        if free:
            b.lane = free[0]
        elif len(lanes) < _MAX_LANES:
            b.lane = len(lanes)
            lanes.append((0.0, 0.0))
        else:
            b.lane = min(range(len(lanes)), key=lambda i: (lanes[i][1] > b.x0, lanes[i][0]))
        bar_end = max(b.x1, lanes[b.lane][1])
        lanes[b.lane] = (max(wants, bar_end), bar_end)
    # Fit each label into the room before the next label in its lane.
    for lane in range(len(lanes)):
        row = [b for b in bands if b.lane == lane]
        for b, after in zip(row, [*row[1:], None], strict=True):
            room = (hi if after is None else after.x0) - b.x0 - pad
            fits = int(room / char)
            if fits < len(b.label):
                b.label = b.label[: fits - 1] + "…" if fits >= 4 else ""
    return bands


# --- the plots --------------------------------------------------------------


def _latency_plot(ops: _Ops, frame: _Frame) -> Plot:
    from matplotlib.lines import Line2D

    fig, ax = _figure(frame)
    lat = ops.latency_ms
    x = frame.seconds(ops.invoked)
    never = np.isnan(lat)
    n = len(x)
    raster = n > _VECTOR_POINTS
    per_f = 2 <= len(ops.fs) <= len(_F_FILL)
    scale = 1.0 if n <= _VECTOR_POINTS else max(0.45, math.sqrt(_VECTOR_POINTS / n))
    ax.set_yscale("log")
    ax.set_ylim(*_decades(lat[~never], headroom=2.5))
    top = ax.get_xaxis_transform()  # x in data, y in axes fractions
    for k, outcome in enumerate(OUTCOMES):
        is_outcome = ops.outcome == k
        for fi in range(len(ops.fs) if per_f else 1):
            mask = is_outcome & (ops.f == fi) if per_f else is_outcome
            style = _marker(outcome, _F_FILL[fi] if per_f else "full", scale=scale)
            drawn = mask & ~never
            if drawn.any():
                ax.plot(x[drawn], lat[drawn], linestyle="none", rasterized=raster, zorder=2, **style)
            hanging = mask & never
            if hanging.any():
                ax.plot(x[hanging], np.full(int(hanging.sum()), 0.97), linestyle="none",
                        transform=top, clip_on=False, rasterized=raster, zorder=2, **style)
    ax.set_ylabel("latency (ms)")
    _log_ticks(ax)
    labels = {"ok": "ok", "fail": "fail", "info": _INFO_LABEL + (_NEVER_LABEL if never.any() else "")}
    handles: list[Any] = [Line2D([], [], linestyle="none", label=labels[o], **_marker(o, "full"))
                          for o in OUTCOMES]
    if per_f:
        handles += [Line2D([], [], linestyle="none", marker="o", markersize=6, color="#555555",
                           markerfacecolor="#555555", markeredgecolor="#333333", fillstyle=fill,
                           label=f"{_legend_text(name)}: {_F_FILL_NAME[fill]}")
                    for name, fill in zip(ops.fs, _F_FILL, strict=False)]
    notes = []
    if raster:
        notes.append(f"{n:,} operations: the points are drawn as one embedded image (rasterized) "
                     "to keep the page small")
    if len(ops.fs) > len(_F_FILL):
        notes.append(f"{len(ops.fs)} kinds of operation ({', '.join(ops.fs[:6])}"
                     f"{', ...' if len(ops.fs) > 6 else ''}) are drawn alike")
    if int(never.sum()):
        notes.append(f"{int(never.sum()):,} operations never completed: drawn at the top edge")
    _finish(fig, ax, frame, handles)
    return _plot("latency", fig, frame, "; ".join(notes) + "." if notes else None)


def _quantile_plot(ops: _Ops, frame: _Frame) -> Plot:
    from matplotlib.lines import Line2D

    fig, ax = _figure(frame)
    ok = (ops.outcome == OUTCOMES.index("ok")) & ~np.isnan(ops.completed)
    edges = frame.edges()
    nb = len(edges) - 1
    mids = (edges[:-1] + edges[1:]) / 2
    per_f = 2 <= len(ops.fs) <= len(_F_LINE)
    handles: list[Any] = [Line2D([], [], color=colour, marker=marker, markersize=4, label=name)
                          for name, _, colour, marker in _QUANTILES]
    width = _seconds_text(frame.bucket)
    if not ok.any():
        ax.text(0.5, 0.5, "no ok operations", transform=ax.transAxes, ha="center", va="center")
        ax.set_yticks([])
        note = "No ok operations: there is no latency to take quantiles of."
    else:
        lat_all = ops.latency_ms
        for fi in range(len(ops.fs) if per_f else 1):
            mask = ok & (ops.f == fi) if per_f else ok
            buckets = frame.bucket_of(frame.seconds(ops.invoked[mask]), nb)
            values = _bucket_quantiles(buckets, lat_all[mask], nb, [q for _, q, _, _ in _QUANTILES])
            for (_, _, colour, marker), ys in zip(_QUANTILES, values, strict=True):
                ax.plot(mids, ys, color=colour, marker=marker, markersize=3, linewidth=1.1,
                        linestyle=_F_LINE[fi] if per_f else "-", zorder=2)
        ax.set_yscale("log")
        ax.set_ylim(*_decades(lat_all[ok], headroom=1.5))
        _log_ticks(ax)
        if per_f:
            handles += [Line2D([], [], color="#333333", linestyle=style, label=_legend_text(name))
                        for name, style in zip(ops.fs, _F_LINE, strict=False)]
        note = (f"ok operations only, in {width} buckets by invocation time; "
                "nearest-rank quantiles.")
    ax.set_ylabel("latency (ms)")
    _finish(fig, ax, frame, handles)
    return _plot("latency-quantiles", fig, frame, note)


def _throughput_plot(ops: _Ops, frame: _Frame) -> Plot:
    from matplotlib.lines import Line2D

    fig, ax = _figure(frame)
    edges = frame.edges()
    nb = len(edges) - 1
    done = ~np.isnan(ops.completed)
    # The bucket that the history ends in is only partly covered.
    end = float(frame.seconds(ops.completed[done]).max()) if done.any() else frame.x_hi
    widths = np.clip(np.minimum(edges[1:], end) - edges[:-1], 0.1 * frame.bucket, frame.bucket)
    handles: list[Any] = []
    peak = 0.0
    for k, outcome in enumerate(OUTCOMES):
        mask = done & (ops.outcome == k)
        buckets = frame.bucket_of(frame.seconds(ops.completed[mask]), nb)
        rate = np.bincount(buckets, minlength=nb)[:nb] / widths
        peak = max(peak, float(rate.max(initial=0.0)))
        ax.stairs(rate, edges, color=OUTCOME_EDGE[outcome], linestyle=_OUTCOME_LINE[outcome],
                  linewidth=1.3, zorder=2, baseline=None)
        handles.append(Line2D([], [], color=OUTCOME_EDGE[outcome], linestyle=_OUTCOME_LINE[outcome],
                              linewidth=1.3, label=outcome))
    ax.set_ylim(0, peak * 1.1 if peak > 0 else 1)
    ax.set_ylabel("throughput (operations/s)")
    _finish(fig, ax, frame, handles)
    never = int((~done).sum())
    note = f"completions per second in {_seconds_text(frame.bucket)} buckets by completion time"
    if never:
        note += f"; {never:,} operations that never completed are not counted"
    return _plot("throughput", fig, frame, note + ".")


def _bucket_quantiles(buckets: np.ndarray, values: np.ndarray, nb: int,
                      qs: Sequence[float]) -> list[np.ndarray]:
    """Per bucket 0..nb-1, the nearest-rank q-quantile of the values in it
    (NaN for an empty bucket), one array per q."""
    order = np.lexsort((values, buckets))
    sorted_buckets, sorted_values = buckets[order], values[order]
    starts = np.searchsorted(sorted_buckets, np.arange(nb), "left")
    counts = np.searchsorted(sorted_buckets, np.arange(nb), "right") - starts
    out = []
    for q in qs:
        rank = np.maximum(np.ceil(q * counts).astype(np.int64) - 1, 0)
        at = np.minimum(starts + rank, max(len(sorted_values) - 1, 0))
        out.append(np.where(counts > 0, sorted_values[at] if len(sorted_values) else np.nan, np.nan))
    return out


# --- figures and SVG --------------------------------------------------------


def _figure(frame: _Frame) -> tuple[Figure, Axes]:
    """A figure of fixed layout: the fault strip (if any faults) above the
    main axes, the legend right of them."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from matplotlib.transforms import blended_transform_factory

    strip_h = frame.lanes * _LANE_H + (_STRIP_GAP if frame.lanes else 0)
    height = _TOP + strip_h + _MAIN_H + _BOTTOM
    fig = Figure(figsize=(_FIG_W, height))
    left, width = _LEFT / _FIG_W, _AX_W / _FIG_W
    ax = fig.add_axes((left, _BOTTOM / height, width, _MAIN_H / height))
    ax.set_xlim(*frame.xlim)
    ax.set_xlabel(frame.xlabel)
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    ax.grid(True, which="major", color="#E5E5E5", linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    for i, b in enumerate(frame.bands):
        colour = FAULT_COLOURS.get(b.kind, _OTHER_FAULT)
        ax.axvspan(b.x0, _visible_end(b, frame), facecolor=(colour, 0.14), edgecolor=(colour, 0.55),
                   linewidth=0.6, zorder=1).set_gid(f"fault-{i}-band")
    # The strip: lane 0 just above the axes, in the axes' x (data) and y
    # (fractions of the axes' height, > 1) coordinates.
    strip = blended_transform_factory(ax.transData, ax.transAxes)
    lane_h = _LANE_H / _MAIN_H
    base = 1 + _STRIP_GAP / _MAIN_H + frame.lanes * lane_h  # the strip's top

    def lane_y(lane: int, at: float) -> float:
        return base - (lane + at) * lane_h

    if frame.lanes:
        ax.text(-0.01, lane_y(0, frame.lanes / 2), "faults", transform=ax.transAxes,
                ha="right", va="center")
    span = frame.xlim[1] - frame.xlim[0]
    for i, b in enumerate(frame.bands):
        colour = FAULT_COLOURS.get(b.kind, _OTHER_FAULT)
        ax.add_patch(Rectangle((b.x0, lane_y(b.lane, 0.9)), _visible_end(b, frame) - b.x0, 0.8 * lane_h,
                               transform=strip, clip_on=False, facecolor=(colour, 0.35),
                               edgecolor=colour, linewidth=0.6, gid=f"fault-{i}"))
        if b.label:
            ax.text(b.x0 + span * 0.002, lane_y(b.lane, 0.5), b.label, transform=strip,
                    fontsize=_LABEL_FONT, va="center", ha="left", clip_on=False, parse_math=False,
                    gid=f"fault-{i}-label")
    return fig, ax


def _visible_end(b: _Band, frame: _Frame) -> float:
    """A fault too short to see is drawn a little wider."""
    lo, hi = frame.xlim
    return max(b.x1, b.x0 + (hi - lo) * 0.002)


def _finish(fig: Figure, ax: Axes, frame: _Frame, handles: list[Any]) -> None:
    from matplotlib.patches import Patch

    kinds = dict.fromkeys(b.kind for b in frame.bands)
    handles = [*handles, *(Patch(facecolor=(FAULT_COLOURS.get(k, _OTHER_FAULT), 0.35),
                                 edgecolor=FAULT_COLOURS.get(k, _OTHER_FAULT), linewidth=0.6,
                                 label=_legend_text(k)) for k in kinds)]
    top = 1 - _TOP / fig.get_figheight()
    fig.legend(handles=handles, loc="upper left", frameon=False,
               bbox_to_anchor=((_LEFT + _AX_W + 0.15) / _FIG_W, top), borderaxespad=0)


def _plot(slug: str, fig: Figure, frame: _Frame, note: str | None) -> Plot:
    buf = io.StringIO()
    with warnings.catch_warnings():
        # Glyphs a label has and the layout font lacks: the text stays text,
        # and the browser's fonts draw it.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        fig.savefig(buf, format="svg", dpi=_RASTER_DPI, metadata={"Date": None})
    tips = {i: html.escape(b.title) for i, b in enumerate(frame.bands)}
    return Plot(title=_TITLES[slug], slug=slug, svg=_inline(buf.getvalue(), slug, tips), note=note)


_TAG = re.compile(r"<[^>]+>")
_ID = re.compile(r'(\bid="|\bhref="#|url\(#)')
_GID = re.compile(r'<g id="fault-(\d+)(-band|-label)?">')


def _inline(svg: str, slug: str, tips: dict[int, str]) -> str:
    """matplotlib's SVG document as an element for an HTML page: no prolog,
    no metadata, sized by its viewBox, fault tooltips, ids prefixed by slug."""
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, count=1, flags=re.S)
    svg = _GID.sub(lambda m: f"{m.group(0)}<title>{tips.get(int(m.group(1)), '')}</title>", svg)
    svg = _TAG.sub(lambda m: _ID.sub(lambda a: a.group(1) + slug + "-", m.group(0)), svg)
    title = html.escape(_TITLES[slug])

    def opening(m: re.Match[str]) -> str:
        attrs = re.sub(r'\s(width|height)="[^"]*"', "", m.group(1))
        return f'<svg{attrs} width="100%" role="img" aria-label="{title}" class="plot-{slug}">'

    svg = re.sub(r"<svg([^>]*)>", opening, svg, count=1)
    # matplotlib's one style rule would apply to the whole page: keep it to this plot.
    svg = svg.replace("<style type=\"text/css\">*{", f"<style type=\"text/css\">svg.plot-{slug} *{{", 1)
    return svg.replace(">", f"><title>{title}</title>", 1).rstrip() + "\n"


def _placeholders(reason: str) -> list[Plot]:
    text = html.escape(reason)
    note = reason[:1].upper() + reason[1:] + "."
    return [
        Plot(title=title, slug=slug, note=note,
             svg=(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 792 36" width="100%" '
                  f'role="img" aria-label="{html.escape(title)}" class="plot-{slug}">'
                  f'<title>{html.escape(title)}</title>'
                  f'<text x="396" y="22" text-anchor="middle" font-family="sans-serif" '
                  f'font-size="12" fill="#555555">{text}</text></svg>\n'))
        for slug, title in _TITLES.items()
    ]


# --- small helpers ----------------------------------------------------------


def _marker(outcome: str, fill: FillStyleType, scale: float = 1.0) -> dict[str, Any]:
    """Outcome by colour and shape, f by fill; `scale` < 1 for dense plots."""
    return {
        "marker": _OUTCOME_MARKER[outcome],
        "markersize": (5 if outcome == "ok" else 6) * scale,
        "markerfacecolor": OUTCOME_FILL[outcome] if fill != "none" else "none",
        "markeredgecolor": OUTCOME_EDGE[outcome],
        "markeredgewidth": 0.6 * scale,
        "fillstyle": fill,
        "color": OUTCOME_EDGE[outcome],
    }


def _decades(values: np.ndarray, *, headroom: float) -> tuple[float, float]:
    """Limits of a log axis for positive `values`, with `headroom` above the
    largest, and wide enough for two labelled ticks (powers of ten)."""
    if not values.size:
        return 0.1, 10.0
    lo, hi = float(values.min()) / 1.5, float(values.max()) * headroom
    if math.floor(math.log10(hi)) - math.ceil(math.log10(lo)) < 1:
        lo, hi = 10.0 ** math.floor(math.log10(lo)), 10.0 ** math.ceil(math.log10(hi))
    return lo, max(hi, lo * 10)


def _log_ticks(ax: Axes) -> None:
    """Plain numbers at the powers of ten (no mathtext), none between."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ufffe\uffff\ud800-\udfff]")


def _clean(text: object) -> str:
    """A user's string for one line of SVG text: whitespace runs made one
    space, characters XML cannot hold replaced."""
    return _UNPRINTABLE.sub("\ufffd", " ".join(str(text).split()))


def _legend_text(text: str) -> str:
    """A user's string as legend text: short, and no mathtext."""
    text = _clean(text)
    text = text if len(text) <= 24 else text[:23] + "…"
    return text.replace("$", r"\$")


def _seconds_text(s: float) -> str:
    if s >= 1:
        return f"{s:g} s"
    if s >= 1e-3:
        return f"{s * 1e3:g} ms"
    return f"{s * 1e6:g} µs"
