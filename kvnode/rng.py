"""The node's one randomness seam: every random choice in kvnode comes from a
`random.Random` made here.

Why: a later deterministic simulation (DESIGN.md) runs a whole cluster in one
process from one seed, so that a failing fault schedule replays exactly and
hypothesis can shrink it. That only works if no part of the node draws from
the global `random` module or from the OS: each node gets generators seeded
from the run's seed and its own id, and passes them down to whatever needs
randomness (gossip peer selection, jitter, ...).

- With a configured `seed`, a node's generator is seeded from (seed, node id,
  stream): nodes of one cluster that share the run's seed still draw
  different, uncorrelated numbers (identical streams would make every node
  gossip to the same peers in lockstep).
- Without one, the seed is derived from the node id alone, so a run is still
  reproducible from its configuration.
- `stream` names an independent sub-generator ("gossip", "handoff", ...):
  adding a random draw in one subsystem then does not shift the numbers
  another subsystem sees, which keeps recorded simulation seeds replayable as
  the code grows.

Security randomness (authentication nonces, `kvnode.auth`) is deliberately not
from here: it must be unpredictable, not reproducible, and comes from
`os.urandom`.
"""

from __future__ import annotations

import hashlib
import random

__all__ = ["Random", "make_rng"]

# The type every consumer annotates with, so that only this module imports `random`.
Random = random.Random


def make_rng(node_id: str, seed: int | None = None, *, stream: str = "") -> Random:
    """A generator for `node_id` (and sub-stream `stream`), seeded from `seed`
    when given, else from the node id alone. Same arguments, same numbers,
    in every process and on every Python version (the seed is a SHA-256 of
    the arguments, not `hash()`, which is salted per process)."""
    material = f"kvnode-rng\x00{'' if seed is None else seed}\x00{node_id}\x00{stream}"
    digest = hashlib.sha256(material.encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))
