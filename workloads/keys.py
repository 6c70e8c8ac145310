"""Key cycling: which key a worker's next operation targets.

Checking cost grows fast with the number of operations on one key (the
linearizability search is per key), so keys retire: operations move through
*generations* of `active` keys each, and a worker's i-th operation belongs to
generation `i // ops_per_generation`. Every worker moves through the same
generations at its own pace, so workers at similar rates meet on the same keys
(contention is what finds bugs), and a key receives at most
`concurrency * ops_per_generation` operations, from the workers that passed
through its generation, and then is never written again.

The choice depends only on the worker's own operation count and its own
random stream, never on timing: the same seed gives every worker the same
sequence of keys.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class KeySchedule:
    active: int = 4  # keys in use at once
    ops_per_generation: int = 40  # per worker, before its keys retire
    prefix: str = "k"
    used: dict[str, None] = field(default_factory=dict)  # every key handed out, in order

    def __post_init__(self) -> None:
        if self.active < 1 or self.ops_per_generation < 1:
            raise ValueError("active and ops_per_generation must be at least 1")

    @classmethod
    def for_writes(cls, *, concurrency: int, max_ops_per_key: int, active: int) -> KeySchedule:
        """A schedule in which no key takes more than about `max_ops_per_key`
        operations: each of the `concurrency` workers gives a generation
        `ops_per_generation` operations spread over `active` keys."""
        per_gen = max(1, (max_ops_per_key * active) // max(1, concurrency))
        return cls(active=active, ops_per_generation=per_gen)

    def key(self, i: int, rng: random.Random) -> str:
        """The key of a worker's i-th operation (0-based)."""
        generation = i // self.ops_per_generation
        k = f"{self.prefix}{generation * self.active + rng.randrange(self.active)}"
        self.used.setdefault(k, None)
        return k

    def used_keys(self) -> list[str]:
        return list(self.used)
