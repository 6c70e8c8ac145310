"""Shrinking a failing seed of `harness sim` to a minimal run that still
fails the same way, with hypothesis's shrinker.

"The same way": the run is invalid and at least one of the original's
anomalies (`checker: type`) is found again. The seed stays the same, so the
clients' operations and the network's latencies are drawn from it as before;
what shrinks is what a failing run is made of besides, each drawn from a
hypothesis strategy whose simplest value is the smallest run:

- the fault schedule: one boolean per step of the original's schedule
  (kept or dropped; the simplest drops every step);
- the choice tape: whether the loop shuffles ready callbacks with the
  seed's random order or runs them in the order they came, as asyncio does
  (the simplest: in order, so a counterexample that needs no exotic
  interleaving says so);
- the workload's length: one of the original's halvings (never ending
  before the last kept fault);
- the clients: 1 up to the original's number.

Hypothesis starts from the original run (given to it as a stored example,
the way it replays a failure it saw before) and shrinks from there; every
try is a whole simulated run, memoised, within `max_tries` runs. The result
prints as a short list of steps, the faults and the operations of the
anomaly in time order, and `Shrunk.save` writes JSON that `harness sim
--replay SEED --schedule FILE` runs again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checkers.history import Op
from harness.sim.world import Outcome, Step, WorldConfig, simulate

__all__ = ["Shrunk", "load", "shrink", "timeline"]


@dataclass
class Shrunk:
    seed: int
    config: WorldConfig
    schedule: tuple[Step, ...]
    outcome: Outcome  # of the shrunk run
    original: Outcome
    tries: int
    wall: float

    def lines(self) -> list[str]:
        """The shrunk run, readably: what changed, then its steps."""
        o, c = self.original, self.config
        ops = _client_ops(self.outcome.history)
        head = (f"shrunk seed {self.seed} in {self.tries} runs ({self.wall:.1f} s): {len(self.schedule)} fault "
                f"steps (from {len(o.schedule)}), {c.clients} clients, {c.simulated_seconds:g} simulated s of "
                f"workload, {ops} client ops (from {_client_ops(o.history)}), callbacks "
                f"{'in order' if c.fifo else 'in the seed order'}; still: {'; '.join(self.outcome.anomalies())}")
        return [head, *(f"  {line}" for line in timeline(self.outcome, self.schedule))]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({
            "seed": self.seed, "simulated_seconds": self.config.simulated_seconds,
            "concurrency": self.config.clients, "fifo": self.config.fifo,
            "schedule": [dataclasses.asdict(s) for s in self.schedule],
            "trace_hash": self.outcome.trace_hash, "anomalies": self.outcome.anomalies(),
        }, indent=2) + "\n", encoding="utf-8")


def _client_ops(history: list[Op]) -> int:
    return sum(op.type == "invoke" and op.process != "nemesis" for op in history)


def timeline(outcome: Outcome, schedule: tuple[Step, ...], *, limit: int = 12) -> list[str]:
    """The fault steps and the operations of `outcome`'s first anomaly
    (each from its invocation to its completion), in time order, one line
    each, then the anomaly's sentence."""
    anomaly = next((a for r in outcome.results for a in r.anomalies), None)
    entries: list[tuple[float, str]] = [(s.at, str(s)) for s in schedule]
    if anomaly is not None:
        wanted = set(anomaly.ops)
        open_: dict[Any, Op] = {}
        pairs: list[tuple[Op, Op | None]] = []
        for op in outcome.history:
            if op.process == "nemesis":
                continue
            if op.type == "invoke":
                open_[op.process] = op
                if op.index in wanted:
                    pairs.append((op, None))
            else:
                invoke = open_.pop(op.process, None)
                if invoke is None:
                    continue
                if op.index in wanted or invoke.index in wanted:
                    pairs = [(i, c) for i, c in pairs if i is not invoke]
                    pairs.append((invoke, op))
        for invoke, done in sorted(pairs, key=lambda p: p[0].index)[:limit]:
            text = f"t={invoke.time / 1e9:.2f} s client {invoke.process} {invoke.f} {invoke.key}"
            if invoke.value is not None and invoke.f != "read":
                text += f" {invoke.value!r}"
            text += f" through {invoke.node}" if invoke.node else ""
            if done is None:
                text += ": no completion"
            else:
                text += f" -> {done.type}" + (f" {done.value!r}" if done.f == "read" and done.type == "ok" else "")
                text += f" ({done.error})" if done.error else ""
                text += f" at t={done.time / 1e9:.2f} s"
            entries.append((invoke.time / 1e9, text))
    lines = [text for _, text in sorted(entries, key=lambda e: e[0])]
    if anomaly is not None:
        lines.append(f"=> {anomaly.type}: {anomaly.explanation}")
    return lines


def _step(fields: dict[str, Any]) -> Step:
    """A Step from its JSON fields (lists back to tuples, numbers to floats);
    ValueError for an unknown action."""
    return Step(at=float(fields["at"]), action=fields["action"], node=str(fields.get("node", "")),
                groups=tuple(tuple(str(n) for n in g) for g in fields.get("groups", ())),
                grudge=tuple((str(n), tuple(str(d) for d in dropped)) for n, dropped in fields.get("grudge", ())),
                shape=str(fields.get("shape", "")),
                nodes=tuple(str(n) for n in fields.get("nodes", ())), offset=float(fields.get("offset", 0.0)),
                delay=float(fields.get("delay", 0.0)), loss=float(fields.get("loss", 0.0)))


def load(path: Path, config: WorldConfig) -> tuple[WorldConfig, tuple[Step, ...]]:
    """A saved shrink's config (`config` with its length, clients and
    callback order) and schedule; ValueError naming the file if it is not one."""
    try:
        doc: Any = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(Step)}
        steps = tuple(_step({k: v for k, v in s.items() if k in known}) for s in doc["schedule"])
        shrunk = dataclasses.replace(config, simulated_seconds=float(doc["simulated_seconds"]),
                                     concurrency=int(doc["concurrency"]), fifo=bool(doc.get("fifo", False)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a saved shrink ({type(e).__name__}: {e})") from None
    return shrunk, steps


def _lengths(config: WorldConfig) -> list[float]:
    """The workload lengths a shrink may try: the original's halvings, shortest first."""
    lengths = [config.simulated_seconds]
    while lengths[-1] / 2 >= 0.25:
        lengths.append(round(lengths[-1] / 2, 3))
    return lengths[::-1]


def shrink(config: WorldConfig, seed: int, original: Outcome | None = None, *, max_tries: int = 80,
           max_seconds: float | None = None, on_try: Callable[[int], None] | None = None) -> Shrunk:
    """Shrink `seed` of `config` (its failing `original` outcome, or run it
    here); ValueError if it is not invalid. At most `max_tries` simulated
    runs (and `max_seconds` of wall time, if given)."""
    from hypothesis import Phase, find, settings
    from hypothesis import strategies as st
    from hypothesis.database import InMemoryExampleDatabase, choices_to_bytes
    from hypothesis.errors import NoSuchExample

    started = time.monotonic()
    original = original or simulate(config, seed)
    if original.valid is not False:
        raise ValueError(f"seed {seed} is {original.valid!r}, not invalid: nothing to shrink")
    target = set(original.anomalies())
    steps = original.schedule
    lengths = _lengths(config)
    margin = config.nemesis_interval / 2
    Candidate = tuple[tuple[bool, ...], bool, int, int]
    strategy = st.tuples(st.tuples(*[st.booleans()] * len(steps)), st.booleans(),
                         st.integers(0, len(lengths) - 1), st.integers(1, config.clients))

    def build(c: Candidate) -> tuple[WorldConfig, tuple[Step, ...]]:
        mask, shuffled, length, clients = c
        kept = tuple(s for s, keep in zip(steps, mask, strict=True) if keep)
        floor = max((s.at for s in kept), default=0.0) + margin
        seconds = min(config.simulated_seconds, max(lengths[length], math.ceil(floor * 4) / 4))
        return dataclasses.replace(config, simulated_seconds=seconds, concurrency=clients,
                                   fifo=config.fifo or not shuffled), kept

    tried: dict[tuple[WorldConfig, tuple[Step, ...]], Outcome | None] = {}
    best: list[tuple[WorldConfig, tuple[Step, ...], Outcome]] = []

    def fails(c: Candidate) -> bool:
        key = build(c)
        if key not in tried:
            out_of_time = max_seconds is not None and time.monotonic() - started > max_seconds
            if len(tried) >= max_tries or out_of_time:
                return False  # no more runs: hypothesis keeps the smallest failure it has
            run = simulate(key[0], seed, key[1])
            tried[key] = run if run.valid is False and target & set(run.anomalies()) else None
            if on_try is not None:
                on_try(len(tried))
        o = tried[key]
        if o is not None:
            best.append((*key, o))
        return o is not None

    # The original, as hypothesis would have stored a failure it saw: every
    # step kept, the seed's order, the full length, every client. Stored as
    # a not-yet-shrunk example (the ".secondary" corpus), which hypothesis
    # replays first and then shrinks.
    database = InMemoryExampleDatabase()
    key = f"harness-sim-shrink-{seed}".encode()
    full = (True,) * len(steps) + (not config.fifo, len(lengths) - 1, config.clients)
    database.save(key + b".secondary", choices_to_bytes(full))
    tried[(config, steps)] = original
    try:
        find(strategy, fails, database_key=key,
             settings=settings(database=database, max_examples=1, phases=[Phase.reuse, Phase.shrink],
                               deadline=None))
    except NoSuchExample as e:  # a hypothesis that could not replay the stored example
        if not best:
            raise RuntimeError(f"hypothesis could not start from seed {seed}'s failing run: {e}") from e
    best_config, best_schedule, best_outcome = best[-1] if best else (config, steps, original)
    return Shrunk(seed=seed, config=best_config, schedule=best_schedule, outcome=best_outcome, original=original,
                  tries=len(tried) - 1, wall=time.monotonic() - started)
