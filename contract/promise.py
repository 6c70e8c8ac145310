"""What a system promises, for one workload and its own settings, and what a
user asks to check beyond it.

A system under test declares a `Promise`: the claims it makes (`Claim`),
each with the parameters its checker needs and a sentence saying why the
system makes it. The workload turns each claim it knows into checkers
(`workloads.base.plan`); the results say which claim each checker judged,
which claims were not checked and why. A user may ask for a claim the system
does not make (`harness run --check linearizable`): it is added as `asked`,
and the summary says so.

The claims every built-in workload understands (`CLAIMS`); a plug-in
workload may define claims of its own:

- `linearizable`: each operation takes effect at one instant between its
  invocation and its completion (Knossos and Porcupine's semantics), key by
  key;
- `siblings`: a Dynamo-style multi-value register (DESIGN.md P1-P6): no
  phantom values, siblings form an antichain, no acknowledged write is lost,
  replicas converge; with `params` n, w, r, quorum and read_repair, also
  quorum visibility (P5) and no new-old inversion (P6) where those settings
  promise them;
- `last-write-wins`: one value per key, the latest timestamp wins: as
  `siblings`, except that a write may be lost to a concurrent one (by design)
  but never to one it causally follows;
- `no-lost-adds`: every acknowledged add to a set survives, and nothing
  appears that nobody added.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

CLAIMS: dict[str, str] = {
    "linearizable": "each operation takes effect at one instant between its invocation and its completion",
    "siblings": "a multi-value register: no phantoms, siblings an antichain, no acknowledged write lost, "
                "replicas converge (P1-P4), and P5/P6 where its quorum and read-repair settings promise them",
    "last-write-wins": "one value per key, the latest timestamp wins: no phantoms, replicas converge, no "
                       "acknowledged write lost except to a concurrent one",
    "no-lost-adds": "every acknowledged add survives, and nothing appears that nobody added",
}


@dataclass(frozen=True, kw_only=True)
class Claim:
    name: str  # one of CLAIMS, or a plug-in workload's own
    params: Mapping[str, Any] = field(default_factory=dict)  # what its checker needs (siblings: n, w, r ...)
    why: str = ""  # one sentence: why the system makes this claim
    asked: bool = False  # asked for by the user (--check), not promised by the system

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params), "why": self.why, "asked": self.asked}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Claim:
        return cls(name=str(data["name"]), params=dict(data.get("params") or {}), why=str(data.get("why", "")),
                   asked=bool(data.get("asked", False)))


@dataclass(frozen=True, kw_only=True)
class Promise:
    claims: tuple[Claim, ...] = ()

    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.claims)

    def get(self, name: str) -> Claim | None:
        return next((c for c in self.claims if c.name == name), None)

    def asking(self, names: Iterable[str]) -> Promise:
        """This promise, plus each claim in `names` that it does not make,
        marked as asked for by the user."""
        claims = list(self.claims)
        for name in names:
            if self.get(name) is None and all(c.name != name for c in claims):
                claims.append(Claim(name=name, why="asked for with --check", asked=True))
        return replace(self, claims=tuple(claims))

    def describe(self) -> str:
        """'linearizable; no-lost-adds (asked for)'."""
        parts = [c.name + (" (asked for)" if c.asked else "") for c in self.claims]
        return "; ".join(parts) or "nothing"

    def to_json(self) -> dict[str, Any]:
        return {"claims": [c.to_json() for c in self.claims]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Promise:
        return cls(claims=tuple(Claim.from_json(c) for c in data.get("claims", ())))


def promise(*claims: Claim) -> Promise:
    """`promise(Claim(name="linearizable", why="..."))`."""
    return Promise(claims=tuple(claims))
