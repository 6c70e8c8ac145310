"""What the benchmarks share: facts about the machine they ran on, and
argument checks."""

from __future__ import annotations

import argparse
import contextlib
import os
from importlib import metadata


def filesystem(path: str) -> str:
    """The type and device of the mount holding `path`, read from /proc/mounts."""
    real = os.path.realpath(path)
    best = ("", "unknown filesystem", "")
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            device, mount, kind = parts[0], parts[1], parts[2]
            inside = real == mount or real.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best[0]):
                best = (mount, kind, device)
    mount, kind, device = best
    return f"{kind} on {device} at {mount}" if mount else kind


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value
