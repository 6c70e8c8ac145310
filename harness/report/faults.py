"""The faults of a run as intervals of time, read back from the nemesis
operations of its history: what was done to which nodes, from when to when.

The nemesis records a fault as an `invoke` and an `info` of its start f
(`start-partition`, `kill`, `bump-clock` ...) and, later, the same for its
stop f (`stop-partition`, `restart`, `reset-clock` ...); the `info` value
says what was done (a partition's grudge, the nodes killed, the clock
offsets). An interval runs from the start's invocation (the fault may act
from then on) to the stop's `info` (healed for sure), or to the end of the
history if it was never stopped.

Which stop ends which start comes from the built-in faults' pairs, from
`start-X`/`stop-X` for any other, and from `pairs` (a plug-in fault's
start f -> stop f, as `Fault.start_f`/`stop_f` declare them). A nemesis f
that matches nothing is an instant: an interval of no length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from checkers.history import Op

# start f -> (kind, stop f), for the built-in faults (harness/nemesis/).
BUILTIN: dict[str, tuple[str, str]] = {
    "start-partition": ("partition", "stop-partition"),
    "kill": ("kill", "restart"),
    "pause": ("pause", "resume"),
    "bump-clock": ("clock", "reset-clock"),
    "strobe-clock": ("clock", "reset-clock"),
    "start-packet": ("packet", "stop-packet"),
    "power-off": ("power", "power-on"),
    "wipe": ("wipe", "rejoin"),
}
# A reset of the clocks is also one of the clock fault's kinds of start: it
# ends a skew in force and begins nothing.
_NOTHING_STARTS = frozenset({"reset-clock"})


@dataclass(frozen=True, kw_only=True)
class FaultInterval:
    kind: str  # "partition", "kill", "pause", "clock", "packet", or a plug-in's f
    f: str  # the start's f
    start: int  # ns since the test started: the start's invocation
    end: int | None  # ns: the stop's completion; None if never stopped
    label: str  # "partition halves: n1 n2 | n3 n4 n5", "kill n2", ...
    nodes: tuple[str, ...] = ()  # the nodes it touched
    # For partitions: node -> the nodes it could not reach (both directions).
    cut: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ops: tuple[int, ...] = ()  # history indexes of its nemesis ops
    error: str | None = None

    def effect(self, node: str) -> str | None:
        """What this fault did to `node`, in a few words, or None."""
        if node in self.cut:
            return "cut off from " + " ".join(self.cut[node])
        if node not in self.nodes:
            return None
        if self.kind == "clock":
            return f"clock {self.offsets.get(node, 'skewed')}"
        return {"kill": "killed", "pause": "paused", "packet": "packets shaped", "power": "power lost",
                "wipe": "disk wiped"}.get(self.kind, self.kind)

    @property
    def offsets(self) -> dict[str, str]:
        """For a clock bump: node -> its offset ('+12.3 s')."""
        if self.kind != "clock" or not self.label.startswith("clock ") or "strobe" in self.label:
            return {}
        out = {}
        for part in self.label.removeprefix("clock ").split(", "):
            node, _, offset = part.partition(" ")
            out[node] = offset.split(" (failed")[0]
        return out

    def covers(self, t: int, end_of_history: int) -> bool:
        return self.start <= t <= (end_of_history if self.end is None else self.end)

    def overlaps(self, a: int, b: int, end_of_history: int) -> bool:
        return self.start <= b and a <= (end_of_history if self.end is None else self.end)


def intervals(history: Sequence[Op], pairs: Mapping[str, str] | None = None,
              nodes: Sequence[str] = ()) -> list[FaultInterval]:
    """The fault intervals of `history`, in order of their start. `nodes`:
    the cluster's nodes (else those the client operations name), so that a
    node no fault touched still counts in a partition's groups."""
    everyone = set(nodes) or {op.node for op in history if op.node is not None}
    starts: dict[str, tuple[str, str]] = dict(BUILTIN)
    for start_f, its_stop in (pairs or {}).items():
        starts.setdefault(start_f, (start_f, its_stop))
    stops = {stop for _, stop in starts.values()}
    open_: dict[str, dict[str, Any]] = {}  # stop f -> the pending interval's parts
    done: list[dict[str, Any]] = []
    pending_invoke: dict[str, Op] = {}
    for op in history:
        if op.process != "nemesis":
            continue
        f = op.f
        if op.type == "invoke":
            pending_invoke[f] = op
            continue
        invoke = pending_invoke.pop(f, None)
        begun = invoke.time if invoke is not None else op.time
        nemesis_ops = ((invoke.index,) if invoke is not None else ()) + (op.index,)
        is_stop = f in stops or f.startswith("stop-")
        if is_stop and f in open_:
            parts = open_.pop(f)
            parts["end"] = op.time
            parts["ops"] += nemesis_ops
            parts["stop_value"] = op.value
            continue
        if f in _NOTHING_STARTS or is_stop:
            continue
        stop_f: str | None
        kind, stop_f = starts[f] if f in starts else _generic(f)
        parts = {"kind": kind, "f": f, "start": begun, "end": None, "value": op.value, "ops": nemesis_ops}
        if stop_f is None:
            parts["end"] = op.time
            done.append(parts)
            continue
        if stop_f in open_:  # started again without a stop: the earlier one ends here
            earlier = open_.pop(stop_f)
            earlier["end"] = begun
            done.append(earlier)
        open_[stop_f] = parts
        done.append(parts)
    return sorted((_interval(p, everyone) for p in done), key=lambda i: i.start)


def _generic(f: str) -> tuple[str, str | None]:
    """A plug-in's f: `start-X` pairs with `stop-X`; anything else is an instant."""
    if f.startswith("start-"):
        return f.removeprefix("start-"), "stop-" + f.removeprefix("start-")
    return f, None


def _interval(p: dict[str, Any], everyone: set[str]) -> FaultInterval:
    value = p["value"]
    kind = p["kind"]
    error = value.get("error") if isinstance(value, dict) else None
    nodes: tuple[str, ...] = ()
    cut: dict[str, tuple[str, ...]] = {}
    if kind == "partition" and isinstance(value, dict) and isinstance(value.get("grudge"), dict):
        cut = cut_off(value["grudge"])
        nodes = tuple(sorted(cut))
        label = f"partition {value.get('shape', '')}: {partition_text(value['grudge'], everyone)}".replace("  ", " ")
    elif kind == "clock" and isinstance(value, dict):
        label, nodes = _clock_label(p["f"], value)
    elif isinstance(value, dict) and isinstance(value.get("nodes"), list):
        nodes = tuple(str(n) for n in value["nodes"])
        label = f"{kind} {' '.join(nodes)}" + _packet_text(value)
    else:
        label = kind if value is None or isinstance(value, dict) else f"{kind} {value}"
    if error:
        label += f" (failed: {error})"
    return FaultInterval(kind=kind, f=p["f"], start=p["start"], end=p["end"], label=label, nodes=nodes, cut=cut,
                         ops=tuple(p["ops"]), error=error)


def cut_off(grudge: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """node -> every node it cannot talk to, whichever side drops."""
    out: dict[str, set[str]] = {}
    for node, drops in grudge.items():
        for other in drops:
            out.setdefault(str(node), set()).add(str(other))
            out.setdefault(str(other), set()).add(str(node))
    return {n: tuple(sorted(s, key=node_order)) for n, s in sorted(out.items(), key=lambda kv: node_order(kv[0]))}


def partition_text(grudge: Mapping[str, Sequence[str]], nodes: set[str] | None = None) -> str:
    """'n1 n2 | n3 n4 n5' when the nodes fall into groups that talk only among
    themselves; else who is cut from whom: 'n2 cut from n3 n5; n3 cut from n2 n4'."""
    cut = cut_off(grudge)
    everyone = set(cut) | set(nodes or ())
    groups: list[frozenset[str]] = []
    for node in everyone:
        group = frozenset(everyone - set(cut.get(node, ())))
        if group not in groups:
            groups.append(group)
    disjoint = sum(len(g) for g in groups) == len(everyone)
    if disjoint and len(groups) > 1:
        return " | ".join(" ".join(sorted(g, key=node_order)) for g in sorted(groups, key=lambda g: min(map(node_order, g))))
    return "; ".join(f"{n} cut from {' '.join(o)}" for n, o in cut.items())


def _clock_label(f: str, value: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    strobe = value.get("strobe")
    if isinstance(strobe, dict):
        nodes = tuple(str(n) for n in strobe.get("nodes", ()))
        return (f"clock strobe {' '.join(nodes)} 0/{strobe.get('delta', 0):+g} s every {strobe.get('period', 0):g} s",
                nodes)
    offsets = {str(k): v for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    nodes = tuple(sorted(offsets, key=node_order))
    return "clock " + ", ".join(f"{n} {offsets[n]:+g} s" for n in nodes), nodes


def _packet_text(value: dict[str, Any]) -> str:
    bits = []
    if isinstance(value.get("lost-bytes"), dict):  # a power failure's
        bits.append("unsynced bytes lost: " + ", ".join(f"{n} {b}" for n, b in value["lost-bytes"].items()))
    if value.get("delay_ms"):
        bits.append(f"delay {value['delay_ms']} ms" + (f"±{value['jitter_ms']}" if value.get("jitter_ms") else ""))
    if value.get("loss"):
        bits.append(f"loss {value['loss']}")
    return f" ({', '.join(bits)})" if bits else ""


def node_order(name: str) -> tuple[int, str]:
    """n2 before n10."""
    digits = "".join(c for c in name if c.isdigit())
    return (int(digits) if digits else -1, name)


def in_force(faults: Sequence[FaultInterval], a: int, b: int, end_of_history: int) -> list[FaultInterval]:
    """The faults in force at some point between times `a` and `b` (ns)."""
    return [i for i in faults if i.overlaps(a, b, end_of_history)]


def last_before(faults: Sequence[FaultInterval], t: int) -> FaultInterval | None:
    """The fault that ended last before time `t`."""
    ended = [i for i in faults if i.end is not None and i.end < t]
    return max(ended, key=lambda i: i.end or 0) if ended else None
