"""Shrinking a failing seed of `harness sim` to a smaller run that still
fails the same way: the first, greedy increment (issue 17 asks, later, for
hypothesis over the schedule and the loop's choice tape).

"The same way": the run is invalid and at least one of the original's
anomalies (`checker: type`) is found again. The seed stays the same, so the
clients' operations and the loop's choices are drawn from it as before;
what shrinks is what the seed does not fix:

1. the fault schedule: each step is dropped in turn (from the last), as long
   as a drop keeps the failure, until no single drop does;
2. the workload's length: halved (never below the last fault) while the
   failure stays;
3. the clients: halved while the failure stays.

Every try is a whole simulated run, so a shrink costs some tens of runs.
`Shrunk.save` writes it as JSON that `harness sim --replay SEED --schedule
FILE` runs again.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.sim.world import Outcome, Step, WorldConfig, simulate

__all__ = ["Shrunk", "load", "shrink"]


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
        ops = sum(op.type == "invoke" and op.process != "nemesis" for op in self.outcome.history)
        head = (f"shrunk seed {self.seed} in {self.tries} runs ({self.wall:.1f} s): {len(self.schedule)} fault "
                f"steps (from {len(o.schedule)}), {c.clients} clients, {c.simulated_seconds:g} simulated s of "
                f"workload, {ops} client ops (from "
                f"{sum(op.type == 'invoke' and op.process != 'nemesis' for op in o.history)}); "
                f"still: {'; '.join(self.outcome.anomalies())}")
        return [head, *(f"  {step}" for step in self.schedule)]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({
            "seed": self.seed, "simulated_seconds": self.config.simulated_seconds,
            "concurrency": self.config.clients, "schedule": [dataclasses.asdict(s) for s in self.schedule],
            "trace_hash": self.outcome.trace_hash, "anomalies": self.outcome.anomalies(),
        }, indent=2) + "\n", encoding="utf-8")


def load(path: Path, config: WorldConfig) -> tuple[WorldConfig, tuple[Step, ...]]:
    """A saved shrink's config (`config` with its length and clients) and
    schedule; ValueError naming the file if it is not one."""
    try:
        doc: Any = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(Step)}
        steps = tuple(_step({k: v for k, v in s.items() if k in known}) for s in doc["schedule"])
        shrunk = dataclasses.replace(config, simulated_seconds=float(doc["simulated_seconds"]),
                                     concurrency=int(doc["concurrency"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a saved shrink ({type(e).__name__}: {e})") from None
    return shrunk, steps


def _step(fields: dict[str, Any]) -> Step:
    """A Step from its JSON fields (lists back to tuples, numbers to floats);
    ValueError for an unknown action."""
    return Step(at=float(fields["at"]), action=fields["action"], node=str(fields.get("node", "")),
                groups=tuple(tuple(str(n) for n in g) for g in fields.get("groups", ())),
                nodes=tuple(str(n) for n in fields.get("nodes", ())), offset=float(fields.get("offset", 0.0)),
                delay=float(fields.get("delay", 0.0)), loss=float(fields.get("loss", 0.0)))


def shrink(config: WorldConfig, seed: int, original: Outcome | None = None, *, max_tries: int = 60,
           on_try: Callable[[int], None] | None = None) -> Shrunk:
    """Shrink `seed` of `config` (its failing `original` outcome, or run it
    here); ValueError if it is not invalid."""
    started = time.monotonic()
    original = original or simulate(config, seed)
    if original.valid is not False:
        raise ValueError(f"seed {seed} is {original.valid!r}, not invalid: nothing to shrink")
    target = set(original.anomalies())
    tries = 0

    def fails(cfg: WorldConfig, schedule: tuple[Step, ...]) -> Outcome | None:
        nonlocal tries
        tries += 1
        if on_try is not None:
            on_try(tries)
        o = simulate(cfg, seed, schedule)
        return o if o.valid is False and target & set(o.anomalies()) else None

    best_config, best_schedule, best = config, original.schedule, original
    dropped = True
    while dropped and tries < max_tries:
        dropped = False
        for i in reversed(range(len(best_schedule))):
            if tries >= max_tries:
                break
            candidate = best_schedule[:i] + best_schedule[i + 1:]
            o = fails(best_config, candidate)
            if o is not None:
                best_schedule, best, dropped = candidate, o, True
    floor = max((s.at for s in best_schedule), default=0.0) + config.nemesis_interval / 2
    while tries < max_tries:
        shorter = round(max(floor, best_config.simulated_seconds / 2), 3)
        if shorter >= best_config.simulated_seconds:
            break
        candidate_config = dataclasses.replace(best_config, simulated_seconds=shorter)
        o = fails(candidate_config, best_schedule)
        if o is None:
            break
        best_config, best = candidate_config, o
    while tries < max_tries and best_config.clients > 1:
        candidate_config = dataclasses.replace(best_config, concurrency=best_config.clients // 2)
        o = fails(candidate_config, best_schedule)
        if o is None:
            break
        best_config, best = candidate_config, o
    return Shrunk(seed=seed, config=best_config, schedule=best_schedule, outcome=best, original=original,
                  tries=tries, wall=time.monotonic() - started)
