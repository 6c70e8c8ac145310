"""The unsynced writes of one lazy file system: what a file's reader sees and
what a power failure loses.

Each file with unsynced changes has a `Pending`: the ordered list of writes
(offset, bytes) and truncations made since its last fsync, and its size as a
reader sees it. A read is the backing file's bytes with those operations
applied in order; `flush` applies them to the backing file and fsyncs it; a
power loss (`Overlay.lose`) forgets them, or, torn, lands a prefix of each
file's last write first (a disk that had written part of its blocks).

No FUSE here: `harness.lazyfs.fs` calls this under its lock, and the tests
drive it directly.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

__all__ = ["Overlay", "Pending"]


@dataclass
class Pending:
    """A file's unsynced operations: ("w", offset, data) or ("t", length, b"")."""

    size: int  # the file's size with the operations applied
    ops: list[tuple[str, int, bytes]] = field(default_factory=list)

    @property
    def unsynced(self) -> int:
        return sum(len(data) for kind, _, data in self.ops if kind == "w")

    def write(self, offset: int, data: bytes) -> None:
        last = self.ops[-1] if self.ops else None
        if last is not None and last[0] == "w" and last[1] + len(last[2]) == offset:
            # An append to the last write (a log's next record): one op.
            self.ops[-1] = ("w", last[1], last[2] + data)
        else:
            self.ops.append(("w", offset, bytes(data)))
        self.size = max(self.size, offset + len(data))

    def truncate(self, length: int) -> None:
        self.ops.append(("t", length, b""))
        self.size = length

    def read(self, backing: bytes, offset: int, size: int) -> bytes:
        """The bytes [offset, offset+size) given `backing`, the backing
        file's bytes from `offset` on (as many as it has of them)."""
        end = min(offset + size, self.size)
        if end <= offset:
            return b""
        buf = bytearray(end - offset)
        buf[: len(backing)] = backing[: end - offset]
        for kind, where, data in self.ops:
            if kind == "t":
                if where < end:
                    start = max(where, offset) - offset
                    buf[start:] = bytes(len(buf) - start)
            else:
                lo, hi = max(where, offset), min(where + len(data), end)
                if lo < hi:
                    buf[lo - offset: hi - offset] = data[lo - where: hi - where]
        return bytes(buf)


def apply(fd: int, ops: list[tuple[str, int, bytes]]) -> None:
    """Apply `ops` to the backing file open on `fd` (no fsync)."""
    for kind, where, data in ops:
        if kind == "t":
            os.ftruncate(fd, where)
        else:
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, where)
                view, where = view[n:], where + n


class Overlay:
    """Every file's `Pending`, by path relative to the mount. Not
    thread-safe: the caller holds a lock."""

    def __init__(self, backing: str) -> None:
        self.backing = backing
        self.files: dict[str, Pending] = {}

    def real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def pending(self, path: str) -> Pending:
        """The file's Pending, made (from the backing file's size) if none."""
        found = self.files.get(path)
        if found is None:
            try:
                size = os.stat(self.real(path)).st_size
            except FileNotFoundError:
                size = 0
            found = self.files[path] = Pending(size=size)
        return found

    def flush(self, path: str) -> int:
        """Make the file's pending operations durable (write them to the
        backing file and fsync it); the bytes made durable."""
        found = self.files.pop(path, None)
        fd = os.open(self.real(path), os.O_WRONLY | os.O_CLOEXEC)
        try:
            if found is not None:
                apply(fd, found.ops)
            os.fsync(fd)
        finally:
            os.close(fd)
        return found.unsynced if found is not None else 0

    def forget(self, path: str) -> None:
        """The file (or directory) is gone: drop what is pending under it."""
        self.files.pop(path, None)
        prefix = path.rstrip("/") + "/"
        for name in [n for n in self.files if n.startswith(prefix)]:
            del self.files[name]

    def rename(self, old: str, new: str) -> None:
        """Pending data follows a renamed file, or the files of a renamed directory."""
        self.forget(new)
        if old in self.files:
            self.files[new] = self.files.pop(old)
        prefix = old.rstrip("/") + "/"
        for name in [n for n in self.files if n.startswith(prefix)]:
            self.files[new.rstrip("/") + "/" + name[len(prefix):]] = self.files.pop(name)

    def stats(self) -> dict[str, int]:
        return {"files": len(self.files), "bytes": sum(p.unsynced for p in self.files.values())}

    def lose(self, torn: bool = False, seed: int = 0) -> dict[str, object]:
        """A power failure: forget every unsynced operation. Torn: first land
        a random prefix (possibly empty, never all) of each file's last
        write, as a disk that had written part of it would. Returns what
        was lost: {"bytes", "files": path -> bytes, "torn": path -> bytes kept}."""
        rng = random.Random(seed)
        lost: dict[str, int] = {}
        kept: dict[str, int] = {}
        for path, found in sorted(self.files.items()):
            lost[path] = found.unsynced
            last = found.ops[-1] if found.ops else None
            if torn and last is not None and last[0] == "w" and len(last[2]) > 1:
                cut = rng.randrange(len(last[2]))
                if cut:
                    try:
                        fd = os.open(self.real(path), os.O_WRONLY | os.O_CLOEXEC)
                    except FileNotFoundError:
                        continue
                    try:
                        apply(fd, [("w", last[1], last[2][:cut])])
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    kept[path] = cut
                    lost[path] -= cut
        self.files.clear()
        return {"bytes": sum(lost.values()), "files": {p: n for p, n in lost.items() if n}, "torn": kept}
