"""Hypothesis strategies for property tests of kvnode in simulation: fault
schedules (tuples of `Step`s for `simulate(config, seed, schedule)`) and
small `WorldConfig`s, so a test can say "for any schedule of partitions and
crashes, the run is valid" and let hypothesis search for, and shrink, a
counterexample.

A schedule is drawn as a list of fault *episodes*: a kind (`partition`,
`crash`, ...), its target, a start and a length in whole milliseconds. The
layout turns them into well-formed `Step`s: every fault that starts also
ends (a `heal` after a `partition`, a `restart` of the node that crashed),
episodes of one kind never overlap where the world could not tell them apart
(a partition replaces the one in force, `clock-reset` resets every clock),
at most `max_down` nodes are unavailable (crashed, paused, powered off,
wiped) at once, every time is in (0, seconds), and the steps are sorted by
time. An episode that does not fit where it was drawn is moved later, or
dropped if it no longer fits in the run. Hypothesis shrinks the list toward
fewer episodes, earlier and shorter ones, the first kind and target.

Adding a fault kind is adding one function from the cluster's node names
(and `max_down`) to a strategy of `Episode`s, and its name to `KINDS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from harness.sim.world import Step, WorldConfig
from kvnode.config import ClusterSettings

__all__ = ["FAST", "KINDS", "Episode", "configs", "layout", "scenarios", "schedules", "splits"]

# ci/matrix.toml's [defaults.system] (as tests/sim/test_fidelity.py): failure
# detection, hand-off and anti-entropy within a run of a few seconds.
FAST: dict[str, Any] = {"gossip_interval": 0.2, "suspect_after": 1.0, "dead_after": 2.0, "ae_interval": 2.0,
                        "handoff_interval": 0.3, "request_timeout": 1.0}


@dataclass(frozen=True, slots=True)
class Episode:
    """One fault from its start to its end: `begin` and `end` are the steps
    (their `at` is set by `layout`). Episodes with the same `resource` never
    overlap; `down` is the nodes the fault makes unavailable while it lasts."""

    begin: Step
    end: Step
    resource: str = ""
    down: frozenset[str] = frozenset()


Kind = Callable[[tuple[str, ...], int], SearchStrategy[Episode]]


def _step(action: Any, **fields: Any) -> Step:
    return Step(at=0.0, action=action, **fields)


def splits(nodes: Sequence[str]) -> SearchStrategy[tuple[tuple[str, ...], tuple[str, ...]]]:
    """The nodes split into two non-empty groups (sorted, in the nodes'
    order); shrinks toward isolating the first node."""
    order = {n: i for i, n in enumerate(nodes)}

    def split(side: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        one = tuple(sorted(side, key=order.__getitem__))
        return one, tuple(n for n in nodes if n not in side)

    return st.lists(st.sampled_from(list(nodes)), min_size=1, max_size=len(nodes) - 1, unique=True).map(split)


def _some(nodes: tuple[str, ...], most: int) -> SearchStrategy[tuple[str, ...]]:
    """A non-empty subset of at most `most` nodes, in the nodes' order."""
    return st.lists(st.sampled_from(nodes), min_size=1, max_size=max(1, min(most, len(nodes))),
                    unique=True).map(lambda chosen: tuple(n for n in nodes if n in chosen))


def partition(nodes: tuple[str, ...], max_down: int) -> SearchStrategy[Episode]:
    return splits(nodes).map(lambda groups: Episode(_step("partition", groups=groups), _step("heal"),
                                                    resource="partition"))


def crash(nodes: tuple[str, ...], max_down: int) -> SearchStrategy[Episode]:
    return st.sampled_from(nodes).map(lambda n: Episode(_step("crash", node=n), _step("restart", node=n),
                                                        down=frozenset({n})))


def pause(nodes: tuple[str, ...], max_down: int) -> SearchStrategy[Episode]:
    return st.sampled_from(nodes).map(lambda n: Episode(_step("pause", node=n), _step("resume", node=n),
                                                        down=frozenset({n})))


def power(nodes: tuple[str, ...], max_down: int) -> SearchStrategy[Episode]:
    return _some(nodes, max_down).map(lambda ns: Episode(_step("power", nodes=ns), _step("power-on", nodes=ns),
                                                         down=frozenset(ns)))


def wipe(nodes: tuple[str, ...], max_down: int) -> SearchStrategy[Episode]:
    # In no test yet: on the node as it is, a wipe a second or so into a run can
    # lose acknowledged writes (siblings: lost-write; e.g. configs()' 2 clients,
    # 3.6 s, seed 4, wipe n1 at 1.5 s and rejoin at 1.8 s).
    return st.sampled_from(nodes).map(lambda n: Episode(_step("wipe", node=n), _step("rejoin", node=n),
                                                        down=frozenset({n})))


def clock(nodes: tuple[str, ...], max_down: int) -> SearchStrategy[Episode]:
    # a jump either way of 1 ms to 10 s, to the millisecond; shrinks toward +1 ms
    offsets = st.integers(1, 10_000).flatmap(lambda ms: st.sampled_from((ms, -ms))).map(lambda ms: ms / 1000)
    return st.tuples(st.sampled_from(nodes), offsets).map(
        lambda t: Episode(_step("clock", node=t[0], offset=t[1]), _step("clock-reset"), resource="clock"))


def packet(nodes: tuple[str, ...], max_down: int) -> SearchStrategy[Episode]:
    delays = st.integers(0, 1000).map(lambda ms: ms / 1000)  # up to 1 s
    losses = st.integers(0, 50).map(lambda pct: pct / 100)  # up to half the messages
    return st.tuples(_some(nodes, len(nodes)), delays, losses).map(
        lambda t: Episode(_step("packet", nodes=t[0], delay=t[1], loss=t[2]), _step("packet-stop"),
                          resource="packet"))


# A fault kind's name: the function drawing its episodes. `schedules` takes
# any of these names; shrinking prefers the kinds given first.
KINDS: dict[str, Kind] = {"partition": partition, "crash": crash, "pause": pause, "power": power,
                          "clock": clock, "packet": packet, "wipe": wipe}


def layout(drawn: Sequence[tuple[Episode, int, int]], total_ms: int, max_down: int = 1) -> tuple[Step, ...]:
    """The steps of `drawn` episodes, each (episode, start, length) in
    milliseconds: an episode starts at its start or, if its resource is busy
    or too many nodes would be down, just after what stands in its way ends;
    it ends `length` later, or 1 ms before `total_ms`. One that cannot start
    1 ms before the end of the run is dropped. Sorted by time (ties in the
    order the episodes were drawn)."""
    placed: list[tuple[int, int, Episode]] = []  # (start, end, episode)
    for episode, start, length in sorted(drawn, key=lambda d: d[1]):
        start = max(start, 1)
        while start < total_ms - 1:
            end = min(start + max(length, 1), total_ms - 1)
            overlap = [(s, e, p) for s, e, p in placed if s <= end and start <= e]
            down = frozenset().union(*(p.down for _, _, p in overlap))
            clash = [e for _, e, p in overlap if (episode.resource and p.resource == episode.resource)
                     or (episode.down and (p.down & episode.down or len(down | episode.down) > max_down))]
            if not clash:
                placed.append((start, end, episode))
                break
            start = min(clash) + 1
    # (time, 0 for an end and 1 for a start: at one millisecond, ends first, order drawn, step)
    steps = [(s, 1, i, dataclasses.replace(ep.begin, at=s / 1000)) for i, (s, _, ep) in enumerate(placed)]
    steps += [(e, 0, i, dataclasses.replace(ep.end, at=e / 1000)) for i, (_, e, ep) in enumerate(placed)]
    return tuple(step for *_, step in sorted(steps, key=lambda t: t[:3]))


def schedules(nodes: Sequence[str], seconds: float, kinds: Sequence[str] = ("partition", "crash"), *,
              min_episodes: int = 0, max_episodes: int = 4, max_down: int = 1) -> SearchStrategy[tuple[Step, ...]]:
    """Well-formed fault schedules for a cluster of `nodes` over a run of
    `seconds`: `min_episodes` to `max_episodes` faults of `kinds` (names in
    `KINDS`; one that no longer fits in the run is dropped, so there may be
    fewer),
    at most `max_down` nodes unavailable at once (see the module docstring)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown fault kind {unknown[0]!r} (one of: {', '.join(KINDS)})" if unknown
                         else "no fault kinds")
    if len(nodes) < 2 and "partition" in kinds:
        raise ValueError("a partition needs at least 2 nodes")
    total_ms = round(seconds * 1000)
    if total_ms < 3:
        raise ValueError(f"a run of {seconds} s has no room for a fault")
    names = tuple(nodes)
    episode = st.one_of(*(KINDS[k](names, max_down) for k in kinds))
    drawn = st.tuples(episode, st.integers(1, total_ms - 2), st.integers(1, total_ms - 2))
    return st.lists(drawn, min_size=min_episodes, max_size=max_episodes).map(lambda d: layout(d, total_ms, max_down))


def configs(*, workload: str = "register", clients: tuple[int, int] = (2, 4),
            seconds: tuple[float, float] = (2.0, 5.0), recovery: float = 3.0,
            **settings: Any) -> SearchStrategy[WorldConfig]:
    """Small worlds: 3 nodes, `clients` clients (bounds) doing 30 operations
    a second in all, `seconds` of simulated load (bounds, to the tenth of a
    second), operations timing out after 1 s, then `recovery`
    simulated seconds to converge; the cluster's settings are `FAST` timings
    and 16 ring partitions (with 3 nodes and n=3 every node holds every key
    whatever the partitions; fewer make an anti-entropy round, which walks
    them all, quicker to run and to converge: 256 halve the runs per second
    and can leave replicas apart after 3 s), with `settings` over them (e.g.
    quorum="strict")."""
    cluster = ClusterSettings(cluster="sim", **{**FAST, "partitions": 16, **settings})
    lo, hi = round(seconds[0] * 10), round(seconds[1] * 10)
    return st.builds(WorldConfig, nodes=st.just(3), settings=st.just(cluster), workload=st.just(workload),
                     concurrency=st.integers(*clients), rate=st.just(30.0),
                     simulated_seconds=st.integers(lo, hi).map(lambda tenths: tenths / 10),
                     op_timeout=st.just(1.0), recovery=st.just(recovery))


@st.composite
def scenarios(draw: st.DrawFn, worlds: SearchStrategy[WorldConfig] | None = None,
              kinds: Sequence[str] = ("partition", "crash"), min_episodes: int = 1, max_episodes: int = 4,
              max_down: int = 1) -> tuple[WorldConfig, int, tuple[Step, ...]]:
    """(config, seed, schedule) for `simulate`: a config of `worlds`
    (default `configs()`), a seed, and a schedule for that config's nodes
    and length (at least one fault by default: with none, hypothesis spends
    a good share of its examples on fault-free runs)."""
    config = draw(worlds if worlds is not None else configs())
    seed = draw(st.integers(0, 2**16))
    nodes = [f"n{i}" for i in range(1, config.nodes + 1)]
    schedule = draw(schedules(nodes, config.simulated_seconds, kinds, min_episodes=min_episodes,
                              max_episodes=max_episodes, max_down=max_down))
    return config, seed, schedule
