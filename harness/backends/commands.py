"""The command lines that inject real faults on a node, as argument lists:
iptables for partitions, tc netem for packet faults, a faketime control file
for the clock. Shared by the backends that run nodes on real (or virtual)
hosts — `netns`, `docker`, `ssh` — which differ only in *how* they run a
command on a node (`ip netns exec`, `docker exec`, SSH with sudo).

Partitions live in a chain of the harness's own, `HARNESS`, jumped to from
INPUT: healing flushes only that chain (Jepsen once flushed every chain and
broke Kubernetes' rules on the same hosts). A node drops packets *from* the
nodes its grudge names (`-A HARNESS -s <source> -j DROP`), which is what a
one-way cut means at the packet level.

Every function returns a list of argument lists; nothing here runs anything
or builds a shell string. Where a remote shell is unavoidable (SSH), quote
with `shell_line`.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence

from harness.backends.base import PacketShape
from harness.backends.faketime import format_offset

CHAIN = "HARNESS"
Command = list[str]


def partition_setup() -> list[Command]:
    """Create the chain and the jump to it (run once per node, at setup).
    `iptables -N` fails if the chain exists: callers ignore that failure."""
    return [["iptables", "-w", "-N", CHAIN], ["iptables", "-w", "-I", "INPUT", "1", "-j", CHAIN]]


def partition(drop_from: Iterable[str]) -> list[Command]:
    """Replace this node's rules: drop every packet from these addresses."""
    commands = [["iptables", "-w", "-F", CHAIN]]
    for source in sorted(drop_from):
        commands.append(["iptables", "-w", "-A", CHAIN, "-s", source, "-j", "DROP"])
    return commands


def heal() -> list[Command]:
    return [["iptables", "-w", "-F", CHAIN]]


def partition_teardown() -> list[Command]:
    """Remove the jump and the chain (each may fail if already gone)."""
    return [["iptables", "-w", "-D", "INPUT", "-j", CHAIN], ["iptables", "-w", "-F", CHAIN],
            ["iptables", "-w", "-X", CHAIN]]


def netem(device: str, shape: PacketShape) -> list[Command]:
    """Shape the device's outgoing packets (`tc qdisc replace ... netem`); a
    shape of all zeros removes the qdisc instead (see `netem_clear`)."""
    if not any((shape.delay_ms, shape.jitter_ms, shape.loss, shape.duplicate, shape.reorder)):
        return netem_clear(device)
    args = ["tc", "qdisc", "replace", "dev", device, "root", "netem"]
    if shape.delay_ms or shape.jitter_ms:
        args += ["delay", f"{shape.delay_ms:g}ms"]
        if shape.jitter_ms:
            args += [f"{shape.jitter_ms:g}ms", "distribution", "normal"]
    if shape.loss:
        args += ["loss", f"{shape.loss * 100:g}%"]
    if shape.duplicate:
        args += ["duplicate", f"{shape.duplicate * 100:g}%"]
    if shape.reorder:
        if not shape.delay_ms:
            # netem reorders only delayed packets: give the others a delay.
            args[args.index("netem") + 1:args.index("netem") + 1] = ["delay", "10ms"]
        args += ["reorder", f"{shape.reorder * 100:g}%"]
    return [args]


def netem_clear(device: str) -> list[Command]:
    """Remove the netem qdisc (fails harmlessly if there is none)."""
    return [["tc", "qdisc", "del", "dev", device, "root"]]


def clock_file_content(offset_s: float) -> str:
    """What a libfaketime control file holds for this offset ("+12.5s")."""
    return format_offset(offset_s)


def shell_line(argv: Sequence[str]) -> str:
    """One command for a remote shell, every argument quoted."""
    return shlex.join(argv)
