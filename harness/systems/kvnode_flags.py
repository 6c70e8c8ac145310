"""kvnode's settings as flags of `harness run`: `--n --w --r --resolution
--quorum --read-repair`, kept for the command lines people already use.

Each flag is only `--set NAME=VALUE`: kvnode checks it like any of its
options (`kvnode.config.ClusterSettings`, where values and defaults are
written), and another system refuses it by name. This module stays apart
from the adapter (`harness/systems/kvnode.py`) so that the command line can
declare the flags without importing the node.
"""

from __future__ import annotations

# (option name, the type click parses, help)
SHORTHANDS: tuple[tuple[str, type, str], ...] = (
    ("n", int, "kvnode: replicas per key (--set n=...) [default: 3]."),
    ("w", int, "kvnode: write quorum [default: 2]."),
    ("r", int, "kvnode: read quorum [default: 2]."),
    ("resolution", str, "kvnode: dvv or lww [default: dvv]."),
    ("quorum", str, "kvnode: sloppy or strict [default: sloppy]."),
    ("read_repair", str, "kvnode: off, async or sync [default: async]."),
)
NAMES: tuple[str, ...] = tuple(name for name, _, _ in SHORTHANDS)
