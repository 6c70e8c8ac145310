"""Lazy disks: a FUSE file system that keeps what a program has not fsynced
in memory, so that a power failure can be simulated by forgetting it (the
design of Jepsen's LazyFS, in Python).

- `harness.lazyfs.fs`: the file system's process (`python -m harness.lazyfs`);
  what it keeps, what it loses, and its control socket;
- `harness.lazyfs.overlay`: the unsynced writes, and what a loss does to them;
- `harness.lazyfs.disks`: `LazyDisks`, which mounts one per node for the
  local and netns backends, asks them to lose what is unsynced, and unmounts
  them on every exit path.
"""

from .disks import LazyDisks, empty_directory, fuse_missing_reason, mounted, probe_mount

__all__ = ["LazyDisks", "empty_directory", "fuse_missing_reason", "mounted", "probe_mount"]
